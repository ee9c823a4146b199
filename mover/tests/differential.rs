//! Randomized differential testing of the real `mover` binary: proptest
//! builds a random source tree, `mover sync` copies it, the tree mutates,
//! a second sync (sometimes through a connection cut at a random point, then
//! retried) brings the copy up to date, and after every sync the copy must
//! equal the source entry by entry (type, bytes, mode, owner, ns mtime,
//! link target, link groups, xattrs and ACLs, holes), with no name the
//! source lacks.
//!
//! `MOVER_DIFF_CASES=N` runs N random cases (a soak); `MOVER_DIFF_SEED=S`
//! starts from case seed S, so a failure's printed seed replays it alone.
//! Seeds that failed are appended to `differential/regressions.txt` and
//! replayed by `regression_seeds`; each distinct bug also has a small
//! named example below (`r_*`).

#[path = "differential/apply.rs"]
mod apply;
#[path = "differential/check.rs"]
mod check;
mod common;
#[path = "differential/plan.rs"]
mod plan;

use apply::{Phase, Tree};
use check::{differences, Snapshot};
use common::*;
use plan::{Cut, Plan};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Random cases in a plain `cargo test`; `MOVER_DIFF_CASES` overrides.
const DEFAULT_CASES: u64 = 300;

/// Shrinking steps for a failing case before it is reported as it is then;
/// `MOVER_DIFF_SHRINK` overrides.
const MAX_SHRINK_ITERS: u64 = 300;

const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/differential/regressions.txt"
);

/// The receiver's `--appliers` for a random case, by its seed: the
/// applier alone, one writer thread beside it, and many.
const APPLIERS: [&str; 3] = ["1", "2", "8"];

/// A source, its copy and a scratch directory, on tmpfs where there is one.
struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    scratch: PathBuf,
    /// The receiver's `--appliers`, when not its default.
    appliers: Option<&'static str>,
}

impl Case {
    fn new() -> Case {
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let [src, dst, scratch] = ["src", "dst", "scratch"].map(|d| tmp.path().join(d));
        for dir in [&src, &dst, &scratch] {
            fs::create_dir(dir).expect("mkdir");
        }
        Case {
            _tmp: tmp,
            src,
            dst,
            scratch,
            appliers: None,
        }
    }

    /// `--appliers` for the receiver, if the case sets it.
    fn appliers_args(&self) -> Vec<&'static str> {
        self.appliers
            .map_or_else(Vec::new, |n| vec!["--appliers", n])
    }

    fn tree(&self) -> Tree<'_> {
        Tree {
            root: &self.src,
            scratch: &self.scratch,
        }
    }

    /// Syncs (through a connection cut after `cut_after` bytes, then
    /// retried, when given) and checks the copy.
    fn sync(&self, cut_after: Option<u64>) -> Result<(), String> {
        let synced = match cut_after {
            None => {
                let out = sync_json(&self.src, &self.dst, &self.appliers_args());
                match code(&out) {
                    0 => Ok(()),
                    c => Err(format!("mover sync exited {c}: {}", stderr(&out))),
                }
            }
            Some(cut_after) => self.send_through_cut(cut_after).map(drop),
        };
        let source = Snapshot::of(&self.src);
        synced
            .and_then(|()| {
                let diffs = differences(&source, &Snapshot::of(&self.dst));
                match diffs.is_empty() {
                    true => Ok(()),
                    false => Err(format!("destination differs:\n  {}", diffs.join("\n  "))),
                }
            })
            .map_err(|e| format!("{e}\nsource tree:\n{source:?}"))
    }

    /// `mover receive` and `mover send --retries`, the first connection cut
    /// after `cut_after` bytes from the sender; returns the connections the
    /// sender made.
    fn send_through_cut(&self, cut_after: u64) -> Result<usize, String> {
        let pki = self.scratch.with_file_name("pki");
        if !pki.exists() {
            certs(&pki, &["app=data"]);
        }
        let port = free_port();
        // As the orchestrator runs its receivers: large changed files are
        // updated in place, so a cut can land in the middle of one.
        let args = [vec!["--inplace"], self.appliers_args()].concat();
        let receiver = receive(&pki, port, &[("data", &self.dst)], &args);
        let (proxy, accepted) = cutting_proxy(port, cut_after);
        let retries = ["--retries", "5", "--retry-delay", "0.05"];
        let out = send(&pki, "app", &self.src, proxy, "data", &retries)
            .output()
            .expect("spawn mover send");
        drop(receiver);
        if code(&out) != 0 {
            let log = fs::read_to_string(pki.with_file_name(format!("receiver-{port}.log")));
            return Err(format!(
                "mover send (cut after {cut_after} bytes) exited {}: {}\nreceiver log: {}",
                code(&out),
                stderr(&out),
                log.unwrap_or_default()
            ));
        }
        Ok(accepted.load(Ordering::SeqCst))
    }

    /// Roughly what a sync of the source sends: file bytes and some per
    /// entry, so that a cut point in per mille of it lands anywhere.
    fn estimated_bytes(&self) -> u64 {
        walkdir::WalkDir::new(&self.src)
            .into_iter()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| 300 + if m.is_file() { m.len() } else { 0 })
            .sum::<u64>()
            + 4096
    }

    fn cut_point(&self, cut: Option<Cut>, first_sync: bool) -> Option<u64> {
        let cut = cut.filter(|c| c.on_first_sync == first_sync)?;
        Some(self.estimated_bytes() * u64::from(cut.permille) / 1000)
    }
}

/// One whole case: build, sync, check, mutate, sync, check.
fn run_plan(plan: &Plan, appliers: &'static str) -> Result<(), String> {
    let case = Case {
        appliers: Some(appliers),
        ..Case::new()
    };
    case.tree().apply(&plan.build, Phase::Build);
    case.sync(case.cut_point(plan.cut, true))
        .map_err(|e| format!("first sync: {e}"))?;
    case.tree().apply(&plan.mutate, Phase::Mutate);
    case.sync(case.cut_point(plan.cut, false))
        .map_err(|e| format!("second sync, after the mutations: {e}"))
}

/// Generates the case of `seed` and runs it; a failure is shrunk (up to
/// `shrink_iters` steps) and reported with the smallest failing plan.
fn run_seed(seed: u64, shrink_iters: u32) -> Result<(), String> {
    let config = Config {
        cases: 1,
        failure_persistence: None,
        max_shrink_iters: shrink_iters,
        ..Config::default()
    };
    let key: Vec<u8> = (0..4u64)
        .flat_map(|i| (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes())
        .collect();
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let appliers = APPLIERS[(seed % APPLIERS.len() as u64) as usize];
    let run = |p: Plan| run_plan(&p, appliers).map_err(TestCaseError::fail);
    match runner.run(&plan::plan(), run) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, minimal)) => Err(format!(
            "case seed {seed:#018x} (--appliers {appliers}) failed: {reason}\n\
             smallest failing plan: {minimal:#?}\n\
             replay: MOVER_DIFF_SEED={seed:#018x} MOVER_DIFF_CASES=1 cargo test -p mover --test differential -- random_cases"
        )),
        Err(TestError::Abort(reason)) => Err(format!("case seed {seed:#018x} aborted: {reason}")),
    }
}

/// A number in decimal or, after `0x`, in hex (as seeds are printed).
fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(parse_u64(&value).unwrap_or_else(|| panic!("{name}={value} is not a number")))
}

/// Remembers a failing seed in the regressions file (once).
fn remember(seed: u64, failure: &str) {
    let line = format!("{seed:#018x}");
    let known = fs::read_to_string(REGRESSIONS).unwrap_or_default();
    if known.lines().any(|l| l.starts_with(&line)) {
        return;
    }
    let what = failure
        .split_once(" failed: ")
        .map_or(failure, |(_, what)| what);
    let what: String = what.split_whitespace().collect::<Vec<_>>().join(" ");
    let note = format!("{line} # {}\n", what.chars().take(160).collect::<String>());
    let _ = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(REGRESSIONS)
        .and_then(|mut f| std::io::Write::write_all(&mut f, note.as_bytes()));
}

/// Random cases on every core; the first failures stop the run, are shrunk
/// and reported with their seeds.
#[test]
fn random_cases() {
    let cases = env_u64("MOVER_DIFF_CASES").unwrap_or(DEFAULT_CASES);
    let first = env_u64("MOVER_DIFF_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
    });
    let shrink = env_u64("MOVER_DIFF_SHRINK").unwrap_or(MAX_SHRINK_ITERS) as u32;
    println!("differential: {cases} cases from seed {first:#018x}");
    let started = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut failures = Vec::new();
                    while !failed.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= cases {
                            break;
                        }
                        let seed = first.wrapping_add(i);
                        if let Err(failure) = run_seed(seed, shrink) {
                            failed.store(true, Ordering::SeqCst);
                            remember(seed, &failure);
                            failures.push(failure);
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let ran = next.load(Ordering::SeqCst).min(cases);
    println!("differential: {ran} cases in {:.1?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every seed that once failed, replayed without shrinking.
#[test]
fn regression_seeds() {
    let known = fs::read_to_string(REGRESSIONS).expect("regressions file");
    let failures: Vec<String> = known
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let seed = l
                .split_whitespace()
                .next()
                .and_then(parse_u64)
                .unwrap_or_else(|| panic!("{REGRESSIONS}: no seed at the start of {l:?}"));
            run_seed(seed, 0).map_err(|e| format!("{l}\n{e}"))
        })
        .filter_map(Result::err)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---- the bugs random cases found, as small named examples ----

fn check(case: &Case) {
    if let Err(e) = case.sync(None).and_then(|()| case.sync(None)) {
        panic!("{e}");
    }
}

/// `data-old` (sorting before `data/f` bytewise, after it in the walk) is a
/// hard link to `data/f`.
#[test]
fn r_hard_link_sorting_before_target() {
    let case = Case::new();
    fs::create_dir(case.src.join("data")).unwrap();
    fs::write(case.src.join("data/f"), b"linked").unwrap();
    fs::hard_link(case.src.join("data/f"), case.src.join("data-old")).unwrap();
    check(&case);
}

/// A user file named like the mover's partial file of its sibling.
#[test]
fn r_user_file_named_like_a_partial_file() {
    let case = Case::new();
    fs::write(case.src.join("data"), random_bytes(300_000, 1)).unwrap();
    fs::write(case.src.join(".mover-partial.data"), b"the user's own file").unwrap();
    check(&case);
}

/// A user file named like one of the mover's temporaries.
#[test]
fn r_user_file_named_like_a_temporary() {
    let case = Case::new();
    fs::write(case.src.join(".mover-tmp.x"), b"the user's own file").unwrap();
    fs::write(case.src.join("x"), b"x").unwrap();
    check(&case);
}

/// A symlink replaced by a directory between syncs, and back.
#[test]
fn r_type_changes_between_syncs() {
    let case = Case::new();
    symlink("target", case.src.join("a")).unwrap();
    fs::create_dir(case.src.join("b")).unwrap();
    case.sync(None).unwrap();
    fs::remove_file(case.src.join("a")).unwrap();
    fs::create_dir(case.src.join("a")).unwrap();
    fs::remove_dir(case.src.join("b")).unwrap();
    symlink("a", case.src.join("b")).unwrap();
    check(&case);
}

/// A FIFO with an access ACL (here inherited from its directory's default
/// ACL, as `setfacl -d` makes it).
#[test]
fn r_acl_of_a_fifo() {
    let case = Case::new();
    let group_may_read = plan::Acl {
        users: vec![],
        groups: vec![(1234, 4)],
        mask: 4,
    };
    let acl = apply::encode_acl(&group_may_read, 0o644);
    assert!(set_xattr(&case.src, "system.posix_acl_default", &acl));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        case.src.join("data"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    check(&case);
}

/// A hole punched into the middle of a file that was synced dense: the
/// delta keeps the hole.
#[test]
fn r_hole_punched_into_a_synced_file() {
    let case = Case::new();
    let path = case.src.join("data");
    fs::write(&path, random_bytes(2 * 1024 * 1024, 7)).unwrap();
    case.sync(None).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    use rustix::fs::FallocateFlags as F;
    rustix::fs::fallocate(&f, F::PUNCH_HOLE | F::KEEP_SIZE, 1_000 * 4096, 40 * 4096).unwrap();
    set_mtime(&path, 1_700_000_000, 1);
    check(&case);
}

/// A sparse file whose holes the second sync finds in the old copy too
/// (here: truncated, so the delta copies the old copy's segments).
#[test]
fn r_holes_of_a_sparse_file_that_shrank() {
    let case = Case::new();
    let path = case.src.join("data");
    let f = fs::File::create(&path).unwrap();
    f.set_len(400_000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(4096, 3), 300_000).unwrap();
    case.sync(None).unwrap();
    f.set_len(72_969).unwrap();
    set_mtime(&path, 1_700_000_000, 1);
    check(&case);
}

/// A user directory named like the mover's partial file of its sibling.
#[test]
fn r_directory_named_like_a_partial_file() {
    let case = Case::new();
    fs::create_dir(case.src.join(".mover-partial.data")).unwrap();
    fs::write(case.src.join(".mover-partial.data/f"), b"inside").unwrap();
    fs::write(case.src.join("data"), random_bytes(300_000, 2)).unwrap();
    check(&case);
}

/// `--no-delete` keeps what only the destination has, whatever its name:
/// a user file named like a temporary of the mover's included.
#[test]
fn r_no_delete_keeps_user_files_named_like_temporaries() {
    let case = Case::new();
    fs::write(case.src.join("data"), b"data").unwrap();
    let kept = [".mover-tmp.notes", ".mover-partial.data", ".mover-work"];
    for name in kept {
        fs::write(case.dst.join(name), b"the user's own file").unwrap();
    }
    sync_ok(&case.src, &case.dst, &["--no-delete"]);
    let gone: Vec<_> = kept.iter().filter(|n| !case.dst.join(n).exists()).collect();
    assert!(gone.is_empty(), "--no-delete removed {gone:?}");
}

/// The last xattrs of a file (an ACL and a `user.*` one) removed after it
/// was synced, its content unchanged. (Removing some while others stay
/// works.)
#[test]
fn r_acl_and_xattr_removed_after_a_sync() {
    let case = Case::new();
    let path = case.src.join("data");
    fs::write(&path, b"data").unwrap();
    let group_may_read = plan::Acl {
        users: vec![],
        groups: vec![(1234, 4)],
        mask: 4,
    };
    let acl = apply::encode_acl(&group_may_read, 0o644);
    assert!(set_xattr(&path, "system.posix_acl_access", &acl));
    assert!(set_xattr(&path, "user.a", b"1"));
    case.sync(None).unwrap();
    rustix::fs::removexattr(&path, "system.posix_acl_access").unwrap();
    rustix::fs::removexattr(&path, "user.a").unwrap();
    check(&case);
}

/// The checker itself: a copy tampered with in every compared field is
/// reported field by field, path by path.
#[test]
fn checker_reports_every_kind_of_difference() {
    let case = Case::new();
    let (src, dst) = (&case.src, &case.dst);
    for name in ["content", "mode", "mtime", "owner", "xattr", "link", "gone"] {
        fs::write(src.join(name), b"same").unwrap();
    }
    fs::hard_link(src.join("link"), src.join("link2")).unwrap();
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(1024 * 1024).unwrap();
    case.sync(None).unwrap();

    fs::write(dst.join("content"), b"diff").unwrap();
    set_mtime(&dst.join("content"), 0, 0);
    set_mtime(&src.join("content"), 0, 0);
    fs::set_permissions(
        dst.join("mode"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    set_mtime(&dst.join("mtime"), 1, 2);
    if is_root() {
        std::os::unix::fs::lchown(dst.join("owner"), Some(1), Some(1)).unwrap();
    }
    assert!(set_xattr(&dst.join("xattr"), "user.extra", b"1"));
    fs::remove_file(dst.join("link2")).unwrap();
    fs::write(dst.join("link2"), b"same").unwrap();
    apply::densify(&dst.join("sparse")).unwrap();
    fs::remove_file(dst.join("gone")).unwrap();
    fs::write(dst.join("extra"), b"").unwrap();

    let diffs = differences(&Snapshot::of(src), &Snapshot::of(dst)).join("\n");
    let mut expected = vec![
        ("\"content\": content", true),
        ("\"mode\": mode", true),
        ("\"mtime\": mtime", true),
        ("\"owner\": owner", is_root()),
        ("\"xattr\": xattrs", true),
        ("\"link\": link group", true),
        ("\"sparse\": data ranges", true),
        ("\"gone\": missing in destination", true),
        ("\"extra\": only in destination", true),
    ];
    expected.retain(|(_, checked)| *checked);
    for (line, _) in expected {
        assert!(diffs.contains(line), "no {line:?} in:\n{diffs}");
    }
}

/// The cut-then-retry path of the random cases does cut: a transfer cut in
/// the middle of a large file, among small ones, ends in an exact copy
/// after a second connection.
#[test]
fn cut_mid_file_then_retry_gives_an_exact_copy() {
    let case = Case::new();
    fs::create_dir(case.src.join("dir")).unwrap();
    for i in 0..20u64 {
        fs::write(case.src.join(format!("dir/f{i}")), random_bytes(5_000, i)).unwrap();
    }
    fs::write(case.src.join("large"), random_bytes(2 * 1024 * 1024, 99)).unwrap();
    let connections = case.send_through_cut(1024 * 1024).unwrap();
    assert!(connections >= 2, "the connection was never cut");
    let diffs = differences(&Snapshot::of(&case.src), &Snapshot::of(&case.dst));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
