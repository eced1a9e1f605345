//! One rollout session, in the order it happens: read every HAProxy and decide pre-flight
//! (locking the backends first), connect to every host, ask the operator (or say what passed),
//! prepare what can fail without touching a server (the journal last), then drive the engine
//! and journal how it ended. Each stage either hands the next what it needs or stops with
//! the exit status it reported.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use super::signals::{ask, spawn_signal_handler};
use super::{Context, Start};
use crate::commands::Stop;
use crate::commands::live::Links;
use crate::driver::Driver;
use crate::effects::{Effects, RealWorld};
use crate::engine::rollout::{Finish, Limits, Mode, Outcome, Rollout, ServerState};
use crate::engine::{Observation, Preflight, Step, Topology, Verdict};
use crate::exit::Exit;
use crate::haproxy::{Client, Info};
use crate::health::HealthChecker;
use crate::journal::{self, ProcessIdentity, Record};
use crate::plan::{PlaceholderValues, Server};
use crate::report::rollout::{RolloutReporter, outcome_text, summary_json};
use crate::ssh::SshPool;
use crate::state::{BackendLocks, Writer};

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
    /// Draw the rollout into this SVG file when it ends (`apply --timeline`).
    pub timeline: Option<std::path::PathBuf>,
}

/// What pre-flight found and holds: every HAProxy's state, its verdict, the backend locks
/// and each server's placeholder values.
struct Checked<'p> {
    /// Held while the rollout runs: the links' SSH control sockets live with them.
    links: Links,
    observations: Vec<Observation<'p>>,
    preflight: Preflight,
    locks: BackendLocks,
    targets: Vec<PlaceholderValues>,
}

/// What the rollout needs besides pre-flight's findings, made before the journal begins.
struct Prepared {
    clients: Vec<Client>,
    health: HealthChecker,
}

impl Run<'_> {
    pub fn execute(self) -> Result<Exit, Stop> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(self.session())
    }

    async fn session(self) -> Result<Exit, Stop> {
        let checked = self.preflight().await?;
        let ssh = self.connect_hosts(&checked.targets).await?;
        let result = self.with_hosts(checked, ssh.as_ref()).await;
        if let Some(ssh) = ssh {
            ssh.close().await;
        }
        result
    }

    /// Everything after the hosts are connected; they are closed whatever this returns.
    async fn with_hosts(&self, checked: Checked<'_>, ssh: Option<&SshPool>) -> Result<Exit, Stop> {
        self.confirm(&checked).await?;
        let prepared = self.prepare(&checked)?;
        let journal = self.open_journal(&checked.observations)?;
        self.drive(checked, ssh, prepared, journal).await
    }

    fn settling(&self) -> bool {
        matches!(
            self.start,
            Start::Recover {
                mode: Mode::Settle,
                ..
            }
        )
    }

    /// Reads every HAProxy, locks the backends it will change (before the verdict: a
    /// rollout under way is the reason to name first), and decides pre-flight. Blocked:
    /// the preview with every reason, exit 3.
    async fn preflight(&self) -> Result<Checked<'_>, Stop> {
        let Context { printer, plan, .. } = self.context;
        let links = crate::commands::live::connect(plan).await;
        let observations = crate::commands::live::observe(plan, &links).await;
        let ours: Vec<&str> = self.ours.iter().map(String::as_str).collect();
        let mut preflight = crate::engine::preflight::preflight(plan, &observations, &ours);
        // Settling restarts nothing: a health URL matters only to what goes on.
        if !self.settling() {
            let answers =
                crate::commands::live::probe_health(plan, &preflight, &observations).await;
            preflight.probed(plan, &answers);
        }
        let locks = self
            .context
            .lock_backends(&preflight.topology, &observations, self.command)?;
        // A rollback's command names what each server ran before: the preview shows it too.
        if let Start::Rollback { servers, .. } = &self.start {
            for (index, previous) in servers {
                if let Some(values) = &mut preflight.targets[*index].values {
                    values.previous.clone_from(previous);
                }
            }
        }
        let targets: Option<Vec<_>> = preflight
            .targets
            .iter()
            .map(|target| target.values.clone())
            .collect();
        let targets = match targets {
            Some(targets) if !preflight.blocked() || self.settling() => targets,
            _ => {
                let steps = self.steps(&preflight);
                printer.plan_preview(&self.context.file, plan, &preflight, &steps);
                return Err(Stop::Reported(Exit::PreflightFailed));
            }
        };
        for warning in preflight.with(Verdict::Warning) {
            printer.warning(&warning.text);
        }
        Ok(Checked {
            links,
            observations,
            preflight,
            locks,
            targets,
        })
    }

    fn steps<'p>(&'p self, preflight: &Preflight) -> Vec<(&'p Server, Vec<Step>)> {
        crate::commands::preview_steps(&self.context.plan, preflight)
    }

    /// Property 1: every SSH host reachable with a verified key before anything changes.
    /// Settling restarts nothing: it only asks hosts, over fresh connections, whether a
    /// command of the interrupted run still runs.
    async fn connect_hosts(&self, targets: &[PlaceholderValues]) -> Result<Option<SshPool>, Stop> {
        let hosts: Vec<String> = if self.settling() {
            Vec::new()
        } else {
            targets.iter().map(|values| values.host.clone()).collect()
        };
        match SshPool::connect(&self.context.plan.ssh, &hosts).await {
            Ok(ssh) => Ok(Some(ssh)),
            Err(error) => {
                self.context.printer.preflight_failed(&error.to_string());
                self.context.printer.failure(&anyhow::anyhow!(
                    "pre-flight failed: {error}; nothing was changed"
                ));
                Err(Stop::Reported(Exit::PreflightFailed))
            }
        }
    }

    /// On a terminal (unless `--yes`): the preview, then a question; otherwise what passed.
    async fn confirm(&self, checked: &Checked<'_>) -> Result<(), Stop> {
        let Context { printer, plan, .. } = self.context;
        if self.confirm && std::io::stdin().is_terminal() {
            let steps = self.steps(&checked.preflight);
            printer.plan_preview(&self.context.file, plan, &checked.preflight, &steps);
            if !ask(
                printer,
                &format!("Restart {} server(s) now? [y/N] ", plan.servers.len()),
            )
            .await?
            {
                printer.error("not confirmed; nothing was changed");
                return Err(Stop::Reported(Exit::Aborted));
            }
            return Ok(());
        }
        printer.preflight(&checked.preflight);
        if !self.settling() {
            let mut hosts: Vec<&str> = checked
                .targets
                .iter()
                .map(|values| values.host.as_str())
                .collect();
            hosts.sort_unstable();
            hosts.dedup();
            printer.note(&format!(
                "pre-flight passed: {} HAProxy instance(s), {} server(s), SSH to {} host(s) verified",
                plan.haproxy.len(),
                plan.servers.len(),
                hosts.len()
            ));
        }
        Ok(())
    }

    /// Everything that can fail without touching a server fails here, before the journal
    /// records a rollout.
    fn prepare(&self, checked: &Checked) -> Result<Prepared, Stop> {
        let plan = &self.context.plan;
        let Some(clients) = checked.links.all() else {
            // Only a recovery gets here (pre-flight blocks anything else on an HAProxy it
            // cannot reach): say which, and which servers stay as the earlier run left them.
            let unreachable: Vec<String> = plan
                .haproxy
                .iter()
                .zip(&checked.links.clients)
                .filter_map(|(instance, client)| {
                    client
                        .as_ref()
                        .err()
                        .map(|error| format!("{}: {error}", instance.name))
                })
                .collect();
            let left = match &self.start {
                Start::Recover { facts, .. } if !facts.recovered.is_empty() => {
                    let servers: Vec<&str> = facts
                        .recovered
                        .iter()
                        .map(|server| plan.servers[server.index].name.as_str())
                        .collect();
                    format!(
                        "; {} stay as the interrupted rollout left them (`haproxy-rollout status {}` shows how)",
                        servers.join(", "),
                        self.context.file.display()
                    )
                }
                _ => String::new(),
            };
            self.context.printer.preflight_failed(&format!(
                "cannot reach HAProxy ({})",
                unreachable.join("; ")
            ));
            self.context.printer.failure(&anyhow::anyhow!(
                "pre-flight failed: cannot reach HAProxy ({}); nothing was changed{left}",
                unreachable.join("; ")
            ));
            return Err(Stop::Reported(Exit::PreflightFailed));
        };
        let health = HealthChecker::new(plan.health.timeout, plan.health.expect_status)
            .map_err(anyhow::Error::from)?;
        Ok(Prepared { clients, health })
    }

    /// The journal's first record of this run. It is opened last of everything that can
    /// fail without touching a server: a journal that began is an interrupted rollout to
    /// the next run.
    fn open_journal(&self, observations: &[Observation]) -> Result<Writer, Stop> {
        let context = self.context;
        let open = || -> anyhow::Result<Writer> {
            let mut journal = context.store.journal(self.continue_journal)?;
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
                vars: context.plan.vars.clone(),
            })?;
            if let Start::Rollback { servers, .. } = &self.start {
                journal.append(&Record::Rollback {
                    time: journal::now(),
                    servers: servers
                        .iter()
                        .map(|(index, _)| context.plan.servers[*index].name.to_string())
                        .collect(),
                })?;
            }
            Ok(journal)
        };
        open().map_err(|error| {
            context.printer.failure(&error.context(format!(
                "pre-flight failed: cannot write the journal in {}; nothing was changed",
                context.store.describe()
            )));
            Stop::Reported(Exit::PreflightFailed)
        })
    }

    /// The engine, as the start asks (fresh, or recovering an earlier run), and the
    /// commands of that run whose markers tell whether they still run.
    fn engine(
        &self,
        topology: &Topology,
        limits: &Limits,
    ) -> (Rollout, Vec<(usize, crate::driver::StartedCommand)>) {
        let plan = &self.context.plan;
        match &self.start {
            Start::Fresh => (
                Rollout::new(plan, topology.clone(), limits.clone()),
                Vec::new(),
            ),
            Start::Recover {
                mode,
                done,
                facts,
                skip,
                analysis_passed,
            } => (
                Rollout::recover(
                    plan,
                    topology.clone(),
                    limits.clone(),
                    *mode,
                    done,
                    facts.recovered.clone(),
                )
                .skip(skip)
                .canaries_judged(*analysis_passed)
                .expecting(&facts.expected),
                facts.commands.clone(),
            ),
            Start::Rollback { servers, facts } => (
                Rollout::rollback(
                    plan,
                    topology.clone(),
                    limits.clone(),
                    servers,
                    &facts.recovered,
                ),
                facts.commands.clone(),
            ),
        }
    }

    /// Runs the engine through the driver until it finishes (asking, at a manual canary
    /// pause on a terminal, whether to go on), journals how it ended, and prints the summary.
    async fn drive(
        &self,
        checked: Checked<'_>,
        ssh: Option<&SshPool>,
        prepared: Prepared,
        journal: Writer,
    ) -> Result<Exit, Stop> {
        let Context { printer, plan, .. } = self.context;
        let Checked {
            links: _links,
            observations,
            preflight,
            locks,
            targets,
        } = checked;
        let Prepared { clients, health } = prepared;
        let topology = preflight.topology.clone();
        let limits = Limits::observed(plan, &observations, &topology);
        let (engine, commands) = self.engine(&topology, &limits);
        let identities = observations
            .iter()
            .map(|observation| match &observation.state {
                Ok(snapshot) => snapshot.info.clone(),
                Err(_) => Info::unknown(),
            })
            .collect();
        let rollout_id = self.context.store.id();
        let effects = RealWorld {
            clients,
            ssh,
            health,
            journal: Mutex::new(journal),
        };
        let hosts: Vec<String> = targets.iter().map(|values| values.host.clone()).collect();
        let driver = Driver::new(
            plan,
            effects,
            targets,
            topology.clone(),
            identities,
            rollout_id,
        )
        .with_locks(&locks)
        .with_commands(commands);
        self.context.store.clear_request();
        spawn_signal_handler(driver.interrupt.clone(), self.context.store.clone());
        let interrupt = driver.interrupt.clone();
        self.context.store.watch_aborts(Box::new(move |from, now| {
            let cause = crate::driver::Cause {
                kind: "abort",
                from,
            };
            if now {
                interrupt.now(cause);
            } else {
                interrupt.safe(cause);
            }
        }));

        let started = Instant::now();
        let mut reporter = RolloutReporter::new(printer, plan)
            .with_timeline(self.timeline.clone(), plan)
            .with_hosts(hosts.clone());
        let mut finish = driver.run(engine, |report| reporter.report(report)).await;
        if finish.outcome == Outcome::Paused {
            let paused = Record::Paused {
                time: journal::now(),
            };
            if let Err(error) = driver.effects.record(&paused) {
                printer.error(&format!("cannot write the journal: {error}"));
            }
            let interactive = self.confirm && std::io::stdin().is_terminal();
            // An answer that cannot be read is a no: the rollout stays paused, and the
            // summary below still says so.
            let go_on = interactive
                && ask_paused(printer, &finish).await.unwrap_or_else(|error| {
                    printer.warning(&format!("cannot read the answer ({error}); staying paused"));
                    false
                });
            if go_on {
                let done: Vec<usize> = finish
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(_, result)| {
                        matches!(result.state, ServerState::Done | ServerState::DoneEarlier)
                    })
                    .map(|(index, _)| index)
                    .collect();
                // The pause comes after the analysis passed.
                let rest = Rollout::recover(
                    plan,
                    topology.clone(),
                    limits.clone(),
                    Mode::Resume,
                    &done,
                    Vec::new(),
                )
                .canaries_judged(true);
                finish = driver.run(rest, |report| reporter.report(report)).await;
            }
        }
        let rollback_plan = plan.for_rollback();
        let (finish, effects) = match &rollback_plan {
            Some(rollback_plan)
                if super::undo::automatic(plan, &finish)
                    && !matches!(self.start, Start::Rollback { .. }) =>
            {
                super::undo::after_failure(
                    self.context,
                    driver,
                    rollback_plan,
                    &mut reporter,
                    finish,
                    (&topology, &limits),
                )
                .await
            }
            _ => (finish, driver.effects),
        };
        let elapsed = started.elapsed();
        if finish.outcome != Outcome::Paused {
            let end = Record::End {
                time: journal::now(),
                outcome: outcome_text(finish.outcome).to_owned(),
                summary: summary_json(plan, &hosts, &finish, elapsed),
            };
            if let Err(error) = effects.record(&end) {
                printer.error(&format!("cannot write the end of the journal: {error}"));
            }
        }
        reporter.finish(&finish, elapsed);
        Ok(match finish.outcome {
            Outcome::Success | Outcome::Paused => Exit::Success,
            Outcome::Failed => Exit::RolloutFailed,
            Outcome::Interrupted => Exit::Aborted,
        })
    }
}

async fn ask_paused(printer: &crate::report::Printer, finish: &Finish) -> anyhow::Result<bool> {
    let remaining = finish
        .servers
        .iter()
        .filter(|result| result.state == ServerState::Untouched)
        .count();
    ask(
        printer,
        &format!(
            "The canaries are back. Continue with the remaining {remaining} server(s)? [y/N] "
        ),
    )
    .await
}
