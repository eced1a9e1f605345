//! The backend locks of a rollout, one per backend of each HAProxy process it changes,
//! keyed by the process (`Info::identity`), so that two plans reaching one HAProxy by
//! different sockets (unix and TCP) share them. When HAProxy reloads, the rollout takes
//! them again for the new process.

use super::{Held, Store};
use crate::lock::{Holder, LockError};

pub struct BackendLocks {
    store: Store,
    me: Holder,
    /// Per HAProxy instance of the plan: its name and the backends the rollout changes.
    backends: Vec<(String, Vec<String>)>,
    held: std::sync::Mutex<Vec<Held>>,
}

impl BackendLocks {
    pub fn new(store: &Store, command: &str, backends: Vec<(String, Vec<String>)>) -> Self {
        BackendLocks {
            store: store.clone(),
            me: Holder::me(command),
            backends,
            held: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Takes the locks of `instance`'s backends for the process `identity` (what `show
    /// info` says of it); returns the stale holders found, to report.
    pub fn take(&self, instance: usize, identity: &str) -> Result<Vec<Holder>, LockError> {
        let Some((name, backends)) = self.backends.get(instance) else {
            return Ok(Vec::new());
        };
        let mut stale = Vec::new();
        let mut taken = Vec::new();
        for backend in backends {
            let key = crate::journal::sha256_hex(format!("{identity}|{backend}").as_bytes());
            let process = match identity.split('|').collect::<Vec<_>>()[..] {
                [node, pid, _] => format!("pid {pid} on {node}"),
                _ => identity.to_owned(),
            };
            let what = format!("backend {backend} of HAProxy {name} ({process})");
            let lock = self.store.lock_backend(&key[..16], &what, &self.me)?;
            if let Held::Local(lock) = &lock {
                stale.extend(lock.stale.clone());
            }
            taken.push(lock);
        }
        self.held.lock().expect("the locks lock").extend(taken);
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Local;

    #[test]
    fn backend_locks_belong_to_the_haproxy_process_not_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(Local {
            root: dir.path().to_owned(),
            dir: dir.path().join("rollouts/plan"),
        });
        let backends = || vec![("lb1".to_owned(), vec!["be_app".to_owned()])];
        let first = BackendLocks::new(&store, "apply", backends());
        first.take(0, "vm|100|1700000000").unwrap();
        let second = BackendLocks::new(&store, "apply", backends());
        assert!(matches!(
            second.take(0, "vm|100|1700000000"),
            Err(LockError::Held { .. })
        ));
        // After a reload, the holder takes the new process's locks too; the other cannot.
        first.take(0, "vm|200|1700000100").unwrap();
        assert!(second.take(0, "vm|200|1700000100").is_err());
        assert!(
            second.take(0, "other|100|1700000000").is_ok(),
            "another HAProxy"
        );
    }
}
