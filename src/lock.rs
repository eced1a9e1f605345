//! Locks: one per plan and one per HAProxy backend a rollout touches, so two rollouts never
//! change the same servers at once.
//!
//! A lock is an exclusive `flock` on a file that also records its holder (pid, host, since).
//! The kernel releases the flock when the holder dies, however it dies; a file that still
//! names a holder although nobody holds the flock is a stale lock, reported as such.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub since: String,
    pub command: String,
    /// The CI job it runs in, when its environment named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Shared state: the etcd lease the lock is held on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
}

impl Holder {
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            since: crate::journal::now(),
            command: command.to_owned(),
            job: ci_job(),
            lease: None,
        }
    }

    /// A holder whose record cannot be read (it is being written).
    pub fn unknown() -> Holder {
        Holder {
            pid: 0,
            host: "an unknown host".to_owned(),
            since: "an unknown time".to_owned(),
            command: "(starting)".to_owned(),
            job: None,
            lease: None,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "`haproxy-rollout {}` (pid {} on {}, since {}",
            self.command, self.pid, self.host, self.since
        )?;
        if let Some(job) = &self.job {
            write!(formatter, ", {job}")?;
        }
        write!(formatter, ")")
    }
}

/// The CI job this runs in, when the environment names one.
pub fn ci_job() -> Option<String> {
    if let Ok(url) = std::env::var("CI_JOB_URL") {
        return Some(format!("job {url}"));
    }
    let (server, repository, run) = (
        std::env::var("GITHUB_SERVER_URL").ok()?,
        std::env::var("GITHUB_REPOSITORY").ok()?,
        std::env::var("GITHUB_RUN_ID").ok()?,
    );
    Some(format!("job {server}/{repository}/actions/runs/{run}"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is locked by {holder}")]
    Held { what: String, holder: Box<Holder> },
    #[error("cannot lock {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released (and its holder record cleared) when dropped.
pub struct Lock {
    file: File,
    pub path: PathBuf,
    /// The holder recorded by a process that died holding this lock, if any.
    pub stale: Option<Holder>,
}

impl Lock {
    pub fn acquire(path: &Path, what: &str, me: &Holder) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::journal::private_dir(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file).unwrap_or_else(Holder::unknown);
                return Err(LockError::Held {
                    what: what.to_owned(),
                    holder: Box::new(holder),
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let stale = read_holder(&mut file);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        let record = serde_json::to_vec(me).map_err(|error| io(std::io::Error::other(error)))?;
        file.write_all(&record).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Lock {
            file,
            path: path.to_owned(),
            stale,
        })
    }

    /// Who holds the lock at `path` now, without taking it; `None` if nobody does.
    pub fn holder(path: &Path) -> Option<Holder> {
        let mut file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(_) => read_holder(&mut file),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // A cleanly released lock names nobody.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.lock");
        let first = Lock::acquire(&path, "the plan", &Holder::me("apply")).unwrap();
        assert_eq!(first.stale, None);
        match Lock::acquire(&path, "the plan", &Holder::me("apply")) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
            other => panic!("{:?}", other.map(|lock| lock.path.clone())),
        }
        assert_eq!(
            Lock::holder(&path).map(|holder| holder.command),
            Some("apply".to_owned())
        );
        drop(first);
        assert_eq!(Lock::holder(&path), None);
        let again = Lock::acquire(&path, "the plan", &Holder::me("resume")).unwrap();
        assert_eq!(again.stale, None, "a clean release leaves no stale holder");
    }

    #[test]
    fn a_holder_that_died_leaves_a_stale_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.lock");
        let dead = Holder {
            pid: 999_999,
            host: "ci-1".into(),
            since: "earlier".into(),
            command: "apply".into(),
            job: None,
            lease: None,
        };
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        let lock = Lock::acquire(&path, "the plan", &Holder::me("resume")).unwrap();
        assert_eq!(lock.stale, Some(dead));
    }
}
