//! Bounds how many listed files may be unanswered at once, so that neither
//! side's bookkeeping grows with the size of the tree.

use std::sync::{Condvar, Mutex};

pub struct Window {
    state: Mutex<State>,
    changed: Condvar,
    limit: usize,
}

struct State {
    in_flight: usize,
    closed: bool,
}

impl Window {
    pub fn new(limit: usize) -> Self {
        Window {
            state: Mutex::new(State {
                in_flight: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            limit,
        }
    }

    /// Blocks until a slot is free; false once the window is closed.
    pub fn acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.in_flight >= self.limit && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return false;
        }
        state.in_flight += 1;
        true
    }

    /// Takes a slot if one is free right now.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed || state.in_flight >= self.limit {
            return false;
        }
        state.in_flight += 1;
        true
    }

    pub fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Only a full window has waiters; waking nobody still costs a
        // syscall, once per file on a tree of small files.
        let was_full = state.in_flight >= self.limit;
        state.in_flight = state.in_flight.saturating_sub(1);
        if was_full {
            self.changed.notify_one();
        }
    }

    /// Wakes every waiter for good: the session is over.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn blocks_at_limit_and_close_releases() {
        let w = Arc::new(Window::new(1));
        assert!(w.acquire());
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.acquire());
        std::thread::sleep(std::time::Duration::from_millis(50));
        w.close();
        assert!(!t.join().unwrap());
    }
}
