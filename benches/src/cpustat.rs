//! How busy each CPU was over a timed run, from /proc/stat.
//!
//! In two-node mode each side has one CPU, but the machine is shared: a
//! side whose own processes used half of its CPU may still have been
//! starved if other work took the rest. Comparing the CPU's total busy
//! time with the side's own CPU seconds tells the two apart.

use std::fs;

/// Per-CPU (busy, total) clock ticks since boot.
pub struct Snapshot(Vec<(u64, u64)>);

impl Snapshot {
    /// Read /proc/stat now (empty if unreadable: the report then shows no
    /// CPU load rather than failing a run).
    pub fn take() -> Snapshot {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        Snapshot(
            stat.lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .map(|l| {
                    // user nice system idle iowait irq softirq steal; guest
                    // time is already counted in user.
                    let v: Vec<u64> = l
                        .split_whitespace()
                        .skip(1)
                        .take(8)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    let total: u64 = v.iter().sum();
                    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                    (total - idle.min(total), total)
                })
                .collect(),
        )
    }

    /// Share of CPU `cpu`'s time that was busy (with anything, steal by
    /// the hypervisor included) between `earlier` and this snapshot.
    pub fn busy_since(&self, earlier: &Snapshot, cpu: usize) -> Option<f64> {
        let (b1, t1) = *self.0.get(cpu)?;
        let (b0, t0) = *earlier.0.get(cpu)?;
        let total = t1.checked_sub(t0)?;
        (total > 0).then(|| b1.saturating_sub(b0) as f64 / total as f64)
    }
}

/// CPU seconds (user + system, all threads) process `pid` has used so
/// far, from /proc/PID/stat: for a daemon that outlives the runs it
/// serves, so wait4 cannot count them.
pub fn process_cpu(pid: libc::pid_t) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may hold spaces and parens, and
    // utime and stime are the 14th and 15th fields.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}
