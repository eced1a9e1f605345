//! One server's way through the rollout, from the moment its capacity check passed (or an
//! interrupted run left it out of rotation) until it is back UP or left safely out: drain,
//! zero sessions, maintenance, restart, its own health check, HAProxy's checks, traffic.
//! The coordinator in `rollout.rs` decides when a server may start; several may be in
//! flight at once, each with one effect at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the host is asked whether a command whose outcome is unknown still runs.
mod commands;
mod draining;
mod polls;
mod restarting;
mod returning;
mod stops;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The first retry of a health probe that failed after a restart.
const FIRST_RETRY: Duration = Duration::from_millis(10);

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
        /// How long to wait before the next probe: doubling from `FIRST_RETRY` up to one
        /// poll interval, since an application usually listens within moments of its
        /// restart command's return.
        retry: Duration,
    },
    /// Healthy: reading what it runs until it answers what is expected, by `deadline`
    /// (its health deadline).
    Verifying {
        deadline: Instant,
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
    /// The corrective change failed (or was not made: its record could not be written):
    /// HAProxy is read once to tell where the server is.
    Confirming {
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
    /// The last reason a wait was said to go on, in which stage.
    last_wait: Option<(Stage, String)>,
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
                previous: None,
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
            last_wait: None,
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
            within: self.settings.within(stage),
        })
    }

    /// Why a wait goes on, when that changed since the last time it was said.
    fn waiting(&mut self, stage: Stage, last: String) -> Option<RunStep> {
        if self
            .last_wait
            .as_ref()
            .is_some_and(|(seen_stage, seen)| *seen_stage == stage && *seen == last)
        {
            return None;
        }
        self.last_wait = Some((stage, last.clone()));
        Some(RunStep::Report(Report::Waiting {
            server: self.server(),
            stage,
            last,
        }))
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
            } | Phase::Confirming {
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
            | Phase::Probing { .. }
            | Phase::Verifying { .. } => AdminTarget::Maint,
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
            // Every wait for HAProxy's state ends the same way: poll again.
            (
                phase @ (Phase::Sessions { .. } | Phase::Checks { .. } | Phase::Up { .. }),
                Event::Waited,
            ) => {
                self.phase = phase;
                Self::run(Effect::Poll)
            }
            (
                phase @ (Phase::Draining
                | Phase::Sessions { .. }
                | Phase::ForcingMaint { .. }
                | Phase::ForcingShutdown { .. }
                | Phase::EnteringMaint
                | Phase::Securing { .. }
                | Phase::BeforeDrainHook),
                event,
            ) => self.while_draining(phase, event, now),
            (
                phase @ (Phase::Restarting
                | Phase::CommandMayRun { .. }
                | Phase::Probing { .. }
                | Phase::Verifying { .. }
                | Phase::AfterRestartHook),
                event,
            ) => self.while_restarting(phase, event, now),
            (
                phase @ (Phase::LeavingMaint
                | Phase::Checks { .. }
                | Phase::Returning
                | Phase::Up { .. }
                | Phase::AfterReadyHook),
                event,
            ) => self.while_returning(phase, event, now),
            (
                Phase::Restoring {
                    target,
                    outcome,
                    stage,
                    reason,
                },
                Event::Changed(Err(error)),
            ) => {
                self.phase = Phase::Confirming {
                    target,
                    outcome,
                    stage,
                    reason: format!(
                        "{reason}; then putting it {} failed too: {error}",
                        target.as_str()
                    ),
                };
                Self::run(Effect::Poll)
            }
            (
                Phase::Restoring {
                    target,
                    outcome,
                    stage,
                    reason,
                },
                Event::Changed(Ok(())),
            ) => {
                self.result.state = match target {
                    AdminTarget::Ready => ServerState::ReturnedUnrestarted,
                    _ => ServerState::OutOfRotation,
                };
                self.end_restoring(outcome, stage, reason)
            }
            (
                Phase::Confirming {
                    target,
                    outcome,
                    stage,
                    reason,
                },
                Event::Polled(views),
            ) => {
                let shown = self
                    .views_of(&views, now)
                    .ok()
                    .filter(|found| !found.is_empty());
                let confirmed = shown.as_ref().is_some_and(|found| {
                    found.iter().all(|view| match target {
                        AdminTarget::Ready => view.admin.ready(),
                        _ => view.admin.in_maintenance(),
                    })
                });
                self.result.state = match (confirmed, target) {
                    (true, AdminTarget::Ready) => ServerState::ReturnedUnrestarted,
                    (true, _) => ServerState::OutOfRotation,
                    (false, _) => ServerState::Unknown,
                };
                let reason = if confirmed {
                    format!("{reason}; HAProxy shows it {} already", target.as_str())
                } else {
                    format!("{reason}, so its state is not confirmed")
                };
                self.end_restoring(outcome, stage, reason)
            }
            (phase, event) => self.unexpected(phase, event),
        }
    }

    /// The run ends after its corrective change (or the reading that confirmed where the
    /// server is).
    fn end_restoring(&mut self, outcome: Outcome, stage: Stage, reason: String) -> Vec<RunStep> {
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

    /// An event the current phase does not expect is a driver bug; stop safely rather
    /// than guess.
    fn unexpected(&mut self, phase: Phase, event: Event) -> Vec<RunStep> {
        let reason = format!("internal error: {event:?} in {phase:?}");
        self.phase = phase;
        self.fail_out_of_rotation(Stage::CheckingCapacity, reason)
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
            retry: FIRST_RETRY.min(self.settings.poll_interval),
        };
        vec![
            self.stage(Stage::WaitingForHealth),
            RunStep::Run(Effect::Probe(self.index)),
        ]
    }
}
