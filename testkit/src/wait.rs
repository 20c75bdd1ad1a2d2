//! Polling with a deadline: tests wait for a condition, never for a fixed time.

use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on any single wait in a test. A healthy run needs milliseconds; this leaves
/// room for a loaded 2-core CI machine without letting a broken test hang a run.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `done` until it holds (true) or `patience` runs out (false). `done` is called at
/// least once, and once more at the deadline, so a condition that becomes true during the
/// last sleep is still seen.
pub fn wait_until(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let started = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
