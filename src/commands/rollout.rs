//! What `apply`, `resume` and `abort` share: the plan lock and the locks of the backends it
//! touches, the journal, pre-flight, SSH, and running the engine through the driver.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::driver::{Driver, Interrupt, StartedCommand};
use crate::effects::{Effects, RealWorld};
use crate::engine::rollout::{
    CommandKind, MayRun, Mode, Outcome, Recovered, RestartFact, Rollout, ServerState,
};
use crate::engine::{Observation, Preflight, Verdict};
use crate::exit::Exit;
use crate::health::HealthChecker;
use crate::journal::{self, Change, Interrupted, Journal, ProcessIdentity, Record};
use crate::lock::{BackendLocks, Holder, Lock, LockError};
use crate::plan::{HookPoint, Plan};
use crate::report::Printer;
use crate::report::rollout::{RolloutReporter, outcome_text, summary_json};
use crate::ssh::{Marker, SshPool};

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
    /// Loads the plan; `Err` carries the exit status after printing why.
    pub fn load(
        file: &Path,
        printer: &'a Printer,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Result<Self, Exit>> {
        let plan = match super::load_plan(file, printer)? {
            Ok(plan) => plan,
            Err(exit) => return Ok(Err(exit)),
        };
        let text = std::fs::read(file)?;
        let root = journal::state_root(state_dir);
        let dir = journal::rollout_dir(&root, file)?;
        Ok(Ok(Context {
            printer,
            file: file.to_owned(),
            plan,
            plan_hash: journal::sha256_hex(&text),
            root,
            dir,
        }))
    }

    /// Loads the plan and takes its locks, for the commands that change servers.
    pub fn load_locked(
        file: &Path,
        printer: &'a Printer,
        state_dir: Option<&Path>,
        command: &str,
    ) -> anyhow::Result<Result<(Self, Locks), Exit>> {
        let context = match Context::load(file, printer, state_dir)? {
            Ok(context) => context,
            Err(exit) => return Ok(Err(exit)),
        };
        Ok(context.lock(command).map(|locks| (context, locks)))
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
    pub fn lock(&self, command: &str) -> Result<Locks, Exit> {
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
    ) -> Result<BackendLocks, Exit> {
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
                    return Err(Exit::Locked);
                }
                Err(error) => {
                    self.printer.failure(&anyhow::Error::new(error));
                    return Err(Exit::PreflightFailed);
                }
            }
        }
        Ok(locks)
    }

    fn take(&self, paths: Vec<(PathBuf, String)>, command: &str) -> Result<Locks, Exit> {
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
                    return Err(Exit::Locked);
                }
                Err(error) => {
                    // Not a usage error: the state directory cannot hold locks.
                    self.printer.failure(&anyhow::Error::new(error).context(format!(
                        "pre-flight failed: the state directory {} is not usable (--state-dir, HAPROXY_ROLLOUT_STATE_DIR); nothing was changed",
                        self.root.display()
                    )));
                    return Err(Exit::PreflightFailed);
                }
            }
        }
        Ok(Locks { _held: locks })
    }
}

/// Held for as long as the rollout runs.
pub(crate) struct Locks {
    _held: Vec<Lock>,
}

/// How the engine starts.
pub(crate) enum Start {
    Fresh,
    /// Resume or settle what an earlier run left: the engine decides from live state.
    Recover {
        mode: Mode,
        done: Vec<usize>,
        facts: Facts,
        /// Servers left out on the operator's word.
        skip: Vec<usize>,
    },
}

/// The journal's facts about the servers an earlier run was working on, for the engine.
#[derive(Default)]
pub(crate) struct Facts {
    pub recovered: Vec<Recovered>,
    /// The markers of commands that may still run, by plan index.
    pub commands: Vec<(usize, StartedCommand)>,
    /// Servers in flight that the plan no longer has.
    pub dropped: Vec<String>,
}

impl Facts {
    /// Reads the facts of `interrupted`'s servers in flight (and `also`, the server of a
    /// torn last record, if the plan has it and it is not in flight already).
    pub fn of(context: &Context, interrupted: &Interrupted, also: Option<&str>) -> Facts {
        let plan = &context.plan;
        let mut facts = Facts::default();
        for flight in &interrupted.in_flight {
            let Some(index) = context.index_of(&flight.server) else {
                facts.dropped.push(flight.server.clone());
                continue;
            };
            let restart = if flight.restart_succeeded {
                RestartFact::Succeeded
            } else if flight.restart_attempted() {
                RestartFact::MayHaveRun
            } else {
                RestartFact::NotSent
            };
            let now = (Instant::now(), std::time::SystemTime::now());
            // Until the journal's bound; a journal without one: as long as it could be.
            let conservative = |what| MayRun {
                what,
                until: now.0 + plan.remote_bound(plan.restart.timeout),
            };
            let may_run = match &flight.unfinished {
                Some((change, sent)) => {
                    if let Some(marker) = Marker::recorded(&sent.marker) {
                        facts.commands.push((
                            index,
                            StartedCommand {
                                host: sent.host.clone(),
                                marker,
                            },
                        ));
                    }
                    let what = command_kind(*change);
                    match humantime::parse_rfc3339(&sent.until) {
                        Ok(until) => until.duration_since(now.1).ok().map(|left| MayRun {
                            what,
                            until: now.0 + left,
                        }),
                        Err(_) => Some(conservative(what)),
                    }
                }
                None if flight.pending == Some(Change::Restart) => {
                    Some(conservative(CommandKind::Restart))
                }
                None => None,
            };
            facts.recovered.push(Recovered {
                index,
                restart,
                may_run,
            });
        }
        if let Some(index) = also.and_then(|server| context.index_of(server))
            && !facts.recovered.iter().any(|server| server.index == index)
            && !context.indexes_of(&interrupted.done).contains(&index)
        {
            facts.recovered.push(Recovered {
                index,
                restart: RestartFact::NotSent,
                may_run: None,
            });
        }
        facts
    }
}

fn command_kind(change: Change) -> CommandKind {
    match change {
        Change::BeforeDrainHook => CommandKind::Hook(HookPoint::BeforeDrain),
        Change::AfterRestartHook => CommandKind::Hook(HookPoint::AfterRestart),
        Change::AfterReadyHook => CommandKind::Hook(HookPoint::AfterReady),
        _ => CommandKind::Restart,
    }
}

pub(crate) struct Run<'a> {
    pub context: &'a Context<'a>,
    /// The subcommand, for lock holders.
    pub command: &'static str,
    pub start: Start,
    /// Ask before starting when stdin is a terminal.
    pub confirm: bool,
    /// Servers an interrupted run took out of rotation (pre-flight expects their state).
    pub ours: Vec<String>,
    /// Servers done before an interruption, recorded again in the new journal section.
    pub done_before: Vec<String>,
    /// Append to the existing journal instead of starting a new one.
    pub continue_journal: bool,
}

impl Run<'_> {
    pub fn execute(self) -> anyhow::Result<Exit> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(self.execute_async())
    }

    async fn execute_async(self) -> anyhow::Result<Exit> {
        let Context { printer, plan, .. } = self.context;
        let links = super::live::connect(plan).await;
        let observations = super::live::observe(plan, &links).await;
        let ours: Vec<&str> = self.ours.iter().map(String::as_str).collect();
        let settling = matches!(
            self.start,
            Start::Recover {
                mode: Mode::Settle,
                ..
            }
        );
        let preflight = crate::engine::preflight::preflight(plan, &observations, &ours);
        // The backends of each HAProxy process are locked before anything changes, and
        // before pre-flight's verdict: a rollout under way is the reason to name first.
        let backend_locks =
            match self
                .context
                .lock_backends(&preflight.topology, &observations, self.command)
            {
                Ok(locks) => locks,
                Err(exit) => return Ok(exit),
            };
        let steps = super::preview_steps(plan, &preflight);
        let targets: Option<Vec<_>> = preflight
            .targets
            .iter()
            .map(|target| target.values.clone())
            .collect();
        let targets = match targets {
            Some(targets) if !preflight.blocked() || settling => targets,
            _ => {
                printer.plan_preview(&self.context.file, plan, &preflight, &steps);
                return Ok(Exit::PreflightFailed);
            }
        };
        for warning in preflight.with(Verdict::Warning) {
            printer.warning(&warning.text);
        }

        // Property 1: every SSH host reachable with a verified key before anything changes.
        // Settling restarts nothing: it only asks hosts, over fresh connections, whether a
        // command of the interrupted run still runs.
        let ssh = {
            let hosts: Vec<String> = if settling {
                Vec::new()
            } else {
                targets.iter().map(|values| values.host.clone()).collect()
            };
            match SshPool::connect(&plan.ssh, &hosts).await {
                Ok(ssh) => Some(ssh),
                Err(error) => {
                    printer.failure(&anyhow::anyhow!(
                        "pre-flight failed: {error}; nothing was changed"
                    ));
                    return Ok(Exit::PreflightFailed);
                }
            }
        };

        if self.confirm && std::io::stdin().is_terminal() {
            printer.plan_preview(&self.context.file, plan, &preflight, &steps);
            if !ask(&format!(
                "Restart {} server(s) now? [y/N] ",
                plan.servers.len()
            ))? {
                printer.error("not confirmed; nothing was changed");
                if let Some(ssh) = ssh {
                    ssh.close().await;
                }
                return Ok(Exit::Aborted);
            }
        } else if !settling {
            summarize_preflight(printer, plan, &preflight, &targets);
        }

        // Everything that can fail without touching a server fails here, before the journal
        // records a rollout: a journal that began is an interrupted rollout to the next run.
        let clients = links.all().ok_or_else(|| {
            anyhow::anyhow!("an HAProxy could not be reached; nothing was changed")
        })?;
        let health = HealthChecker::new(plan.health.timeout, plan.health.expect_status)?;
        let journal = match self.open_journal(&observations) {
            Ok(journal) => journal,
            Err(error) => {
                printer.failure(&error.context(format!(
                    "pre-flight failed: cannot write the journal in {}; nothing was changed",
                    self.context.dir.display()
                )));
                if let Some(ssh) = ssh {
                    ssh.close().await;
                }
                return Ok(Exit::PreflightFailed);
            }
        };
        let topology = preflight.topology.clone();
        let limits = crate::engine::preflight::limits(plan, &observations, &topology);
        let (engine, commands) = match self.start {
            Start::Fresh => (
                Rollout::new(plan, topology.clone(), limits.clone()),
                Vec::new(),
            ),
            Start::Recover {
                mode,
                done,
                facts,
                skip,
            } => (
                Rollout::recover(
                    plan,
                    topology.clone(),
                    limits.clone(),
                    mode,
                    &done,
                    facts.recovered,
                )
                .skip(&skip),
                facts.commands,
            ),
        };
        let interrupt = Interrupt::default();
        spawn_signal_handler(interrupt.clone());
        let driver = Driver {
            plan,
            effects: RealWorld {
                clients,
                ssh: ssh.as_ref(),
                health,
                journal: Mutex::new(journal),
            },
            targets,
            locks: Some(&backend_locks),
            topology: topology.clone(),
            interrupt,
            identities: Mutex::new(
                observations
                    .iter()
                    .map(|observation| match &observation.state {
                        Ok(snapshot) => snapshot.info.clone(),
                        Err(_) => crate::haproxy::Info {
                            version: String::new(),
                            pid: 0,
                            start_time_sec: None,
                            uptime_sec: None,
                            stopping: false,
                            node: String::new(),
                        },
                    })
                    .collect(),
            ),
            rollout_id: self
                .context
                .dir
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            commands: Mutex::new(commands.into_iter().collect()),
            unreachable: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        let hosts: Vec<String> = driver
            .targets
            .iter()
            .map(|values| values.host.clone())
            .collect();
        let mut reporter = RolloutReporter::new(printer, plan).with_hosts(hosts.clone());
        let mut finish = driver.run(engine, |report| reporter.report(report)).await;
        if finish.outcome == Outcome::Paused {
            let paused = Record::Paused {
                time: journal::now(),
            };
            if let Err(error) = driver.effects.record(&paused) {
                printer.error(&format!("cannot write the journal: {error}"));
            }
            let interactive = self.confirm && std::io::stdin().is_terminal();
            if interactive && ask_paused(&finish)? {
                let done: Vec<usize> = finish
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(_, result)| {
                        matches!(result.state, ServerState::Done | ServerState::DoneEarlier)
                    })
                    .map(|(index, _)| index)
                    .collect();
                finish = driver
                    .run(
                        Rollout::recover(
                            plan,
                            topology.clone(),
                            limits,
                            Mode::Resume,
                            &done,
                            Vec::new(),
                        ),
                        |report| reporter.report(report),
                    )
                    .await;
            }
        }
        let elapsed = started.elapsed();
        if finish.outcome != Outcome::Paused {
            let end = Record::End {
                time: journal::now(),
                outcome: outcome_text(finish.outcome).to_owned(),
                summary: summary_json(plan, &hosts, &finish, elapsed),
            };
            if let Err(error) = driver.effects.record(&end) {
                printer.error(&format!("cannot write the end of the journal: {error}"));
            }
        }
        reporter.finish(&finish, elapsed);
        if let Some(ssh) = ssh {
            ssh.close().await;
        }
        Ok(match finish.outcome {
            Outcome::Success | Outcome::Paused => Exit::Success,
            Outcome::Failed => Exit::RolloutFailed,
            Outcome::Interrupted => Exit::Aborted,
        })
    }

    fn open_journal(&self, observations: &[Observation]) -> anyhow::Result<Journal> {
        let context = self.context;
        let mut journal = if self.continue_journal {
            Journal::open(&context.journal_path())?
        } else {
            Journal::create(&context.dir)?
        };
        journal.append(&Record::Begin {
            time: journal::now(),
            plan: std::fs::canonicalize(&context.file)?,
            plan_hash: context.plan_hash.clone(),
            pid: std::process::id(),
            host: crate::lock::hostname(),
            haproxy: observations
                .iter()
                .filter_map(|observation| {
                    observation
                        .state
                        .as_ref()
                        .ok()
                        .map(|snapshot| ProcessIdentity {
                            haproxy: observation.instance.name.to_string(),
                            pid: snapshot.info.pid,
                            start_time_sec: snapshot.info.start_time_sec,
                        })
                })
                .collect(),
            servers: context
                .plan
                .servers
                .iter()
                .map(|server| server.name.to_string())
                .collect(),
            done_before: self.done_before.clone(),
        })?;
        Ok(journal)
    }
}

fn summarize_preflight(
    printer: &Printer,
    plan: &Plan,
    preflight: &Preflight,
    targets: &[crate::plan::PlaceholderValues],
) {
    let mut hosts: Vec<&str> = targets.iter().map(|values| values.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let _ = preflight;
    printer.note(&format!(
        "pre-flight passed: {} HAProxy instance(s), {} server(s), SSH to {} host(s) verified",
        plan.haproxy.len(),
        plan.servers.len(),
        hosts.len()
    ));
}

fn ask_paused(finish: &crate::engine::rollout::Finish) -> anyhow::Result<bool> {
    let remaining = finish
        .servers
        .iter()
        .filter(|result| result.state == ServerState::Untouched)
        .count();
    ask(&format!(
        "The canaries are back. Continue with the remaining {remaining} server(s)? [y/N] "
    ))
}

fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// SIGINT and SIGTERM stop at the next safe point; a second one, or SIGUSR1 (what
/// `abort --now` sends), stops now.
fn spawn_signal_handler(interrupt: Interrupt) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut interrupt_signal), Ok(mut terminate), Ok(mut now)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) else {
            tracing::warn!(
                "cannot watch signals: SIGINT would end the rollout without a safe stop"
            );
            return;
        };
        let mut safe_seen = false;
        loop {
            tokio::select! {
                _ = interrupt_signal.recv() => {}
                _ = terminate.recv() => {}
                _ = now.recv() => {
                    tracing::warn!("abort --now: stopping without waiting; the server in flight is left out of rotation");
                    interrupt.now();
                    continue;
                }
            }
            if safe_seen {
                tracing::warn!(
                    "second signal: stopping now; the server in flight is left out of rotation"
                );
                interrupt.now();
            } else {
                safe_seen = true;
                tracing::warn!(
                    "signal received: stopping at the next safe point (the step in progress finishes first; a second signal stops now)"
                );
                interrupt.safe();
            }
        }
    });
}
