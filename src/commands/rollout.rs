//! What `apply`, `resume` and `abort` share: the plan, its lock and the locks of the
//! backends it touches, and its journal (`Context`); the journal's facts about an earlier
//! run (`facts.rs`); and a rollout session, from pre-flight to the summary (`session.rs`).

mod facts;
mod session;
mod signals;
pub(crate) mod undo;

pub(crate) use facts::{Facts, Start};
pub(crate) use session::Run;
pub(crate) use signals::abort_request_from;

use std::path::{Path, PathBuf};

use super::Stop;
use crate::engine::Observation;
use crate::exit::Exit;
use crate::journal::{self, Interrupted, Record};
use crate::lock::{Holder, LockError};
use crate::plan::Plan;
use crate::report::Printer;
use crate::state::{BackendLocks, Held, StateFlags, Store};

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
    pub store: Store,
}

impl<'a> Context<'a> {
    /// Loads the plan and finds its state. Shared state that cannot be used (etcd
    /// unreachable, TLS refused) fails pre-flight (exit 3): nothing was touched.
    pub fn load(
        file: &Path,
        printer: &'a Printer,
        state: &StateFlags,
        vars: VarsFrom,
    ) -> Result<Self, Stop> {
        // The vars to read the plan with may come from its journal: the store is found
        // from the plan read without them first.
        let bare = match vars {
            VarsFrom::CommandLine(given) => {
                super::load_plan(file, crate::plan::Given::values(given), printer)?
            }
            VarsFrom::Journal(given) => super::load_plan(
                file,
                crate::plan::Given {
                    values: given,
                    partial: true,
                },
                printer,
            )?,
        };
        let store = Store::open(file, &bare, state).map_err(|error| {
            printer.preflight_failed(&format!("{error:#}"));
            printer.failure(&error.context(
                "pre-flight failed: the rollout's state cannot be used; nothing was changed",
            ));
            Stop::Reported(Exit::PreflightFailed)
        })?;
        let plan = match vars {
            VarsFrom::CommandLine(_) => bare,
            VarsFrom::Journal(given) => {
                let records = store.story().map_err(Stop::Failed)?.records;
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
            store,
        })
    }

    /// Loads the plan and takes its locks, for the commands that change servers.
    /// `asks`: the command asks before it starts, unless `--yes` (`Some(yes)`): without a
    /// terminal to ask on, it is refused before any lock is taken.
    pub fn load_locked(
        file: &Path,
        printer: &'a Printer,
        state: &StateFlags,
        vars: VarsFrom,
        (command, asks): (&str, Option<bool>),
    ) -> Result<(Self, Locks), Stop> {
        let context = Context::load(file, printer, state, vars)?;
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

    /// The journal's records, empty when there is none.
    pub fn records(&self) -> anyhow::Result<Vec<Record>> {
        Ok(self.story()?.records)
    }

    /// The journal's records and a torn last record, empty when there is none.
    pub fn story(&self) -> anyhow::Result<journal::Story> {
        self.store.story()
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
    /// A command that continues a rollout (`resume`, `rollback`, `abort`) waits, with shared
    /// state, for a holder that may have died (a runner killed mid-rollout) to lose its lease;
    /// `apply` is refused at once.
    pub fn lock(&self, command: &str) -> Result<Locks, Stop> {
        let what = format!("the rollout of {}", self.file.display());
        let me = Holder::me(command);
        let mut waited = false;
        loop {
            match self.store.lock_plan(&what, &me) {
                Ok(lock) => {
                    if let Held::Local(lock) = &lock
                        && let Some(stale) = &lock.stale
                    {
                        self.printer.warning(&format!(
                            "{what} had a stale lock from {stale}, which is gone: it was interrupted"
                        ));
                    }
                    return Ok(Locks { _held: vec![lock] });
                }
                Err(LockError::Held { holder, .. })
                    if !waited && continues(command) && matches!(self.store, Store::Shared(_)) =>
                {
                    waited = true;
                    self.printer.note(&format!(
                        "{what} is locked by {holder}; waiting for its lease to run out, in case that command is gone"
                    ));
                    if !self.store.wait_out(&holder).map_err(Stop::Failed)? {
                        self.printer.failure(&anyhow::anyhow!(
                            "{what} is locked by {holder}, which still keeps its lease alive: it runs; nothing was changed"
                        ));
                        return Err(Stop::Reported(Exit::Locked));
                    }
                }
                Err(error @ LockError::Held { .. }) => {
                    self.printer
                        .failure(&anyhow::anyhow!("{error}; nothing was changed"));
                    return Err(Stop::Reported(Exit::Locked));
                }
                Err(error) => {
                    // Not a usage error: the state cannot hold locks.
                    self.printer.failure(&anyhow::Error::new(error).context(format!(
                        "pre-flight failed: {} is not usable (--state-dir, HAPROXY_ROLLOUT_STATE_DIR, state.etcd); nothing was changed",
                        self.store.describe()
                    )));
                    return Err(Stop::Reported(Exit::PreflightFailed));
                }
            }
        }
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
        let locks = BackendLocks::new(&self.store, command, backends);
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

/// Whether `command` continues the plan's last rollout, rather than starting one.
fn continues(command: &str) -> bool {
    matches!(command, "resume" | "rollback" | "abort")
}

/// Held for as long as the rollout runs.
pub(crate) struct Locks {
    _held: Vec<Held>,
}
