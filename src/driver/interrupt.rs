//! How hard, and why, the operator (or a fault) asked a running rollout to stop.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Interrupt {
    level: Arc<AtomicU8>,
    notify: Arc<Notify>,
    /// Why, as the first request said it (a later one that only stops harder keeps it).
    cause: Arc<Mutex<Option<Cause>>>,
}

/// Why a rollout was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `abort` (the command, from this or another shell), `signal` (SIGINT, SIGTERM: a
    /// Ctrl-C, a cancelled CI job, `kill`) or `conflict` (another rollout took a backend).
    pub kind: &'static str,
    /// Where it came from, for people.
    pub from: String,
}

pub(super) const SAFE: u8 = 1;
pub(super) const NOW: u8 = 2;

impl Interrupt {
    /// Stop at the next safe point.
    pub fn safe(&self, cause: Cause) {
        self.ask(SAFE, cause);
    }

    /// Stop now, abandoning the step in flight.
    pub fn now(&self, cause: Cause) {
        self.ask(NOW, cause);
    }

    fn ask(&self, level: u8, cause: Cause) {
        {
            let mut recorded = self
                .cause
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if recorded.is_none() || level > self.level() {
                *recorded = Some(cause);
            }
        }
        self.level.fetch_max(level, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Why it was asked to stop, once it was.
    pub fn cause(&self) -> Option<Cause> {
        self.cause
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    pub(super) fn level(&self) -> u8 {
        self.level.load(Ordering::SeqCst)
    }

    pub(super) async fn reached(&self, level: u8) {
        loop {
            let notified = self.notify.notified();
            if self.level() >= level {
                return;
            }
            notified.await;
        }
    }
}
