//! One server's way through the rollout, from the moment its capacity check passed (or an
//! interrupted run left it out of rotation) until it is back UP or left safely out: drain,
//! zero sessions, maintenance, restart, its own health check, HAProxy's checks, traffic.
//! The coordinator in `rollout.rs` decides when a server may start; several may be in
//! flight at once, each with one effect at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the host is asked whether a command whose outcome is unknown still runs.
mod commands;
mod polls;
mod stops;

const CHECK_EVERY: Duration = Duration::from_secs(1);

use super::{
    CommandFailure, CommandKind, CommandState, Effect, Event, MayRun, Outcome, Report,
    ServerResult, ServerState, Settings, Stage, or_none,
};
use crate::haproxy::{AdminTarget, ServerView};
use crate::plan::{HookPoint, OnDrainTimeout, ServerName};

/// Where a server's run begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryPoint {
    /// Its capacity check just passed: the `before_drain` hook, then the drain.
    Checked,
    /// Out of rotation already (an earlier run drained it): its restart is redone once no
    /// session is left on it, on every HAProxy.
    RestartAfterSessions,
    /// Out of rotation, and its restart may have run: from its health check on (back only
    /// once its health and HAProxy's checks pass, else out).
    AfterRestart { restart_known: bool },
    /// In traffic after a restart of an earlier run: confirmed once exactly UP.
    ConfirmUp { restart_known: bool },
    /// Never restarted: back into traffic, then the run stops.
    ReturnUnrestarted,
    /// A command of an earlier run may still run on its host: its host is asked at once;
    /// ended, the server goes on with `then`. Still running (or the host cannot tell), the
    /// server is first taken out with `secure` (if the command is one that runs while it
    /// is out and it is not out already), waits until the command can no longer run, then
    /// goes on with `then_secured`.
    AwaitCommand {
        may_run: MayRun,
        /// What the server is now: in traffic (`None`), draining, or in maintenance.
        holding: Option<AdminTarget>,
        secure: Option<AdminTarget>,
        then: AfterCommand,
        then_secured: AfterCommand,
    },
}

/// What a server does once a command that may have been running can no longer run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterCommand {
    /// Settled by its health and HAProxy's checks.
    Probe { restart_known: bool },
    /// Its restart is redone, once no session is left on it.
    RestartAfterSessions,
    /// Back to traffic, never restarted.
    ReturnUnrestarted,
    /// In traffic after its restart: confirmed once exactly UP.
    ConfirmUp { restart_known: bool },
    /// In traffic, never restarted: it starts again like a server not yet started.
    Queue,
    /// Nothing to do: it ends in this state.
    Leave(ServerState),
}

pub(super) enum RunStep {
    Run(Effect),
    Report(Report),
    Done(Done),
}

/// How one server's run ended.
pub(super) struct Done {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub result: ServerResult,
    /// Untouched and in traffic: it starts again like a server not yet started.
    pub requeue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Draining,
    Sessions {
        deadline: Instant,
    },
    ForcingMaint {
        sessions: u64,
    },
    ForcingShutdown {
        sessions: u64,
    },
    EnteringMaint,
    /// Taken out of traffic while a command of an earlier run still runs.
    Securing {
        may_run: MayRun,
        target: AdminTarget,
    },
    Restarting,
    /// A command whose outcome is unknown may still run on the host until `until`: the
    /// server stays out of rotation until the host shows it ended or the bound passed.
    CommandMayRun {
        what: CommandKind,
        until: Instant,
        next_check: Instant,
    },
    Probing {
        deadline: Instant,
        last_error: Option<String>,
    },
    LeavingMaint,
    Checks {
        deadline: Instant,
    },
    Returning,
    Up {
        deadline: Instant,
    },
    BeforeDrainHook,
    AfterRestartHook,
    AfterReadyHook,
    /// A corrective change after a failure or an abort; then the run finishes.
    Restoring {
        target: AdminTarget,
        outcome: Outcome,
        stage: Stage,
        reason: String,
    },
    Finished,
}

/// How the run is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopping {
    No,
    /// The operator asked to stop at the next safe point.
    Interrupted,
    /// Settle the server, then stop with this failure (e.g. the SSH connection was lost
    /// during its restart).
    AfterThisServer(String),
}

pub(super) struct ServerRun {
    settings: Arc<Settings>,
    index: usize,
    result: ServerResult,
    phase: Phase,
    start: Option<EntryPoint>,
    started: Option<Instant>,
    drained: Option<Instant>,
    restarted: Option<Instant>,
    healthy: Option<Instant>,
    /// The last command sent to its host, and when.
    sent: Option<(CommandKind, Instant)>,
    last_sessions: Option<u64>,
    /// Per HAProxy instance: since when every poll of it failed.
    unreadable_since: Vec<Option<Instant>>,
    stop: Stopping,
    /// Settling after an interrupted rollout runs no hooks: it only puts a server right.
    hooks_enabled: bool,
    /// What follows once a command that may have been running can no longer run.
    after_command: AfterCommand,
    /// Whether its restart ran is not known (an earlier run lost it): back in traffic, it
    /// is reported so.
    restart_unknown: bool,
    /// What holds the server out while it waits for a command (`None`: in traffic).
    holding: Option<AdminTarget>,
    /// Taken out with this if the command is still running at the first look.
    secure: Option<AdminTarget>,
    /// What follows the command once the server was taken out for it.
    then_secured: AfterCommand,
}

impl ServerRun {
    /// `settling`: after an interrupted rollout, only put right, then stop (no hooks).
    pub fn new(settings: Arc<Settings>, index: usize, start: EntryPoint, settling: bool) -> Self {
        ServerRun {
            unreadable_since: vec![None; settings.unreachable_timeouts.len()],
            result: ServerResult {
                server: settings.servers[index].clone(),
                state: ServerState::Untouched,
                restore: Vec::new(),
                timings: super::Timings::default(),
                sessions_cut: None,
                may_run: None,
            },
            settings,
            index,
            phase: Phase::Idle,
            start: Some(start),
            started: None,
            drained: None,
            restarted: None,
            healthy: None,
            sent: None,
            last_sessions: None,
            stop: if settling {
                Stopping::Interrupted
            } else {
                Stopping::No
            },
            hooks_enabled: !settling,
            after_command: AfterCommand::Probe {
                restart_known: true,
            },
            restart_unknown: false,
            holding: Some(AdminTarget::Maint),
            secure: None,
            then_secured: AfterCommand::Probe {
                restart_known: true,
            },
        }
    }

    fn server(&self) -> ServerName {
        self.result.server.clone()
    }

    fn run(effect: Effect) -> Vec<RunStep> {
        vec![RunStep::Run(effect)]
    }

    fn stage(&self, stage: Stage) -> RunStep {
        RunStep::Report(Report::Stage {
            server: self.server(),
            stage,
        })
    }

    fn interrupted(&self) -> bool {
        self.stop == Stopping::Interrupted
    }

    /// Draining and not yet restarted: sessions held by an old HAProxy process (after a
    /// reload) still matter.
    pub fn draining_before_restart(&self) -> bool {
        matches!(self.phase, Phase::Draining | Phase::Sessions { .. })
    }

    /// Its drain has been applied (or it never was in traffic): the next server's capacity
    /// check sees it out.
    pub fn past_drain(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Idle | Phase::BeforeDrainHook | Phase::Draining
        )
    }

    /// It is stopping on a failure (putting the server back or out): no new server may
    /// start meanwhile.
    pub fn failing(&self) -> bool {
        matches!(
            self.phase,
            Phase::Restoring {
                outcome: Outcome::Failed,
                ..
            }
        )
    }

    /// The admin state the server must have now: what a reload of HAProxy drops and the
    /// driver puts back. `None` when nothing this rollout set is in force.
    pub fn expected_state(&self) -> Option<(ServerName, AdminTarget)> {
        let target = match &self.phase {
            Phase::Draining
            | Phase::Sessions { .. }
            | Phase::LeavingMaint
            | Phase::Checks { .. } => AdminTarget::Drain,
            Phase::ForcingMaint { .. }
            | Phase::ForcingShutdown { .. }
            | Phase::EnteringMaint
            | Phase::Restarting
            | Phase::AfterRestartHook
            | Phase::Probing { .. } => AdminTarget::Maint,
            Phase::Restoring {
                target: AdminTarget::Maint,
                ..
            } => AdminTarget::Maint,
            Phase::CommandMayRun { .. } => self.holding?,
            Phase::Securing { target, .. } => *target,
            _ => return None,
        };
        Some((self.server(), target))
    }

    /// The first steps.
    pub fn begin(&mut self, now: Instant) -> Vec<RunStep> {
        self.started = Some(now);
        match self.start.take().unwrap_or(EntryPoint::Checked) {
            EntryPoint::ReturnUnrestarted => {
                self.result.state = ServerState::Unknown;
                self.return_unrestarted("settled after an interrupted rollout")
            }
            EntryPoint::AfterRestart { restart_known } => {
                self.result.state = ServerState::Unknown;
                self.restart_unknown = !restart_known;
                self.start_probing(now)
            }
            EntryPoint::ConfirmUp { restart_known } => self.confirm_up(restart_known, now),
            EntryPoint::RestartAfterSessions => {
                self.result.state = ServerState::OutOfRotation;
                self.wait_for_sessions(now)
            }
            EntryPoint::AwaitCommand {
                may_run,
                holding,
                secure,
                then,
                then_secured,
            } => {
                self.result.state = match holding {
                    None => ServerState::Untouched,
                    Some(_) => ServerState::OutOfRotation,
                };
                self.holding = holding;
                self.secure = secure;
                self.after_command = then;
                self.then_secured = then_secured;
                self.wait_for_command(may_run, now)
            }
            EntryPoint::Checked => {
                if self.has_hook(HookPoint::BeforeDrain) {
                    return self.run_hook(HookPoint::BeforeDrain, Phase::BeforeDrainHook, now);
                }
                self.start_drain()
            }
        }
    }

    /// Takes the result of its last effect and returns what to do next.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<RunStep> {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match (phase, event) {
            (Phase::Draining, Event::Changed(Ok(()))) => {
                self.result.state = ServerState::Unknown;
                if self.interrupted() {
                    return self.return_unrestarted("interrupted while draining");
                }
                self.phase = Phase::Sessions {
                    deadline: now + self.settings.drain_timeout,
                };
                vec![
                    self.stage(Stage::WaitingForSessions),
                    RunStep::Run(Effect::Poll),
                ]
            }
            // Part of the drain may have landed: put the server back everywhere.
            (Phase::Draining, Event::Changed(Err(error))) => self.restore(
                AdminTarget::Ready,
                Stage::Draining,
                format!("drain failed: {error}"),
            ),
            (Phase::Sessions { deadline }, Event::Polled(views)) => {
                self.after_sessions_poll(&views, deadline, now)
            }
            (Phase::ForcingMaint { sessions }, Event::Changed(Ok(()))) => {
                self.phase = Phase::ForcingShutdown { sessions };
                Self::run(Effect::ShutdownSessions(self.server()))
            }
            (Phase::ForcingShutdown { sessions }, Event::Changed(Ok(()))) => {
                self.result.sessions_cut = Some(sessions);
                let mut steps = vec![RunStep::Report(Report::SessionsCut {
                    server: self.server(),
                    sessions,
                })];
                if self.interrupted() {
                    steps.extend(self.return_unrestarted("interrupted before the restart"));
                } else {
                    steps.extend(self.start_restart(now));
                }
                steps
            }
            (
                Phase::ForcingMaint { .. } | Phase::ForcingShutdown { .. },
                Event::Changed(Err(error)),
            ) => self.fail_out_of_rotation(
                Stage::WaitingForSessions,
                format!("cutting the remaining sessions failed: {error}"),
            ),
            (Phase::EnteringMaint, Event::Changed(Ok(()))) => {
                if self.interrupted() {
                    return self.return_unrestarted("interrupted before the restart");
                }
                self.start_restart(now)
            }
            (Phase::Securing { may_run, target }, Event::Changed(Ok(()))) => {
                self.holding = Some(target);
                self.result.state = ServerState::OutOfRotation;
                self.after_command = self.then_secured;
                self.phase = Phase::CommandMayRun {
                    what: may_run.what,
                    until: may_run.until,
                    next_check: now + CHECK_EVERY,
                };
                Self::run(Effect::Wait)
            }
            (Phase::Securing { target, .. }, Event::Changed(Err(error))) => self
                .fail_out_of_rotation(
                    Stage::Draining,
                    format!(
                        "taking it out ({}) failed while a command may still run: {error}",
                        target.as_str()
                    ),
                ),
            (Phase::EnteringMaint, Event::Changed(Err(error))) => {
                self.fail_out_of_rotation(Stage::Restarting, format!("maintenance failed: {error}"))
            }
            (Phase::Restarting, Event::Restarted(result)) => {
                let unknown = match result {
                    Ok(()) => false,
                    Err(CommandFailure::Failed(error)) => {
                        return self
                            .fail(Stage::Restarting, format!("the restart failed: {error}"));
                    }
                    Err(CommandFailure::Unknown(error)) => {
                        self.stop = Stopping::AfterThisServer(format!(
                            "the restart's outcome is unknown ({error}); {} stayed out of rotation until the restart could no longer run, was then settled by its health and HAProxy's checks, and the rollout stopped",
                            self.server()
                        ));
                        true
                    }
                };
                self.restarted = Some(now);
                self.result.timings.restarting = self
                    .drained
                    .map(|drained| now.saturating_duration_since(drained));
                if unknown {
                    // Property 9: it may still be running; a health answer now could come
                    // from the old process, about to be killed.
                    return self.await_command(now);
                }
                if self.has_hook(HookPoint::AfterRestart) {
                    return self.run_hook(HookPoint::AfterRestart, Phase::AfterRestartHook, now);
                }
                self.start_probing(now)
            }
            (
                Phase::CommandMayRun {
                    what,
                    until,
                    next_check,
                },
                event @ (Event::CommandChecked(_) | Event::Waited),
            ) => self.after_command_check(event, (what, until, next_check), now),
            (Phase::Probing { .. }, Event::Probed(Ok(()))) => {
                self.healthy = Some(now);
                self.result.timings.health = self
                    .restarted
                    .map(|restarted| now.saturating_duration_since(restarted));
                self.phase = Phase::LeavingMaint;
                vec![
                    self.stage(Stage::WaitingForChecks),
                    RunStep::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
                ]
            }
            (Phase::Probing { deadline, .. }, Event::Probed(Err(error))) => {
                if now >= deadline {
                    return self.fail(
                        Stage::WaitingForHealth,
                        format!(
                            "its health endpoint did not answer as expected within {}s: {error}",
                            self.settings.health_within.as_secs()
                        ),
                    );
                }
                self.phase = Phase::Probing {
                    deadline,
                    last_error: Some(error),
                };
                Self::run(Effect::Wait)
            }
            (phase @ Phase::Probing { .. }, Event::Waited) => {
                self.phase = phase;
                Self::run(Effect::Probe(self.index))
            }
            // Every wait for HAProxy's state ends the same way: poll again.
            (
                phase @ (Phase::Sessions { .. } | Phase::Checks { .. } | Phase::Up { .. }),
                Event::Waited,
            ) => {
                self.phase = phase;
                Self::run(Effect::Poll)
            }
            (Phase::LeavingMaint, Event::Changed(Ok(()))) => {
                self.phase = Phase::Checks {
                    deadline: now + self.settings.ready_timeout,
                };
                Self::run(Effect::Poll)
            }
            (Phase::LeavingMaint, Event::Changed(Err(error))) => self.fail_out_of_rotation(
                Stage::WaitingForChecks,
                format!("leaving maintenance failed: {error}"),
            ),
            (Phase::Checks { deadline }, Event::Polled(views)) => {
                self.after_checks_poll(&views, deadline, now)
            }
            (Phase::Returning, Event::Changed(Ok(()))) => {
                self.phase = Phase::Up {
                    deadline: now + self.settings.ready_timeout,
                };
                Self::run(Effect::Poll)
            }
            (Phase::Returning, Event::Changed(Err(error))) => self.fail_out_of_rotation(
                Stage::ReturningToTraffic,
                format!("returning to traffic failed: {error}"),
            ),
            (Phase::Up { deadline }, Event::Polled(views)) => {
                self.after_up_poll(&views, deadline, now)
            }
            (
                Phase::Restoring {
                    target,
                    outcome,
                    stage,
                    reason,
                },
                Event::Changed(result),
            ) => {
                self.result.state = match (target, &result) {
                    (AdminTarget::Ready, Ok(())) => ServerState::ReturnedUnrestarted,
                    (AdminTarget::Maint, Ok(())) => ServerState::OutOfRotation,
                    (_, _) => ServerState::Unknown,
                };
                let reason = match result {
                    Ok(()) => reason,
                    Err(error) => format!(
                        "{reason}; then putting it {} failed too, so its state is not confirmed: {error}",
                        target.as_str()
                    ),
                };
                let mut steps = Vec::new();
                if outcome == Outcome::Failed {
                    steps.push(RunStep::Report(Report::ServerFailed {
                        server: self.server(),
                        stage,
                        reason: reason.clone(),
                    }));
                }
                steps.push(self.finish(outcome, Some(reason)));
                steps
            }
            (Phase::BeforeDrainHook, Event::HookDone(Ok(()))) => {
                if self.interrupted() {
                    return vec![self.finish(
                        Outcome::Interrupted,
                        Some(format!(
                            "stopped by the operator before {} was drained",
                            self.server()
                        )),
                    )];
                }
                self.start_drain()
            }
            (Phase::BeforeDrainHook, Event::HookDone(Err(error))) => {
                let mut steps = self.note_unknown(&error);
                steps.extend(
                    self.fail_untouched(format!("its before_drain hook failed: {}", error.text())),
                );
                steps
            }
            (Phase::AfterRestartHook, Event::HookDone(Ok(()))) => self.start_probing(now),
            (Phase::AfterRestartHook, Event::HookDone(Err(CommandFailure::Unknown(error)))) => {
                self.stop = Stopping::AfterThisServer(format!(
                    "the outcome of its after_restart hook is unknown ({error}); {} stayed out of rotation until the hook could no longer run, was then settled by its health and HAProxy's checks, and the rollout stopped",
                    self.server()
                ));
                self.await_command(now)
            }
            (Phase::AfterRestartHook, Event::HookDone(Err(CommandFailure::Failed(error)))) => self
                .fail(
                    Stage::Hook(HookPoint::AfterRestart),
                    format!("its after_restart hook failed: {error}"),
                ),
            (Phase::AfterReadyHook, Event::HookDone(Ok(()))) => self.complete(),
            // The server passed its health check and HAProxy's: it stays in traffic.
            (Phase::AfterReadyHook, Event::HookDone(Err(error))) => {
                let reason = format!(
                    "its after_ready hook failed: {}; {} is back in traffic (it passed its checks)",
                    error.text(),
                    self.server()
                );
                let outcome = self.failure_outcome();
                let mut steps = self.note_unknown(&error);
                steps.push(RunStep::Report(Report::ServerFailed {
                    server: self.server(),
                    stage: Stage::Hook(HookPoint::AfterReady),
                    reason: reason.clone(),
                }));
                steps.push(self.finish(outcome, Some(reason)));
                steps
            }
            (phase, event) => {
                // An event the current phase does not expect is a driver bug; stop safely
                // rather than guess.
                let reason = format!("internal error: {event:?} in {phase:?}");
                self.phase = phase;
                self.fail_out_of_rotation(Stage::CheckingCapacity, reason)
            }
        }
    }

    fn start_drain(&mut self) -> Vec<RunStep> {
        self.phase = Phase::Draining;
        vec![
            self.stage(Stage::Draining),
            RunStep::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
        ]
    }

    fn has_hook(&self, point: HookPoint) -> bool {
        self.hooks_enabled && self.settings.hooks.contains(&point)
    }

    fn run_hook(&mut self, point: HookPoint, phase: Phase, now: Instant) -> Vec<RunStep> {
        self.phase = phase;
        self.sent = Some((CommandKind::Hook(point), now));
        vec![
            self.stage(Stage::Hook(point)),
            RunStep::Run(Effect::Hook(point, self.index)),
        ]
    }

    /// In traffic after a restart of an earlier run: confirmed once exactly UP everywhere.
    fn confirm_up(&mut self, restart_known: bool, now: Instant) -> Vec<RunStep> {
        self.result.state = ServerState::Unknown;
        self.restart_unknown = !restart_known;
        // Nothing to put back: it is in traffic. Its hooks ran, or were lost, with the
        // earlier run.
        self.hooks_enabled = false;
        self.phase = Phase::Up {
            deadline: now + self.settings.ready_timeout,
        };
        vec![
            self.stage(Stage::ReturningToTraffic),
            RunStep::Run(Effect::Poll),
        ]
    }

    /// Out of rotation already: wait for zero sessions on every HAProxy (the restart follows).
    fn wait_for_sessions(&mut self, now: Instant) -> Vec<RunStep> {
        self.phase = Phase::Sessions {
            deadline: now + self.settings.drain_timeout,
        };
        vec![
            self.stage(Stage::WaitingForSessions),
            RunStep::Run(Effect::Poll),
        ]
    }

    fn mark_drained(&mut self, now: Instant) {
        self.drained = Some(now);
        self.result.timings.draining = self
            .started
            .map(|started| now.saturating_duration_since(started));
    }

    fn start_restart(&mut self, now: Instant) -> Vec<RunStep> {
        self.result.state = ServerState::OutOfRotation;
        self.phase = Phase::Restarting;
        self.sent = Some((CommandKind::Restart, now));
        Self::run(Effect::Restart(self.index))
    }

    fn start_probing(&mut self, now: Instant) -> Vec<RunStep> {
        self.phase = Phase::Probing {
            deadline: now + self.settings.health_within,
            last_error: None,
        };
        vec![
            self.stage(Stage::WaitingForHealth),
            RunStep::Run(Effect::Probe(self.index)),
        ]
    }
}
