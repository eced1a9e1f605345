//! One server's way through the rollout, from the moment its capacity check passed (or an
//! interrupted run left it out of rotation) until it is back UP or left safely out: drain,
//! zero sessions, maintenance, restart, its own health check, HAProxy's checks, traffic.
//! The coordinator in `rollout.rs` decides when a server may start; several may be in
//! flight at once, each with one effect at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the host is asked whether a command whose outcome is unknown still runs.
const CHECK_EVERY: Duration = Duration::from_secs(1);

use super::{
    CommandFailure, CommandKind, CommandState, Effect, Event, MayRun, Outcome, Report,
    ServerResult, ServerState, Settings, Stage, or_none,
};
use crate::haproxy::{AdminTarget, ServerView};
use crate::plan::{HookPoint, OnDrainTimeout, ServerName};

/// Where a server's run begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
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

pub(super) enum Step {
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
enum Stop {
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
    start: Option<Start>,
    started: Option<Instant>,
    drained: Option<Instant>,
    restarted: Option<Instant>,
    healthy: Option<Instant>,
    /// The last command sent to its host, and when.
    sent: Option<(CommandKind, Instant)>,
    last_sessions: Option<u64>,
    /// Per HAProxy instance: since when every poll of it failed.
    unreadable_since: Vec<Option<Instant>>,
    stop: Stop,
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
    pub fn new(settings: Arc<Settings>, index: usize, start: Start, settling: bool) -> Self {
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
                Stop::Interrupted
            } else {
                Stop::No
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

    fn run(effect: Effect) -> Vec<Step> {
        vec![Step::Run(effect)]
    }

    fn stage(&self, stage: Stage) -> Step {
        Step::Report(Report::Stage {
            server: self.server(),
            stage,
        })
    }

    fn interrupted(&self) -> bool {
        self.stop == Stop::Interrupted
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
    pub fn begin(&mut self, now: Instant) -> Vec<Step> {
        self.started = Some(now);
        match self.start.take().unwrap_or(Start::Checked) {
            Start::ReturnUnrestarted => {
                self.result.state = ServerState::Unknown;
                self.return_unrestarted("settled after an interrupted rollout")
            }
            Start::AfterRestart { restart_known } => {
                self.result.state = ServerState::Unknown;
                self.restart_unknown = !restart_known;
                self.start_probing(now)
            }
            Start::ConfirmUp { restart_known } => self.confirm_up(restart_known, now),
            Start::RestartAfterSessions => {
                self.result.state = ServerState::OutOfRotation;
                self.wait_for_sessions(now)
            }
            Start::AwaitCommand {
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
            Start::Checked => {
                if self.has_hook(HookPoint::BeforeDrain) {
                    return self.run_hook(HookPoint::BeforeDrain, Phase::BeforeDrainHook, now);
                }
                self.start_drain()
            }
        }
    }

    /// Takes the result of its last effect and returns what to do next.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Step> {
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
                    Step::Run(Effect::Poll),
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
                let mut steps = vec![Step::Report(Report::SessionsCut {
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
                        self.stop = Stop::AfterThisServer(format!(
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
                    Step::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
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
                    steps.push(Step::Report(Report::ServerFailed {
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
                self.stop = Stop::AfterThisServer(format!(
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
                steps.push(Step::Report(Report::ServerFailed {
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

    fn start_drain(&mut self) -> Vec<Step> {
        self.phase = Phase::Draining;
        vec![
            self.stage(Stage::Draining),
            Step::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
        ]
    }

    fn has_hook(&self, point: HookPoint) -> bool {
        self.hooks_enabled && self.settings.hooks.contains(&point)
    }

    fn run_hook(&mut self, point: HookPoint, phase: Phase, now: Instant) -> Vec<Step> {
        self.phase = phase;
        self.sent = Some((CommandKind::Hook(point), now));
        vec![
            self.stage(Stage::Hook(point)),
            Step::Run(Effect::Hook(point, self.index)),
        ]
    }

    /// The server's view on every HAProxy and backend. An unreadable HAProxy is an error
    /// while it has been unreadable for less than its `unreachable_timeout`, and stops the
    /// run (`Err(Err(...))`) after.
    fn views_of<'v>(
        &mut self,
        views: &'v [Result<Vec<ServerView>, String>],
        now: Instant,
    ) -> Result<Vec<&'v ServerView>, Result<String, String>> {
        let server = self.server();
        let mut found = Vec::new();
        let mut problem = None;
        for (instance, result) in views.iter().enumerate() {
            let views = match result {
                Ok(views) => {
                    self.unreadable_since[instance] = None;
                    views
                }
                Err(error) => {
                    let since = *self.unreadable_since[instance].get_or_insert(now);
                    let limit = self.settings.unreachable_timeouts[instance];
                    if now.saturating_duration_since(since) >= limit {
                        return Err(Err(format!(
                            "{} has been unreachable for {}s (its unreachable_timeout): {error}",
                            self.settings.haproxy(instance),
                            limit.as_secs()
                        )));
                    }
                    problem = Some(format!("{}: {error}", self.settings.haproxy(instance)));
                    continue;
                }
            };
            for backend in self.settings.topology.backends(instance, self.index) {
                match views
                    .iter()
                    .find(|view| view.backend == backend.as_str() && view.server == server.as_str())
                {
                    Some(view) => found.push(view),
                    None => {
                        return Err(Err(format!(
                            "{} no longer has {backend}/{server}",
                            self.settings.haproxy(instance)
                        )));
                    }
                }
            }
        }
        match problem {
            Some(problem) => Err(Ok(problem)),
            None => Ok(found),
        }
    }

    fn after_sessions_poll(
        &mut self,
        views: &[Result<Vec<ServerView>, String>],
        deadline: Instant,
        now: Instant,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        match self.views_of(views, now) {
            Ok(found) => {
                let sessions: u64 = found.iter().map(|view| view.sessions).sum();
                if sessions == 0 {
                    self.mark_drained(now);
                    self.phase = Phase::EnteringMaint;
                    steps.push(self.stage(Stage::Restarting));
                    steps.push(Step::Run(Effect::SetState(
                        self.server(),
                        AdminTarget::Maint,
                    )));
                    return steps;
                }
                if self.last_sessions != Some(sessions) {
                    self.last_sessions = Some(sessions);
                    steps.push(Step::Report(Report::SessionsLeft {
                        server: self.server(),
                        sessions,
                    }));
                }
                if now >= deadline {
                    match self.settings.on_drain_timeout {
                        OnDrainTimeout::Fail => {
                            steps.extend(self.restore(
                                AdminTarget::Ready,
                                Stage::WaitingForSessions,
                                format!(
                                    "{sessions} session(s) still open after drain.timeout ({}s); returned to traffic unrestarted (on_timeout: fail)",
                                    self.settings.drain_timeout.as_secs()
                                ),
                            ));
                        }
                        OnDrainTimeout::Force => {
                            self.mark_drained(now);
                            self.phase = Phase::ForcingMaint { sessions };
                            steps.push(self.stage(Stage::Restarting));
                            steps.push(Step::Run(Effect::SetState(
                                self.server(),
                                AdminTarget::Maint,
                            )));
                        }
                    }
                    return steps;
                }
            }
            Err(Err(fatal)) => {
                return self.restore(
                    AdminTarget::Ready,
                    Stage::WaitingForSessions,
                    format!("could not confirm 0 sessions: {fatal}"),
                );
            }
            Err(Ok(error)) => {
                if now >= deadline {
                    return self.restore(
                        AdminTarget::Ready,
                        Stage::WaitingForSessions,
                        format!("could not confirm 0 sessions before drain.timeout: {error}"),
                    );
                }
                // The driver reports an unreachable HAProxy once, and when it is back.
            }
        }
        self.phase = Phase::Sessions { deadline };
        steps.push(Step::Run(Effect::Wait));
        steps
    }

    /// In traffic after a restart of an earlier run: confirmed once exactly UP everywhere.
    fn confirm_up(&mut self, restart_known: bool, now: Instant) -> Vec<Step> {
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
            Step::Run(Effect::Poll),
        ]
    }

    /// Out of rotation already: wait for zero sessions on every HAProxy (the restart follows).
    fn wait_for_sessions(&mut self, now: Instant) -> Vec<Step> {
        self.phase = Phase::Sessions {
            deadline: now + self.settings.drain_timeout,
        };
        vec![
            self.stage(Stage::WaitingForSessions),
            Step::Run(Effect::Poll),
        ]
    }

    fn mark_drained(&mut self, now: Instant) {
        self.drained = Some(now);
        self.result.timings.draining = self
            .started
            .map(|started| now.saturating_duration_since(started));
    }

    fn start_restart(&mut self, now: Instant) -> Vec<Step> {
        self.result.state = ServerState::OutOfRotation;
        self.phase = Phase::Restarting;
        self.sent = Some((CommandKind::Restart, now));
        Self::run(Effect::Restart(self.index))
    }

    /// The command last sent may still run until its remote bound: what it is and until when.
    fn may_run(&self) -> Option<MayRun> {
        self.sent.map(|(what, sent)| MayRun {
            what,
            until: sent + self.settings.bound(what),
        })
    }

    /// A command whose outcome is unknown: it is reported as possibly running (and the
    /// summary says until when).
    fn note_unknown(&mut self, error: &CommandFailure) -> Vec<Step> {
        let CommandFailure::Unknown(_) = error else {
            return Vec::new();
        };
        let Some(may_run) = self.may_run() else {
            return Vec::new();
        };
        self.result.may_run = Some(may_run);
        vec![Step::Report(Report::CommandMayRun {
            server: self.server(),
            what: may_run.what,
            until: may_run.until,
        })]
    }

    /// Property 9: the last command's outcome is unknown. The server stays in maintenance
    /// until its host shows the command ended, or its remote bound passed; then it is
    /// settled by its health and HAProxy's checks.
    fn await_command(&mut self, now: Instant) -> Vec<Step> {
        let Some(may_run) = self.may_run() else {
            return self.start_probing(now);
        };
        self.wait_for_command(may_run, now)
    }

    fn wait_for_command(&mut self, may_run: MayRun, now: Instant) -> Vec<Step> {
        self.result.may_run = Some(may_run);
        self.phase = Phase::CommandMayRun {
            what: may_run.what,
            until: may_run.until,
            next_check: now + CHECK_EVERY,
        };
        vec![
            Step::Report(Report::CommandMayRun {
                server: self.server(),
                what: may_run.what,
                until: may_run.until,
            }),
            Step::Run(Effect::CheckCommand(self.index)),
        ]
    }

    fn after_command_check(
        &mut self,
        event: Event,
        (what, until, next_check): (CommandKind, Instant, Instant),
        now: Instant,
    ) -> Vec<Step> {
        let ended = |run: &mut Self, proven: bool| {
            run.result.may_run = None;
            let mut steps = vec![Step::Report(Report::CommandEnded {
                server: run.server(),
                what,
                proven,
            })];
            run.secure = None;
            steps.extend(match run.after_command {
                AfterCommand::Probe { restart_known } => {
                    run.restart_unknown |= !restart_known;
                    run.start_probing(now)
                }
                AfterCommand::RestartAfterSessions => run.wait_for_sessions(now),
                AfterCommand::ReturnUnrestarted => {
                    run.return_unrestarted("settled after an interrupted rollout")
                }
                AfterCommand::ConfirmUp { restart_known } => run.confirm_up(restart_known, now),
                AfterCommand::Queue => {
                    run.result.state = ServerState::Untouched;
                    let mut done = run.finish(Outcome::Success, None);
                    if let Step::Done(done) = &mut done {
                        done.requeue = true;
                    }
                    vec![done]
                }
                AfterCommand::Leave(state) => {
                    run.result.state = state;
                    vec![run.finish(Outcome::Success, None)]
                }
            });
            steps
        };
        match event {
            Event::CommandChecked(Ok(CommandState::Ended)) => ended(self, true),
            _ if now >= until => ended(self, false),
            // Still running, or the host cannot tell: out of traffic before anything else.
            Event::CommandChecked(_) if self.secure.is_some() => {
                let target = self.secure.take().unwrap_or(AdminTarget::Maint);
                self.phase = Phase::Securing {
                    may_run: MayRun { what, until },
                    target,
                };
                vec![
                    self.stage(Stage::Draining),
                    Step::Run(Effect::SetState(self.server(), target)),
                ]
            }
            Event::Waited if now >= next_check => {
                self.phase = Phase::CommandMayRun {
                    what,
                    until,
                    next_check: now + CHECK_EVERY,
                };
                Self::run(Effect::CheckCommand(self.index))
            }
            _ => {
                self.phase = Phase::CommandMayRun {
                    what,
                    until,
                    next_check,
                };
                Self::run(Effect::Wait)
            }
        }
    }

    fn start_probing(&mut self, now: Instant) -> Vec<Step> {
        self.phase = Phase::Probing {
            deadline: now + self.settings.health_within,
            last_error: None,
        };
        vec![
            self.stage(Stage::WaitingForHealth),
            Step::Run(Effect::Probe(self.index)),
        ]
    }

    /// The server's views for a wait that only ends on a condition (HAProxy's checks, UP):
    /// `Err` carries what to do instead, when an HAProxy cannot be read. Before `deadline`
    /// that is waiting once more in `phase`; after it, or past an unreachable deadline, the
    /// server is put out of rotation and the run stops.
    fn awaited_views<'v>(
        &mut self,
        views: &'v [Result<Vec<ServerView>, String>],
        (deadline, now): (Instant, Instant),
        stage: Stage,
        what: &str,
        phase: Phase,
    ) -> Result<Vec<&'v ServerView>, Vec<Step>> {
        match self.views_of(views, now) {
            Ok(found) => Ok(found),
            Err(Err(fatal)) => Err(self.fail_out_of_rotation(stage, fatal)),
            Err(Ok(error)) if now >= deadline => {
                Err(self.fail_out_of_rotation(stage, format!("could not confirm {what}: {error}")))
            }
            // Not yet past its deadline: the driver reports an unreachable HAProxy once, and
            // when it is back.
            Err(Ok(_)) => {
                self.phase = phase;
                Err(vec![Step::Run(Effect::Wait)])
            }
        }
    }

    /// HAProxy's own checks passed after the restart: exactly DRAIN with a passing check
    /// (or, for a server HAProxy does not check, running) on every HAProxy and backend.
    fn after_checks_poll(
        &mut self,
        views: &[Result<Vec<ServerView>, String>],
        deadline: Instant,
        now: Instant,
    ) -> Vec<Step> {
        let phase = Phase::Checks { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::WaitingForChecks,
            "HAProxy's checks",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(steps) => return steps,
        };
        let confirmed = found.iter().all(|view| {
            view.admin.draining()
                && !view.admin.in_maintenance()
                && if view.is_checked() {
                    view.status == "DRAIN" && view.last_check_passed()
                } else {
                    view.operational == crate::haproxy::OpState::Running
                }
        });
        if confirmed {
            self.phase = Phase::Returning;
            return vec![
                self.stage(Stage::ReturningToTraffic),
                Step::Run(Effect::SetState(self.server(), AdminTarget::Ready)),
            ];
        }
        if now >= deadline {
            let statuses: Vec<String> = found
                .iter()
                .map(|view| {
                    format!(
                        "{}/{} {} (check {})",
                        view.backend,
                        view.server,
                        view.status,
                        or_none(&view.check_status)
                    )
                })
                .collect();
            return self.fail_out_of_rotation(
                Stage::WaitingForChecks,
                format!(
                    "HAProxy's checks did not pass within ready.timeout ({}s): {}",
                    self.settings.ready_timeout.as_secs(),
                    statuses.join(", ")
                ),
            );
        }
        self.phase = phase;
        Self::run(Effect::Wait)
    }

    fn after_up_poll(
        &mut self,
        views: &[Result<Vec<ServerView>, String>],
        deadline: Instant,
        now: Instant,
    ) -> Vec<Step> {
        let phase = Phase::Up { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::ReturningToTraffic,
            "it is UP",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(steps) => return steps,
        };
        if found
            .iter()
            .all(|view| view.admin.ready() && view.is_fully_up())
        {
            self.result.state =
                if matches!(self.stop, Stop::AfterThisServer(_)) || self.restart_unknown {
                    ServerState::BackRestartUnknown
                } else {
                    ServerState::Done
                };
            self.result.timings.haproxy = self
                .healthy
                .map(|healthy| now.saturating_duration_since(healthy));
            if self.has_hook(HookPoint::AfterReady) {
                return self.run_hook(HookPoint::AfterReady, Phase::AfterReadyHook, now);
            }
            return self.complete();
        }
        if now >= deadline {
            let statuses: Vec<String> = found
                .iter()
                .map(|view| format!("{}/{} {}", view.backend, view.server, view.status))
                .collect();
            return self.fail_out_of_rotation(
                Stage::ReturningToTraffic,
                format!(
                    "not exactly UP within ready.timeout: {}",
                    statuses.join(", ")
                ),
            );
        }
        self.phase = phase;
        Self::run(Effect::Wait)
    }

    /// The server is back and every hook passed.
    fn complete(&mut self) -> Vec<Step> {
        let done = Step::Report(Report::ServerDone {
            server: self.server(),
            timings: self.result.timings,
        });
        let finish = match &self.stop {
            Stop::AfterThisServer(reason) => {
                let reason = reason.clone();
                self.finish(Outcome::Failed, Some(reason))
            }
            Stop::No | Stop::Interrupted => self.finish(Outcome::Success, None),
        };
        vec![done, finish]
    }

    /// What a stop now means for the outcome: the operator's interrupt wins.
    fn failure_outcome(&self) -> Outcome {
        if self.interrupted() {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        }
    }

    /// The server was never changed: nothing to restore.
    fn fail_untouched(&mut self, reason: String) -> Vec<Step> {
        let outcome = self.failure_outcome();
        vec![
            Step::Report(Report::ServerFailed {
                server: self.server(),
                stage: Stage::CheckingCapacity,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// The server stays where it is (out of rotation): report and stop.
    fn fail(&mut self, stage: Stage, reason: String) -> Vec<Step> {
        self.result.state = ServerState::OutOfRotation;
        let outcome = self.failure_outcome();
        vec![
            Step::Report(Report::ServerFailed {
                server: self.server(),
                stage,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// Puts the server in maintenance everywhere (it may be half-way back), then stops.
    fn fail_out_of_rotation(&mut self, stage: Stage, reason: String) -> Vec<Step> {
        self.restore(AdminTarget::Maint, stage, reason)
    }

    /// Back to traffic without a restart, then stop (an interrupt before the restart).
    fn return_unrestarted(&mut self, why: &str) -> Vec<Step> {
        self.phase = Phase::Restoring {
            target: AdminTarget::Ready,
            outcome: Outcome::Interrupted,
            stage: Stage::Draining,
            reason: format!("{why}; {} returned to traffic unrestarted", self.server()),
        };
        Self::run(Effect::SetState(self.server(), AdminTarget::Ready))
    }

    fn restore(&mut self, target: AdminTarget, stage: Stage, reason: String) -> Vec<Step> {
        self.phase = Phase::Restoring {
            target,
            outcome: self.failure_outcome(),
            stage,
            reason,
        };
        Self::run(Effect::SetState(self.server(), target))
    }

    /// Stop at the next safe point, delivered between two effects: a server only drained
    /// goes back to traffic unrestarted; a restart in progress is let finish, and the server
    /// returns only once its health and HAProxy's checks pass (else it stays out, as on any
    /// failure). Empty: the next event continues, and the stop takes effect at the next
    /// safe point.
    pub fn interrupt(&mut self) -> Vec<Step> {
        if self.stop == Stop::No {
            self.stop = Stop::Interrupted;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Sessions { .. } => self.return_unrestarted("interrupted while draining"),
            other => {
                self.phase = other;
                Vec::new()
            }
        }
    }

    /// Stop now (`why`: `abort --now`, an internal error): the effect in flight was
    /// abandoned; a touched server is left out of rotation (maintenance), whatever it was
    /// doing.
    pub fn stop_now(&mut self, why: &str) -> Vec<Step> {
        self.stop = Stop::Interrupted;
        // A command in flight is abandoned, not stopped: it may still run until its bound.
        // (Waiting for one, the summary already says until when.)
        if matches!(
            self.phase,
            Phase::Restarting
                | Phase::BeforeDrainHook
                | Phase::AfterRestartHook
                | Phase::AfterReadyHook
        ) {
            self.result.may_run = self.may_run();
        }
        if self.holding.is_none() && matches!(self.phase, Phase::CommandMayRun { .. }) {
            // Waiting for an earlier run's hook, in traffic: nothing of ours to undo.
            self.phase = Phase::Idle;
            return vec![self.finish(
                Outcome::Interrupted,
                Some(format!("{why}; {} stays in traffic", self.server())),
            )];
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle | Phase::BeforeDrainHook | Phase::Finished => {
                vec![self.finish(
                    Outcome::Interrupted,
                    Some(format!("{why} before {} was drained", self.server())),
                )]
            }
            // Back in traffic and confirmed UP: taking it out would only cost capacity.
            Phase::AfterReadyHook => vec![self.finish(
                Outcome::Interrupted,
                Some(format!(
                    "{why} during the after_ready hook of {}, which stays in traffic",
                    self.server()
                )),
            )],
            _ => {
                self.phase = Phase::Restoring {
                    target: AdminTarget::Maint,
                    outcome: Outcome::Interrupted,
                    stage: Stage::Restarting,
                    reason: format!("{why}; {} left out of rotation", self.server()),
                };
                Self::run(Effect::SetState(self.server(), AdminTarget::Maint))
            }
        }
    }

    /// The run ends. (The `on_failure` hook is the coordinator's: once per rollout.)
    fn finish(&mut self, outcome: Outcome, reason: Option<String>) -> Step {
        self.phase = Phase::Finished;
        Step::Done(Done {
            outcome,
            reason,
            result: self.result.clone(),
            requeue: false,
        })
    }
}
