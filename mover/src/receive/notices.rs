//! Warnings about single objects (metadata a destination cannot store, or
//! that a non-root receiver may not set), kept to a readable number: a
//! volume of a million files the receiver does not own must not print a
//! million lines.

use std::cell::Cell;

/// How many warnings are printed in full; the rest are counted.
const SHOWN: u64 = 8;

#[derive(Default)]
pub struct Notices {
    count: Cell<u64>,
}

impl Notices {
    pub fn warn(&self, warning: &str) {
        let n = self.count.get() + 1;
        self.count.set(n);
        if n <= SHOWN {
            tracing::warn!("{warning}");
        }
    }

    pub fn extend(&self, warnings: Vec<String>) {
        warnings.iter().for_each(|w| self.warn(w));
    }

    /// Says how many warnings were not printed, if any.
    pub fn summarize(&self, volume: &str) {
        let n = self.count.get();
        if n > SHOWN {
            tracing::warn!(
                "{volume}: {} more warnings like the ones above not shown",
                n - SHOWN
            );
        }
    }
}
