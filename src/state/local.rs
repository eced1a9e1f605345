//! State in a folder on this machine: `flock`ed lock files, the journal file, the abort
//! request file and the plan's history (`$XDG_STATE_HOME/haproxy-rollout/rollouts/<id>/`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::journal::{self, Journal, Story};
use crate::lock::{Holder, Lock, LockError};

#[derive(Debug, Clone)]
pub struct Local {
    /// The state directory (`--state-dir`).
    pub root: PathBuf,
    /// The plan's folder in it.
    pub dir: PathBuf,
}

/// A request older than this is left over from an abort that never signalled.
const REQUEST_FRESH: Duration = Duration::from_secs(30);

impl Local {
    pub fn of(file: &Path, flag: Option<&Path>) -> std::io::Result<Local> {
        let root = journal::state_root(flag);
        let dir = journal::rollout_dir(&root, file)?;
        Ok(Local { root, dir })
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    fn request_path(&self) -> PathBuf {
        self.dir.join("abort-request")
    }

    pub fn lock_plan(&self, what: &str, me: &Holder) -> Result<Lock, LockError> {
        Lock::acquire(&self.lock_path(), what, me)
    }

    pub fn lock_backend(&self, key: &str, what: &str, me: &Holder) -> Result<Lock, LockError> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        Lock::acquire(&path, what, me)
    }

    pub fn plan_holder(&self) -> Option<Holder> {
        Lock::holder(&self.lock_path())
    }

    pub fn story(&self) -> anyhow::Result<Story> {
        match Journal::read_all(&self.journal_path()) {
            Ok(story) => Ok(story),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Story::default()),
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("cannot read {}", self.journal_path().display()))),
        }
    }

    /// Continuing: the journal file as it is. Otherwise a new one, after removing the
    /// folders of plans that are gone (and can no longer matter).
    pub fn journal(&self, continuing: bool) -> anyhow::Result<Journal> {
        if continuing {
            return Ok(Journal::open(&self.journal_path())?);
        }
        let locked = |dir: &Path| Lock::holder(&dir.join("lock")).is_some();
        for removed in journal::history::prune_gone_plans(&self.root, &self.dir, locked) {
            tracing::debug!(
                "removed the state of a plan that is gone: {}",
                removed.display()
            );
        }
        Ok(Journal::create(&self.dir)?)
    }

    pub fn request_abort(&self, from: &str) -> std::io::Result<()> {
        let path = self.request_path();
        let partial = path.with_extension("partial");
        std::fs::write(&partial, from)?;
        std::fs::rename(partial, path)
    }

    /// Who asked, if `abort` did (and just now): taken, so it is read once.
    pub fn take_request(&self) -> Option<String> {
        let path = self.request_path();
        let fresh = std::fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age < REQUEST_FRESH);
        let text = std::fs::read_to_string(&path).ok();
        let _ = std::fs::remove_file(&path);
        text.filter(|_| fresh)
    }

    pub fn clear_request(&self) {
        let _ = std::fs::remove_file(self.request_path());
    }
}
