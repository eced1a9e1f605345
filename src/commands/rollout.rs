//! What `apply`, `resume` and `abort` share: the plan, its lock and the locks of the
//! backends it touches, and its journal (`Context`); the journal's facts about an earlier
//! run (`facts.rs`); and a rollout session, from pre-flight to the summary (`session.rs`).

mod facts;
mod session;
mod signals;
pub(crate) mod undo;

pub(crate) use facts::{Facts, Start};
pub(crate) use session::Run;
pub(crate) use signals::request_abort;

use std::path::{Path, PathBuf};

use super::Stop;
use crate::engine::Observation;
use crate::exit::Exit;
use crate::journal::{self, Interrupted, Journal, Record};
use crate::lock::{BackendLocks, Holder, Lock, LockError};
use crate::plan::Plan;
use crate::report::Printer;

/// Where the values of the plan's vars come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VarsFrom<'v> {
    /// `apply`: the command line's (`--var`).
    CommandLine(&'v [(String, String)]),
    /// `resume`, `abort`: the values the plan's last rollout started with, from its
    /// journal; any the command line gives must equal them.
    Journal(&'v [(String, String)]),
}

/// A plan loaded for a rollout, with where its journal and lock live.
pub(crate) struct Context<'a> {
    pub printer: &'a Printer,
    pub file: PathBuf,
    pub plan: Plan,
    pub plan_hash: String,
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl<'a> Context<'a> {
    /// Loads the plan and finds its state.
    pub fn load(
        file: &Path,
        printer: &'a Printer,
        state_dir: Option<&Path>,
        vars: VarsFrom,
    ) -> Result<Self, Stop> {
        let root = journal::state_root(state_dir);
        let dir = journal::rollout_dir(&root, file)?;
        let plan = match vars {
            VarsFrom::CommandLine(given) => {
                super::load_plan(file, crate::plan::Given::values(given), printer)?
            }
            VarsFrom::Journal(given) => {
                let records = match Journal::read_all(&dir.join("journal.jsonl")) {
                    Ok(story) => story.records,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(error) => return Err(Stop::Failed(error.into())),
                };
                let recorded = journal::started_with(&records);
                let values = recorded_vars(recorded.as_ref(), given, printer)?;
                // No rollout to continue: nothing runs with a var's value.
                let partial = recorded.is_none();
                super::load_plan(
                    file,
                    crate::plan::Given {
                        values: &values,
                        partial,
                    },
                    printer,
                )?
            }
        };
        let text = std::fs::read(file)?;
        Ok(Context {
            printer,
            file: file.to_owned(),
            plan,
            plan_hash: journal::sha256_hex(&text),
            root,
            dir,
        })
    }

    /// Loads the plan and takes its locks, for the commands that change servers.
    /// `asks`: the command asks before it starts, unless `--yes` (`Some(yes)`): without a
    /// terminal to ask on, it is refused before any lock is taken.
    pub fn load_locked(
        file: &Path,
        printer: &'a Printer,
        state_dir: Option<&Path>,
        vars: VarsFrom,
        (command, asks): (&str, Option<bool>),
    ) -> Result<(Self, Locks), Stop> {
        let context = Context::load(file, printer, state_dir, vars)?;
        if let Some(yes) = asks {
            super::can_ask(yes, command)?;
        }
        let locks = context.lock(command)?;
        Ok((context, locks))
    }

    /// The plan index of a server the journal names; `None` if the plan no longer has it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.plan
            .servers
            .iter()
            .position(|server| server.name.as_str() == name)
    }

    /// The plan indexes of the servers the journal names, skipping any the plan dropped.
    pub fn indexes_of(&self, names: &[String]) -> Vec<usize> {
        names
            .iter()
            .filter_map(|name| self.index_of(name))
            .collect()
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The journal's records, empty when there is none.
    pub fn records(&self) -> anyhow::Result<Vec<Record>> {
        Ok(self.story()?.records)
    }

    /// The journal's records and a torn last record, empty when there is none.
    pub fn story(&self) -> anyhow::Result<journal::Story> {
        match Journal::read_all(&self.journal_path()) {
            Ok(story) => Ok(story),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(journal::Story::default())
            }
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("cannot read {}", self.journal_path().display()))),
        }
    }

    /// The facts of an earlier run's servers in flight, for the engine: a torn last record
    /// is reported, and its server decided from live state like the others.
    pub fn facts(&self, interrupted: &Interrupted, story: &journal::Story) -> Facts {
        let torn_server = story.torn.as_ref().and_then(journal::Torn::server);
        if let Some(torn) = &story.torn {
            self.printer.warning(&format!(
                "the journal's last record was not written whole (a crash or a full disk while writing: {:?}); {} decided from what HAProxy shows now",
                torn.text,
                torn_server.map_or_else(
                    || "every server in flight is".to_owned(),
                    |server| format!("{server} is")
                )
            ));
        }
        Facts::of(self, interrupted, torn_server)
    }

    /// Property 8: the plan's lock. The backends' locks follow pre-flight, which reads
    /// which HAProxy process each socket reaches (`lock_backends`), before anything changes.
    pub fn lock(&self, command: &str) -> Result<Locks, Stop> {
        let paths = vec![(
            self.lock_path(),
            format!("the rollout of {}", self.file.display()),
        )];
        self.take(paths, command)
    }

    /// One lock per backend this rollout changes on each HAProxy process, however the plan
    /// reaches it (unix socket, TCP, SSH), so two rollouts never change the same servers at
    /// once, even from different plan files. An HAProxy that could not be read (settling
    /// past it) is keyed by its socket instead.
    pub fn lock_backends(
        &self,
        topology: &crate::engine::Topology,
        observations: &[Observation],
        command: &str,
    ) -> Result<BackendLocks, Stop> {
        let backends = self
            .plan
            .haproxy
            .iter()
            .enumerate()
            .map(|(instance, haproxy)| {
                let names = topology
                    .touched()
                    .into_iter()
                    .filter(|(of, _)| *of == instance)
                    .map(|(_, backend)| backend.to_string())
                    .collect();
                (haproxy.name.to_string(), names)
            })
            .collect();
        let locks = BackendLocks::new(&self.root, command, backends);
        for (instance, observation) in observations.iter().enumerate() {
            let identity = match &observation.state {
                Ok(snapshot) => snapshot.info.identity(),
                Err(_) => format!("socket {}", self.plan.haproxy[instance].socket),
            };
            match locks.take(instance, &identity) {
                Ok(stale) => {
                    for holder in stale {
                        self.printer.warning(&format!(
                            "a backend lock of HAProxy {} had a stale holder, {holder}, which is gone: it was interrupted",
                            self.plan.haproxy[instance].name
                        ));
                    }
                }
                Err(error @ LockError::Held { .. }) => {
                    self.printer
                        .failure(&anyhow::anyhow!("{error}; nothing was changed"));
                    return Err(Stop::Reported(Exit::Locked));
                }
                Err(error) => {
                    self.printer.failure(&anyhow::Error::new(error));
                    return Err(Stop::Reported(Exit::PreflightFailed));
                }
            }
        }
        Ok(locks)
    }

    fn take(&self, paths: Vec<(PathBuf, String)>, command: &str) -> Result<Locks, Stop> {
        let me = Holder::me(command);
        let mut locks = Vec::new();
        for (path, what) in paths {
            match Lock::acquire(&path, &what, &me) {
                Ok(lock) => {
                    if let Some(stale) = &lock.stale {
                        self.printer.warning(&format!(
                            "{what} had a stale lock from {stale}, which is gone: it was interrupted"
                        ));
                    }
                    locks.push(lock);
                }
                Err(error @ LockError::Held { .. }) => {
                    self.printer
                        .failure(&anyhow::anyhow!("{error}; nothing was changed"));
                    return Err(Stop::Reported(Exit::Locked));
                }
                Err(error) => {
                    // Not a usage error: the state directory cannot hold locks.
                    self.printer.failure(&anyhow::Error::new(error).context(format!(
                        "pre-flight failed: the state directory {} is not usable (--state-dir, HAPROXY_ROLLOUT_STATE_DIR); nothing was changed",
                        self.root.display()
                    )));
                    return Err(Stop::Reported(Exit::PreflightFailed));
                }
            }
        }
        Ok(Locks { _held: locks })
    }
}

/// The values a rollout started with, and any the command line adds; a value the command
/// line changes is refused (exit 2): a rollout goes on with what it started with.
fn recorded_vars(
    recorded: Option<&std::collections::BTreeMap<String, String>>,
    given: &[(String, String)],
    printer: &Printer,
) -> Result<Vec<(String, String)>, Stop> {
    let mut values: Vec<(String, String)> = recorded
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for (name, value) in given {
        match recorded.and_then(|recorded| recorded.get(name)) {
            Some(started) if started != value => {
                printer.failure(&anyhow::anyhow!(
                    "--var {name}={value}: the rollout started with {name}={started} and goes on with it; \
                     leave --var out, or start over with `apply --fresh --var {name}={value}`; nothing was changed"
                ));
                return Err(Stop::Reported(Exit::Usage));
            }
            Some(_) => {}
            None => values.push((name.clone(), value.clone())),
        }
    }
    Ok(values)
}

/// Held for as long as the rollout runs.
pub(crate) struct Locks {
    _held: Vec<Lock>,
}
