//! The receiver's segment-hash cache (`--keep-hash-cache`): a resync
//! announces the hashes of an unchanged copy without reading it, yet a copy
//! changed behind the mover's back, a damaged entry or a user file named
//! like one never makes the destination differ from the source.
//!
//! What the receiver reads is measured from outside: the `rchar` of the
//! `mover receive` process (`/proc/<pid>/io`), which counts every byte its
//! threads read from files and sockets, so a bypassed cache shows as a read
//! of the whole copy.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const CACHED: &[&str] = &["--inplace", "--keep-hash-cache"];

/// Bytes the process `pid` has read so far.
fn rchar(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.parse().ok())
        .expect("rchar in /proc/<pid>/io")
}

/// Overwrites `len` bytes at `at` with bytes of `seed` and gives the file
/// the mtime `mtime`.
fn scribble(path: &Path, at: u64, len: usize, seed: u64, mtime: i64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&random_bytes(len, seed), at).unwrap();
    set_mtime(path, mtime, 123);
}

/// The differences between the trees, the receiver's work area aside (the
/// cache kept in it is the mover's, under a name the source lacks).
fn differences_but_work_area(src: &Path, dst: &Path, work: &str) -> Vec<String> {
    differences(src, dst)
        .into_iter()
        .filter(|d| !d.starts_with(&format!("{work}: ")) && !d.starts_with(&format!("{work}/")))
        .collect()
}

fn cache_entries(dst: &Path, work: &str) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dst.join(work))
        .map(|dir| {
            dir.map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("h."))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// A source and destination, certificates, and a `mover receive` serving
/// the destination as volume `data` with `flags`.
struct Setup {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    pki: PathBuf,
    port: u16,
    receiver: Receiver,
}

impl Setup {
    fn new(flags: &[&str]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, pki) = (
            tmp.path().join("src"),
            tmp.path().join("dst"),
            tmp.path().join("pki"),
        );
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        certs(&pki, &["app=data"]);
        let port = free_port();
        let receiver = receive(&pki, port, &[("data", &dst)], flags);
        Setup {
            _tmp: tmp,
            src,
            dst,
            pki,
            port,
            receiver,
        }
    }

    /// Syncs with `extra` sender flags; returns what the receiver read.
    fn sync(&self, extra: &[&str]) -> u64 {
        let pid = self.receiver.0.id();
        let before = rchar(pid);
        let out = send(&self.pki, "app", &self.src, self.port, "data", extra)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "mover send: {}", stderr(&out));
        rchar(pid) - before
    }

    fn assert_synced(&self) {
        let diffs = differences_but_work_area(&self.src, &self.dst, ".mover-work");
        assert!(
            diffs.is_empty(),
            "destination differs:\n{}",
            diffs.join("\n")
        );
    }
}

const LEN: u64 = 32 << 20;

#[test]
fn a_resync_reads_only_what_changed_of_the_receivers_copy() {
    let mut reads = Vec::new();
    for flags in [CACHED, &["--inplace"][..]] {
        let setup = Setup::new(flags);
        fs::write(setup.src.join("db"), random_bytes(LEN as usize, 1)).unwrap();
        fs::write(setup.src.join("small"), random_bytes(10_000, 2)).unwrap();
        setup.sync(&[]);
        let mut read = Vec::new();
        for round in 0..3u64 {
            let at = (round * 7 + 3) << 20;
            scribble(
                &setup.src.join("db"),
                at,
                4096,
                10 + round,
                1_700_000_000 + round as i64,
            );
            read.push(setup.sync(&[]));
            setup.assert_synced();
        }
        reads.push(read);
    }
    println!(
        "receiver bytes read per resync, cached {:?}, not {:?}",
        reads[0], reads[1]
    );
    for (cached, uncached) in reads[0].iter().zip(&reads[1]) {
        assert!(
            *cached < LEN / 16,
            "with the cache a resync reads {cached} bytes of a {LEN}-byte copy"
        );
        assert!(
            *uncached > LEN,
            "without it, {uncached}: the measure would catch a bypassed cache"
        );
    }
}

/// The adversarial case: the destination copy changes behind the mover's
/// back, same size, its mtime put back (only the ctime tells). The cache
/// must not vouch for the old content, whether the source changed too or
/// `--checksum` asks for a comparison.
#[test]
fn a_copy_changed_behind_the_movers_back_is_repaired() {
    let setup = Setup::new(CACHED);
    let db = setup.src.join("db");
    fs::write(&db, random_bytes(LEN as usize, 3)).unwrap();
    set_mtime(&db, 1_600_000_000, 5);
    setup.sync(&[]);
    assert_eq!(cache_entries(&setup.dst, ".mover-work").len(), 1);

    for (round, extra) in [(0u64, &[][..]), (1, &["--checksum"][..])] {
        let copy = setup.dst.join("db");
        let mtime = fs::metadata(&copy).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = fs::OpenOptions::new().write(true).open(&copy).unwrap();
        file.write_all_at(b"not the source's bytes", (5 << 20) + round)
            .unwrap();
        drop(file);
        let stamp = humantime(mtime);
        let touched = std::process::Command::new("touch")
            .args(["-m", "-d", &stamp])
            .arg(&copy)
            .status()
            .unwrap();
        assert!(touched.success());
        assert_eq!(fs::metadata(&copy).unwrap().modified().unwrap(), mtime);
        if extra.is_empty() {
            // The source changes elsewhere, so the file is compared.
            scribble(&db, 20 << 20, 100, 4, 1_600_000_100);
        }
        setup.sync(extra);
        setup.assert_synced();
    }
}

/// `touch -d` wants a date it can parse: `@seconds.nanoseconds`.
fn humantime(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("@{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// What is done to an entry, and how.
type Damage<'a> = (&'a str, &'a dyn Fn(&Path));

/// A damaged entry (random bytes, truncated, another segment size, bytes
/// flipped) is ignored: the copy is read and hashed as without a cache,
/// and the resync is exact.
#[test]
fn damaged_cache_entries_are_ignored() {
    let setup = Setup::new(CACHED);
    let db = setup.src.join("db");
    fs::write(&db, random_bytes(LEN as usize, 5)).unwrap();
    setup.sync(&[]);
    let damage: [Damage; 4] = [
        ("random bytes", &|p| {
            let len = fs::metadata(p).unwrap().len() as usize;
            fs::write(p, random_bytes(len, 99)).unwrap()
        }),
        ("truncated", &|p| {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(f.metadata().unwrap().len() / 2).unwrap();
        }),
        ("another segment size", &|p| {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&(64u32 << 10).to_le_bytes(), 64).unwrap();
        }),
        ("one hash flipped", &|p| {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, 100).unwrap();
            f.write_all_at(&[b[0] ^ 1], 100).unwrap();
        }),
    ];
    for (round, (what, damage)) in damage.into_iter().enumerate() {
        let entries = cache_entries(&setup.dst, ".mover-work");
        assert_eq!(entries.len(), 1, "{what}: one entry before");
        damage(&entries[0]);
        scribble(
            &db,
            (round as u64 + 1) << 20,
            4096,
            6 + round as u64,
            1_700_000_000 + round as i64,
        );
        let read = setup.sync(&[]);
        setup.assert_synced();
        assert!(
            read > LEN,
            "{what}: the copy was read and hashed ({read} bytes read)"
        );
    }
}

/// Names like the cache's, in the source root and in a source directory
/// named like the work area, are the user's: they round-trip, the cache
/// goes to another name, and a final sync without `--keep-hash-cache`
/// leaves exactly the source's names.
#[test]
fn source_names_like_cache_entries_round_trip() {
    let setup = Setup::new(CACHED);
    let src = &setup.src;
    fs::write(src.join("db"), random_bytes(4 << 20, 7)).unwrap();
    fs::create_dir(src.join(".mover-work")).unwrap();
    fs::write(src.join(".mover-work/h.1.2"), b"the user's").unwrap();
    fs::write(src.join(".mover-work/id"), b"also the user's").unwrap();
    fs::write(src.join("h.803.2a"), random_bytes(2 << 20, 8)).unwrap();
    setup.sync(&[]);
    let diffs = differences_but_work_area(src, &setup.dst, ".mover-work.1");
    assert!(diffs.is_empty(), "{diffs:?}");
    assert_eq!(cache_entries(&setup.dst, ".mover-work.1").len(), 2);
    scribble(&src.join("h.803.2a"), 4096, 10, 9, 1_700_000_000);
    let read = setup.sync(&[]);
    assert!(read < 1 << 20, "the cache answered ({read} bytes read)");
    let diffs = differences_but_work_area(src, &setup.dst, ".mover-work.1");
    assert!(diffs.is_empty(), "{diffs:?}");
    drop(setup.receiver);

    // The final run's receiver keeps no cache.
    let port = free_port();
    let _final = receive(&setup.pki, port, &[("data", &setup.dst)], &["--inplace"]);
    let out = send(&setup.pki, "app", src, port, "data", &[])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(src, &setup.dst);
}

/// A tiny xorshift generator: each case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random sequences of changes and resyncs through `mover sync --inplace
/// --keep-hash-cache`: the source changes (writes in one place or scattered
/// all over, growth, truncation, replacement on a new inode, chmod, touch),
/// the copy changes behind the mover's back, cache entries are damaged, and
/// after every sync the copy equals the source. `MOVER_CACHE_SEED` replays one case,
/// `MOVER_CACHE_CASES` sets how many run.
#[test]
fn random_change_and_resync_sequences() {
    let cases: u64 = std::env::var("MOVER_CACHE_CASES").map_or(4, |v| v.parse().unwrap());
    let first: u64 = std::env::var("MOVER_CACHE_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |v| v.parse().unwrap(),
    );
    for seed in first..first + cases {
        if let Err(e) = std::panic::catch_unwind(|| random_case(seed)) {
            panic!(
                "case failed; replay: MOVER_CACHE_SEED={seed} MOVER_CACHE_CASES=1 \
                 cargo test -p mover --test hash_cache -- random_change: {e:?}"
            );
        }
    }
}

fn random_case(seed: u64) {
    let mut rng = Rng(seed | 1);
    let tmp = memory_tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    let names = ["a", "b", "c", "d"];
    for (i, name) in names.iter().enumerate() {
        let len = (1 << 20) + rng.below(3 << 20);
        fs::write(src.join(name), random_bytes(len as usize, seed + i as u64)).unwrap();
    }
    let mut mtime = 1_600_000_000;
    for round in 0..6 {
        let out = sync_json(&src, &dst, CACHED);
        assert_eq!(code(&out), 0, "seed {seed} round {round}: {}", stderr(&out));
        let diffs = differences_but_work_area(&src, &dst, ".mover-work");
        assert!(diffs.is_empty(), "seed {seed} round {round}: {diffs:?}");
        for _ in 0..1 + rng.below(4) {
            let name = names[rng.below(names.len() as u64) as usize];
            let (s, d) = (src.join(name), dst.join(name));
            let len = fs::metadata(&s).unwrap().len();
            mtime += 10;
            match rng.below(8) {
                0 | 1 => scribble(&s, rng.below(len - 4096), 4096, rng.next(), mtime),
                7 => {
                    // Scattered all over: enough differing segments that
                    // the sender asks for signatures while it still scans.
                    for _ in 0..64 + rng.below(64) {
                        scribble(&s, rng.below(len - 4096), 4096, rng.next(), mtime);
                    }
                }
                2 => {
                    let f = fs::OpenOptions::new().write(true).open(&s).unwrap();
                    f.set_len((1 << 19) + rng.below(4 << 20)).unwrap();
                    set_mtime(&s, mtime, 0);
                }
                3 => {
                    // A new inode, maybe with the same size and mtime.
                    let mut data = fs::read(&s).unwrap();
                    data[rng.below(len) as usize] ^= 0x55;
                    fs::remove_file(&s).unwrap();
                    fs::write(&s, &data).unwrap();
                    set_mtime(&s, mtime, 0);
                }
                4 => {
                    // Behind the mover's back: same size and mtime; the
                    // source changes too, so the file is compared.
                    let old = fs::metadata(&d).unwrap().modified().unwrap();
                    let at = rng.below(len.min(fs::metadata(&d).unwrap().len()) - 8);
                    let f = fs::OpenOptions::new().write(true).open(&d).unwrap();
                    f.write_all_at(&rng.next().to_le_bytes(), at).unwrap();
                    f.set_modified(old).unwrap();
                    scribble(&s, rng.below(len - 16), 16, rng.next(), mtime);
                }
                5 => {
                    if let Some(entry) = cache_entries(&dst, ".mover-work").first() {
                        let f = fs::OpenOptions::new().write(true).open(entry).unwrap();
                        let elen = f.metadata().unwrap().len();
                        f.write_all_at(&[0xAA; 4], rng.below(elen.max(4) - 3))
                            .unwrap();
                    }
                    scribble(&s, rng.below(len - 4096), 4096, rng.next(), mtime);
                }
                _ => {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = [0o600, 0o640, 0o644][rng.below(3) as usize];
                    fs::set_permissions(&s, fs::Permissions::from_mode(mode)).unwrap();
                }
            }
        }
    }
    // The last run keeps no cache: exactly the source's names remain.
    let out = sync_json(&src, &dst, &["--inplace"]);
    assert_eq!(code(&out), 0, "seed {seed}: {}", stderr(&out));
    assert_same_tree(&src, &dst);
}

/// A dry run only reads: the kept work area is neither listed as a
/// deletion nor touched.
#[test]
fn a_dry_run_passes_over_the_kept_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("db"), random_bytes(2 << 20, 11)).unwrap();
    sync_ok(&src, &dst, CACHED);
    assert_eq!(cache_entries(&dst, ".mover-work").len(), 1);
    fs::write(src.join("new"), b"new").unwrap();
    // The paths of the changes a dry run lists.
    let dry = |extra: &str| {
        let out = sync_json(&src, &dst, &["--dry-run", extra]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "change")
            .map(|e| e["path"].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for extra in ["--keep-hash-cache", "--inplace"] {
        let listed = dry(extra);
        assert!(!listed.contains(".mover-work"), "{extra}: {listed}");
        assert!(listed.contains("new"), "{extra}: {listed}");
    }
    assert_eq!(cache_entries(&dst, ".mover-work").len(), 1);
}
