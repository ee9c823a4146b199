//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! same checks the `cargo fuzz` targets run (`fuzz/checks.rs`), so that an
//! input the fuzzer once found interesting keeps passing under plain
//! `cargo test`, on stable, without libFuzzer.
//!
//! Inputs that once crashed a check live in `fuzz/regressions/<target>/`
//! (outside the corpus, so `cargo fuzz cmin` cannot drop them and
//! `cargo fuzz run` does not stop on them); they guard against the bug's
//! return.
//!
//! To refresh the generated seeds after a wire-format change:
//! `MOVER_WRITE_FUZZ_SEEDS=1 cargo test -p mover --test fuzz_corpus generated_seeds_pass`.

#[path = "../fuzz/checks.rs"]
mod checks;
#[path = "../fuzz/seeds.rs"]
mod seeds;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Longest one input may take (in a debug build) before it counts as a hang.
const INPUT_LIMIT: Duration = Duration::from_secs(60);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file in `dir`, sorted, as (name, contents).
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .collect()
}

/// Runs `check` on every input on a worker thread, and fails naming every
/// input whose check panicked, or the first one that did not finish within
/// [`INPUT_LIMIT`].
fn replay(target: &str, check: checks::Check, inputs: Vec<(String, Vec<u8>)>) {
    let (tx, rx) = mpsc::channel();
    let names: Vec<String> = inputs.iter().map(|(name, _)| name.clone()).collect();
    thread::spawn(move || {
        for (name, input) in inputs {
            let result = panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
            if tx.send((name, result.is_err())).is_err() {
                return;
            }
        }
    });
    let mut failed = Vec::new();
    for name in &names {
        match rx.recv_timeout(INPUT_LIMIT) {
            Ok((done, panicked)) => {
                assert_eq!(&done, name);
                if panicked {
                    failed.push(done);
                }
            }
            // The worker is left spinning; the test process ends with it.
            Err(_) => panic!("{target}: input {name} did not finish within {INPUT_LIMIT:?}"),
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: checks panicked on {} of {} inputs (messages above): {failed:?}",
        failed.len(),
        names.len()
    );
}

fn check_for(target: &str) -> checks::Check {
    checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check for {target}"))
        .1
}

fn replay_corpus(target: &str) {
    let inputs = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!inputs.is_empty(), "empty corpus for {target}");
    replay(target, check_for(target), inputs);
}

#[test]
fn frame_decoder_corpus() {
    replay_corpus("frame_decoder");
}

#[test]
fn entry_decoder_corpus() {
    replay_corpus("entry_decoder");
}

#[test]
fn delta_apply_corpus() {
    replay_corpus("delta_apply");
}

#[test]
fn delta_roundtrip_corpus() {
    replay_corpus("delta_roundtrip");
}

#[test]
fn delta_diff_corpus() {
    replay_corpus("delta_diff");
}

/// Inputs that once crashed a check (fixed bugs that must not return).
#[test]
fn regressions() {
    let Ok(dirs) = fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for dir in dirs {
        let target = dir.unwrap().file_name().to_string_lossy().into_owned();
        let inputs = inputs(&fuzz_dir().join("regressions").join(&target));
        replay(&target, check_for(&target), inputs);
    }
}

/// Every corpus and regression directory belongs to a target with a check,
/// so nothing is silently skipped.
#[test]
fn every_input_dir_has_a_check() {
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(dir)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                checks::TARGETS.iter().any(|(target, _)| *target == name),
                "{dir}/{name} has no check in fuzz/checks.rs"
            );
        }
    }
}

/// The generated seeds, as the current code encodes them, pass every check
/// (the committed copies may predate a wire-format change). With
/// `MOVER_WRITE_FUZZ_SEEDS=1` set, also writes them into the corpus (after a
/// wire-format change).
#[test]
fn generated_seeds_pass() {
    if std::env::var_os("MOVER_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, input) in seeds::seeds() {
            let dir = fuzz_dir().join("corpus").join(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("seed-{name}")), input).unwrap();
        }
    }
    for (target, check) in checks::TARGETS {
        let inputs = seeds::seeds()
            .into_iter()
            .filter(|(t, _, _)| t == target)
            .map(|(_, name, input)| (name, input))
            .collect();
        replay(target, *check, inputs);
    }
}
