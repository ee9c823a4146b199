//! Live progress: one line per PVC, redrawn in place on a terminal, or a
//! plain line per state change otherwise (logs, CI). Always on stderr, so
//! stdout carries only the report.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{PvcReport, PvcState};

/// The live state of every PVC of a run.
pub struct Board {
    inner: Mutex<Inner>,
    multi: Option<MultiProgress>,
}

struct Inner {
    /// Keyed by `namespace/name`, in display order.
    pvcs: BTreeMap<String, (PvcReport, Option<ProgressBar>)>,
    /// Free-form lines (images), keyed by what they describe.
    lines: BTreeMap<String, Option<ProgressBar>>,
}

impl Board {
    /// A board that redraws in place when stderr is a terminal.
    pub fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)));
        Self {
            inner: Mutex::new(Inner {
                pvcs: BTreeMap::new(),
                lines: BTreeMap::new(),
            }),
            multi,
        }
    }

    /// Adds a PVC; its line appears at once.
    pub fn add(&self, report: PvcReport) {
        let key = format!("{}/{}", report.namespace, report.name);
        let bar = self.new_line(&report.line());
        self.lock().pvcs.insert(key, (report, bar));
    }

    /// Sets the free-form line `key` (adding it if new). Without a
    /// terminal it is printed when new or when `milestone` says it marks
    /// a change worth a log line.
    pub fn set_line(&self, key: &str, text: &str, milestone: bool) {
        let mut inner = self.lock();
        match inner.lines.get(key) {
            Some(Some(bar)) => bar.set_message(text.to_string()),
            Some(None) if milestone => eprintln!("{text}"),
            Some(None) => {}
            None => {
                let bar = self.new_line(text);
                inner.lines.insert(key.to_string(), bar);
            }
        }
    }

    /// A live line on a terminal; otherwise the text printed once.
    fn new_line(&self, text: &str) -> Option<ProgressBar> {
        let Some(multi) = &self.multi else {
            eprintln!("{text}");
            return None;
        };
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(text.to_string());
        Some(bar)
    }

    /// Changes a PVC's state with `change`; prints the new line when the
    /// state changed (or redraws it on a terminal).
    pub fn update(&self, namespace: &str, name: &str, change: impl FnOnce(&mut PvcReport)) {
        let mut inner = self.lock();
        let Some((report, bar)) = inner.pvcs.get_mut(&format!("{namespace}/{name}")) else {
            return;
        };
        let before = report.state;
        change(report);
        match bar {
            Some(bar) => bar.set_message(report.line()),
            None if report.state != before => eprintln!("{}", report.line()),
            None => {}
        }
    }

    /// A copy of one PVC's report.
    pub fn get(&self, namespace: &str, name: &str) -> Option<PvcReport> {
        self.lock()
            .pvcs
            .get(&format!("{namespace}/{name}"))
            .map(|(report, _)| report.clone())
    }

    /// Every PVC's report as it stands, the display going on.
    pub fn snapshot(&self) -> Vec<PvcReport> {
        self.lock()
            .pvcs
            .values()
            .map(|(report, _)| report.clone())
            .collect()
    }

    /// Every PVC's report, ending the live display.
    pub fn finish(&self) -> Vec<PvcReport> {
        let inner = self.lock();
        for bar in inner.lines.values().flatten() {
            bar.finish();
        }
        inner
            .pvcs
            .values()
            .map(|(report, bar)| {
                if let Some(bar) = bar {
                    bar.finish_with_message(report.line());
                }
                report.clone()
            })
            .collect()
    }

    /// True when no PVC failed.
    pub fn all_succeeded(&self) -> bool {
        self.lock()
            .pvcs
            .values()
            .all(|(report, _)| report.state != PvcState::Failed)
    }

    /// Prints a message above the live lines.
    pub fn println(&self, message: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(message);
            }
            None => eprintln!("{message}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: still
        // fine to read for the report.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Board {
    fn default() -> Self {
        Self::new()
    }
}
