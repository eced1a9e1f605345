//! Where a rollout's state lives: its locks, its journal, the abort requests sent to it and
//! its past rollouts. By default a folder on this machine (`Local`); with `state.etcd` in the
//! plan (or `--state-etcd`), an etcd cluster every machine that runs the plan shares
//! (`etcd::Shared`): locks on a lease, journal writes fenced by the lock, aborts by watch.
//!
//! The commands ask the `Store` and never which kind it is, except where the two differ for
//! the operator: a local abort also signals the running process.

mod backends;
mod etcd;
mod local;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::journal::history::Past;
use crate::journal::{Record, Story, WriteError};
use crate::lock::{Holder, LockError};
use crate::plan::{Plan, SharedState};

pub use backends::BackendLocks;
pub use etcd::Shared;
pub use local::Local;

/// Where an abort request goes when it arrives: who asked, and whether `--now`.
pub type AbortSink = Box<dyn Fn(String, bool) + Send + Sync>;

/// Where the command line says state lives (`--state-dir`, `--state-etcd`).
#[derive(Debug, Clone, Default)]
pub struct StateFlags {
    pub dir: Option<PathBuf>,
    /// Endpoints overriding the plan's `state.etcd.endpoints` (or sharing state with
    /// the defaults when the plan has none).
    pub etcd: Option<Vec<String>>,
}

/// One plan's state.
#[derive(Clone)]
pub enum Store {
    Local(Local),
    Shared(Arc<Shared>),
}

/// A lock this process holds; released when dropped (a shared one also when the process
/// dies and its lease runs out).
pub enum Held {
    Local(crate::lock::Lock),
    Shared(Box<etcd::SharedLock>),
}

/// The journal of the rollout under way, open for appending.
pub enum Writer {
    Local(crate::journal::Journal),
    Shared(etcd::SharedJournal),
}

impl Writer {
    pub fn append(&mut self, record: &Record) -> Result<(), WriteError> {
        match self {
            Writer::Local(journal) => journal.append(record).map_err(WriteError::Io),
            Writer::Shared(journal) => journal.append(record),
        }
    }
}

impl Store {
    /// The state of the plan in `file`: shared when the plan or the command line names etcd
    /// (connecting to it: an unreachable etcd is an error here, before anything is touched).
    pub fn open(file: &Path, plan: &Plan, flags: &StateFlags) -> anyhow::Result<Store> {
        let shared = match (&plan.shared_state, &flags.etcd) {
            (None, None) => None,
            (Some(settings), None) => Some(settings.clone()),
            (settings, Some(endpoints)) => Some(SharedState {
                endpoints: endpoints.clone(),
                ..settings.clone().unwrap_or_else(SharedState::defaults)
            }),
        };
        match shared {
            None => Ok(Store::Local(Local::of(file, flags.dir.as_deref())?)),
            Some(settings) => {
                let name = settings.name.clone().unwrap_or_else(|| plan_name(file));
                Ok(Store::Shared(Arc::new(Shared::connect(&settings, &name)?)))
            }
        }
    }

    /// Where it is, for messages: a folder, or etcd's endpoints and key.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(local) => format!("the state directory {}", local.root.display()),
            Store::Shared(shared) => shared.describe(),
        }
    }

    /// An identifier of the rollout's state, for marker names on hosts.
    pub fn id(&self) -> String {
        match self {
            Store::Local(local) => local
                .dir
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            Store::Shared(shared) => shared.id(),
        }
    }

    /// The plan's lock.
    pub fn lock_plan(&self, what: &str, me: &Holder) -> Result<Held, LockError> {
        match self {
            Store::Local(local) => local.lock_plan(what, me).map(Held::Local),
            Store::Shared(shared) => shared
                .lock_plan(what, me)
                .map(|lock| Held::Shared(Box::new(lock))),
        }
    }

    /// Waits until `holder` loses the plan's lock because it stopped keeping its lease
    /// alive (a runner that died), for at most the lease's time to live: true when the
    /// lock is free. A local lock is never held by a dead process (the kernel releases it).
    pub fn wait_out(&self, holder: &Holder) -> anyhow::Result<bool> {
        match self {
            Store::Local(_) => Ok(false),
            Store::Shared(shared) => shared.wait_out(holder),
        }
    }

    /// The lock of one backend of one HAProxy process (`key`: a digest of both), shared by
    /// every plan that changes it.
    pub fn lock_backend(&self, key: &str, what: &str, me: &Holder) -> Result<Held, LockError> {
        match self {
            Store::Local(local) => local.lock_backend(key, what, me).map(Held::Local),
            Store::Shared(shared) => shared
                .lock_backend(key, what, me)
                .map(|lock| Held::Shared(Box::new(lock))),
        }
    }

    /// Who holds the plan's lock now, without taking it.
    pub fn plan_holder(&self) -> anyhow::Result<Option<Holder>> {
        match self {
            Store::Local(local) => Ok(local.plan_holder()),
            Store::Shared(shared) => shared.plan_holder(),
        }
    }

    /// The last rollout's journal; empty when there is none.
    pub fn story(&self) -> anyhow::Result<Story> {
        match self {
            Store::Local(local) => local.story(),
            Store::Shared(shared) => shared.story(),
        }
    }

    /// The journal to append to: the last rollout's (`continuing`), or a new one (the last
    /// one joins the history, which keeps the newest `history::KEEP`).
    pub fn journal(&self, continuing: bool) -> anyhow::Result<Writer> {
        match self {
            Store::Local(local) => local.journal(continuing).map(Writer::Local),
            Store::Shared(shared) => shared.journal(continuing).map(Writer::Shared),
        }
    }

    /// The plan's rollouts, newest first.
    pub fn history(&self) -> anyhow::Result<Vec<Past>> {
        match self {
            Store::Local(local) => Ok(crate::journal::history::list(&local.dir)),
            Store::Shared(shared) => shared.history(),
        }
    }

    /// Leaves `abort`'s request (who asks, and how hard) where the running command finds
    /// it: a file its signal handler reads, or a key its watch sees.
    pub fn request_abort(&self, from: &str, now: bool) -> anyhow::Result<()> {
        match self {
            Store::Local(local) => Ok(local.request_abort(from)?),
            Store::Shared(shared) => shared.request_abort(from, now),
        }
    }

    /// Who asked, when a signal arrives just after `abort` asked (local state only: a
    /// shared request arrives by the watch).
    pub fn take_request(&self) -> Option<String> {
        match self {
            Store::Local(local) => local.take_request(),
            Store::Shared(_) => None,
        }
    }

    /// Forgets a request left over from an abort that never reached a running command.
    pub fn clear_request(&self) {
        match self {
            Store::Local(local) => local.clear_request(),
            Store::Shared(shared) => shared.clear_request(),
        }
    }

    /// Delivers abort requests to `deliver` while the command runs (shared state: from
    /// any machine, by an etcd watch; local state: `abort` signals instead).
    pub fn watch_aborts(&self, deliver: AbortSink) {
        if let Store::Shared(shared) = self {
            shared.watch_aborts(deliver);
        }
    }
}

/// A plan's name in shared state: its file's name without `.yaml` (or `.yml`).
pub fn plan_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-') {
                character
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "plan".to_owned()
    } else {
        name
    }
}
