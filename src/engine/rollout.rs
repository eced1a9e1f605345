//! The rollout state machine: takes observations (server views, command results, restart
//! and health outcomes, the time) and returns what to do next. No I/O, no clock reads.
//!
//! One server at a time, in plan order, through the sequence of `steps.rs`. The driver runs
//! exactly one effect at a time and feeds its result back as the next event.

use std::time::{Duration, Instant};

use super::topology::Topology;
use crate::haproxy::{AdminTarget, ServerView};
use crate::plan::{CanaryPause, HookPoint, OnDrainTimeout, Plan, ServerName};

/// What the driver reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    /// Server views of every HAProxy, in plan order; an unreadable one carries its error.
    Polled(Vec<Result<Vec<ServerView>, String>>),
    /// The result of a state change or session shutdown on every HAProxy and backend.
    Changed(Result<(), String>),
    Restarted(Result<(), RestartFailure>),
    Probed(Result<(), String>),
    /// A hook finished: `Err` carries why it failed, with its output.
    HookDone(Result<(), String>),
    /// One poll interval passed.
    Waited,
    /// Stop at the next safe point (`abort`, SIGINT, SIGTERM).
    Interrupted,
    /// Stop now (`abort --now`, a second SIGINT): the effect in flight was abandoned.
    AbortNow,
}

/// Why a restart did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartFailure {
    /// It ran and failed: non-zero exit, timeout.
    Failed(String),
    /// The connection was lost: it may or may not have run. Health and HAProxy's checks
    /// settle it.
    Unknown(String),
}

/// Something the driver must do, then report back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Read server views from every HAProxy.
    Poll,
    /// `set server B/S state X` on every HAProxy and every backend.
    SetState(ServerName, AdminTarget),
    /// `shutdown sessions server B/S` on every HAProxy and backend.
    ShutdownSessions(ServerName),
    /// Run the restart command of the server at this plan index.
    Restart(usize),
    /// Ask the health URL of the server at this plan index once.
    Probe(usize),
    /// Run a hook for the server at this plan index.
    Hook(HookPoint, usize),
    /// Wait one poll interval.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Effect),
    Report(Report),
    Finish(Finish),
}

/// The phases a server goes through, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    CheckingCapacity,
    Draining,
    WaitingForSessions,
    Restarting,
    WaitingForHealth,
    WaitingForChecks,
    ReturningToTraffic,
    Hook(HookPoint),
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CheckingCapacity => "checking capacity",
            Stage::Draining => "draining",
            Stage::WaitingForSessions => "waiting for 0 sessions",
            Stage::Restarting => "restarting",
            Stage::WaitingForHealth => "waiting for its health endpoint",
            Stage::WaitingForChecks => "waiting for HAProxy's checks",
            Stage::ReturningToTraffic => "returning to traffic",
            Stage::Hook(HookPoint::BeforeDrain) => "running its before_drain hook",
            Stage::Hook(HookPoint::AfterRestart) => "running its after_restart hook",
            Stage::Hook(HookPoint::AfterReady) => "running its after_ready hook",
            Stage::Hook(HookPoint::OnFailure) => "running its on_failure hook",
        }
    }
}

/// Where a server stands at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Never touched by this rollout.
    Untouched,
    /// Restarted and back in traffic, UP on every HAProxy.
    Done,
    /// Restarted by an earlier run of this rollout (before an interruption).
    DoneEarlier,
    /// Back in traffic and proven healthy, but whether the restart ran is unknown.
    BackRestartUnknown,
    /// Drained, then returned to traffic without a restart.
    ReturnedUnrestarted,
    /// Out of rotation (maintenance) on every HAProxy.
    OutOfRotation,
    /// The rollout could not confirm its state (a command failed); see the reason.
    Unknown,
}

/// How long each phase took for one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub draining: Option<Duration>,
    pub restarting: Option<Duration>,
    pub health: Option<Duration>,
    pub haproxy: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerResult {
    pub server: ServerName,
    pub state: ServerState,
    /// Runtime-API commands that put it back into traffic, when it is out.
    pub restore: Vec<String>,
    pub timings: Timings,
    pub sessions_cut: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Stage {
        server: ServerName,
        stage: Stage,
    },
    SessionsLeft {
        server: ServerName,
        sessions: u64,
    },
    SessionsCut {
        server: ServerName,
        sessions: u64,
    },
    /// A poll could not read one HAProxy; polling goes on until its unreachable deadline.
    PollFailed {
        error: String,
    },
    ServerDone {
        server: ServerName,
        timings: Timings,
    },
    ServerFailed {
        server: ServerName,
        stage: Stage,
        reason: String,
    },
    /// HAProxy reloaded (the driver saw its process change) and the state the server in
    /// flight must have was put back.
    Reloaded {
        haproxy: String,
        pid: u32,
        reapplied: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed,
    Interrupted,
    /// The canaries are back; the rest waits for `resume` (`canary.pause: manual`).
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub outcome: Outcome,
    /// What went wrong, for a failed or interrupted rollout.
    pub reason: Option<String>,
    pub servers: Vec<ServerResult>,
}

/// Where to start when settling the server an interrupted rollout left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Never restarted: return it to traffic.
    ReturnUnrestarted,
    /// The restart was attempted: return it only once its health and HAProxy's checks pass.
    AfterRestart,
}

/// The settings the engine decides with, taken from the plan.
#[derive(Debug, Clone)]
struct Settings {
    servers: Vec<ServerName>,
    /// Which backends each server is in, on each HAProxy.
    topology: Topology,
    min_up: usize,
    drain_timeout: Duration,
    on_drain_timeout: OnDrainTimeout,
    health_within: Duration,
    ready_timeout: Duration,
    /// Per HAProxy instance: how long it may stay unreadable before the rollout stops.
    unreachable_timeouts: Vec<Duration>,
    /// The hook points the plan has a command for.
    hooks: Vec<HookPoint>,
    /// How many servers, from the start of the plan, are canaries, and the pause after them.
    canary: Option<(usize, CanaryPause)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Capacity,
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
    Restarting,
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
    /// The canaries are back: wait until `until`, then check them.
    CanaryWait {
        until: Instant,
    },
    CanaryCheck,
    /// Asking the health URL of each canary in turn (an index into the plan's servers).
    CanaryProbe {
        next: usize,
    },
    /// The failure hook runs; then the rollout finishes with this.
    OnFailureHook {
        outcome: Outcome,
        reason: Option<String>,
    },
    /// A corrective change after a failure or an abort; then the rollout finishes.
    Restoring {
        target: AdminTarget,
        outcome: Outcome,
        stage: Stage,
        reason: String,
    },
    Finished,
}

/// How the rollout is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Keep going.
    No,
    /// The operator asked to stop at the next safe point.
    Interrupted,
    /// Settle the server in flight, then stop with this failure (e.g. the SSH connection
    /// was lost during its restart).
    AfterThisServer(String),
}

pub struct Rollout {
    settings: Settings,
    results: Vec<ServerResult>,
    /// Servers this run rolls (false: done before an interruption).
    rolls: Vec<bool>,
    current: usize,
    phase: Phase,
    settle: Option<Settle>,
    /// A server an interrupted run left in maintenance: redone from its restart.
    restart_directly: Option<usize>,
    /// When the current server's phases started.
    started: Option<Instant>,
    drained: Option<Instant>,
    restarted: Option<Instant>,
    healthy: Option<Instant>,
    last_sessions: Option<u64>,
    /// Per HAProxy instance: since when every poll of it failed.
    unreadable_since: Vec<Option<Instant>>,
    stop: Stop,
    /// Settling after an interrupted rollout runs no hooks: it only puts a server right.
    hooks_enabled: bool,
    /// The canary pause is behind us (or there is none).
    canary_passed: bool,
}

impl Rollout {
    pub fn new(plan: &Plan, topology: Topology) -> Self {
        let settings = Settings {
            servers: plan
                .servers
                .iter()
                .map(|server| server.name.clone())
                .collect(),
            topology,
            min_up: plan.capacity.min_up as usize,
            drain_timeout: plan.drain.timeout,
            on_drain_timeout: plan.drain.on_timeout,
            health_within: plan.health.within,
            ready_timeout: plan.ready.timeout,
            unreachable_timeouts: plan
                .haproxy
                .iter()
                .map(|instance| instance.unreachable_timeout)
                .collect(),
            hooks: [
                HookPoint::BeforeDrain,
                HookPoint::AfterRestart,
                HookPoint::AfterReady,
                HookPoint::OnFailure,
            ]
            .into_iter()
            .filter(|point| plan.hooks.get(*point).is_some())
            .collect(),
            canary: plan
                .canary
                .as_ref()
                .map(|canary| (canary.servers, canary.pause)),
        };
        let results = settings
            .servers
            .iter()
            .map(|server| ServerResult {
                server: server.clone(),
                state: ServerState::Untouched,
                restore: Vec::new(),
                timings: Timings::default(),
                sessions_cut: None,
            })
            .collect();
        Rollout {
            rolls: vec![true; settings.servers.len()],
            unreadable_since: vec![None; settings.unreachable_timeouts.len()],
            settings,
            results,
            current: 0,
            phase: Phase::Idle,
            settle: None,
            restart_directly: None,
            started: None,
            drained: None,
            restarted: None,
            healthy: None,
            last_sessions: None,
            stop: Stop::No,
            hooks_enabled: true,
            canary_passed: plan.canary.is_none(),
        }
    }

    /// Continues an interrupted rollout: the servers at `done` were restarted before. A
    /// server it left in maintenance (`in_maintenance`) is redone from its restart, without
    /// leaving maintenance first.
    pub fn resume(
        plan: &Plan,
        topology: Topology,
        done: &[usize],
        in_maintenance: Option<usize>,
    ) -> Self {
        let mut rollout = Rollout::new(plan, topology);
        for index in done {
            rollout.rolls[*index] = false;
            rollout.results[*index].state = ServerState::DoneEarlier;
        }
        rollout.restart_directly = in_maintenance;
        // Canaries done before the interruption (or the pause) are not paused for again.
        if let Some((canaries, _)) = rollout.settings.canary {
            rollout.canary_passed |= done.len() >= canaries;
        }
        rollout
    }

    /// Settles the one server an interrupted rollout left out of rotation, then stops.
    pub fn settle(
        plan: &Plan,
        topology: Topology,
        done: &[usize],
        server: usize,
        from: Settle,
    ) -> Self {
        let mut rollout = Rollout::resume(plan, topology, done, None);
        rollout.current = server;
        rollout.settle = Some(from);
        rollout.stop = Stop::Interrupted;
        rollout.hooks_enabled = false;
        rollout
    }

    fn server(&self) -> ServerName {
        self.settings.servers[self.current].clone()
    }

    fn run(effect: Effect) -> Vec<Action> {
        vec![Action::Run(effect)]
    }

    fn stage(&self, stage: Stage) -> Action {
        Action::Report(Report::Stage {
            server: self.server(),
            stage,
        })
    }

    fn interrupted(&self) -> bool {
        self.stop == Stop::Interrupted
    }

    /// The server in flight is draining and not yet restarted: sessions held by an old
    /// HAProxy process (after a reload) still matter.
    pub fn draining_before_restart(&self) -> bool {
        matches!(self.phase, Phase::Draining | Phase::Sessions { .. })
    }

    /// The admin state the server in flight must have now: what a reload of HAProxy drops
    /// and the driver puts back. `None` when nothing this rollout set is in force.
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
            _ => return None,
        };
        Some((self.server(), target))
    }

    /// Takes one event and returns what to do next.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Interrupted => return self.interrupt(),
            Event::AbortNow => return self.abort_now(),
            _ => {}
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match (phase, event) {
            (Phase::Idle, Event::Start) => self.begin_server(now),
            (Phase::Capacity, Event::Polled(views)) => self.after_capacity_poll(&views),
            (Phase::Draining, Event::Changed(Ok(()))) => {
                self.results[self.current].state = ServerState::Unknown;
                if self.interrupted() {
                    return self.return_unrestarted("interrupted while draining");
                }
                self.phase = Phase::Sessions {
                    deadline: now + self.settings.drain_timeout,
                };
                let mut actions = vec![self.stage(Stage::WaitingForSessions)];
                actions.extend(Self::run(Effect::Poll));
                actions
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
                self.results[self.current].sessions_cut = Some(sessions);
                let mut actions = vec![Action::Report(Report::SessionsCut {
                    server: self.server(),
                    sessions,
                })];
                if self.interrupted() {
                    actions.extend(self.return_unrestarted("interrupted before the restart"));
                } else {
                    actions.extend(self.start_restart());
                }
                actions
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
                self.start_restart()
            }
            (Phase::EnteringMaint, Event::Changed(Err(error))) => {
                self.fail_out_of_rotation(Stage::Restarting, format!("maintenance failed: {error}"))
            }
            (Phase::Restarting, Event::Restarted(result)) => {
                match result {
                    Ok(()) => {}
                    Err(RestartFailure::Failed(error)) => {
                        return self
                            .fail(Stage::Restarting, format!("the restart failed: {error}"));
                    }
                    Err(RestartFailure::Unknown(error)) => {
                        self.stop = Stop::AfterThisServer(format!(
                            "the restart's outcome is unknown ({error}); {} was settled by its health and HAProxy's checks, and the rollout stopped",
                            self.server()
                        ));
                    }
                }
                self.restarted = Some(now);
                self.results[self.current].timings.restarting = self
                    .drained
                    .map(|drained| now.saturating_duration_since(drained));
                self.after_restart(now)
            }
            (Phase::Probing { .. }, Event::Probed(Ok(()))) => {
                self.healthy = Some(now);
                self.results[self.current].timings.health = self
                    .restarted
                    .map(|restarted| now.saturating_duration_since(restarted));
                self.phase = Phase::LeavingMaint;
                let mut actions = vec![self.stage(Stage::WaitingForChecks)];
                actions.extend(Self::run(Effect::SetState(
                    self.server(),
                    AdminTarget::Drain,
                )));
                actions
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
            (
                Phase::Probing {
                    deadline,
                    last_error,
                },
                Event::Waited,
            ) => {
                self.phase = Phase::Probing {
                    deadline,
                    last_error,
                };
                Self::run(Effect::Probe(self.current))
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
                let state = match (target, &result) {
                    (AdminTarget::Ready, Ok(())) => ServerState::ReturnedUnrestarted,
                    (AdminTarget::Maint, Ok(())) => ServerState::OutOfRotation,
                    (_, _) => ServerState::Unknown,
                };
                self.results[self.current].state = state;
                let reason = match result {
                    Ok(()) => reason,
                    Err(error) => format!(
                        "{reason}; then putting it {} failed too, so its state is not confirmed: {error}",
                        target.as_str()
                    ),
                };
                let mut actions = Vec::new();
                if outcome == Outcome::Failed {
                    actions.push(Action::Report(Report::ServerFailed {
                        server: self.server(),
                        stage,
                        reason: reason.clone(),
                    }));
                }
                actions.push(self.finish(outcome, Some(reason)));
                actions
            }
            (Phase::CanaryWait { until }, Event::Waited) => {
                if self.interrupted() {
                    return vec![self.finish(
                        Outcome::Interrupted,
                        Some("stopped during the canary pause".to_owned()),
                    )];
                }
                if now < until {
                    self.phase = Phase::CanaryWait { until };
                    return Self::run(Effect::Wait);
                }
                self.phase = Phase::CanaryCheck;
                Self::run(Effect::Poll)
            }
            (Phase::CanaryCheck, Event::Polled(views)) => self.after_canary_poll(&views),
            (Phase::CanaryProbe { next }, Event::Probed(Ok(()))) => {
                let canaries = self.settings.canary.map_or(0, |(count, _)| count);
                if next + 1 < canaries {
                    self.phase = Phase::CanaryProbe { next: next + 1 };
                    return Self::run(Effect::Probe(next + 1));
                }
                self.canary_passed = true;
                self.begin_server(now)
            }
            (Phase::CanaryProbe { next }, Event::Probed(Err(error))) => {
                let server = self.settings.servers[next].clone();
                self.canary_failed(format!("{server} is no longer healthy: {error}"))
            }
            (Phase::BeforeDrainHook, Event::HookDone(Ok(()))) => {
                if self.interrupted() {
                    return vec![self.finish(
                        Outcome::Interrupted,
                        Some("stopped by the operator before the server was drained".to_owned()),
                    )];
                }
                self.start_drain()
            }
            (Phase::BeforeDrainHook, Event::HookDone(Err(error))) => {
                self.fail_untouched(format!("its before_drain hook failed: {error}"))
            }
            (Phase::AfterRestartHook, Event::HookDone(Ok(()))) => self.start_probing(now),
            (Phase::AfterRestartHook, Event::HookDone(Err(error))) => self.fail(
                Stage::Hook(HookPoint::AfterRestart),
                format!("its after_restart hook failed: {error}"),
            ),
            (Phase::AfterReadyHook, Event::HookDone(Ok(()))) => self.complete_server(now),
            // The server passed its health check and HAProxy's: it stays in traffic.
            (Phase::AfterReadyHook, Event::HookDone(Err(error))) => {
                let reason = format!(
                    "its after_ready hook failed: {error}; {} is back in traffic (it passed its checks)",
                    self.server()
                );
                let outcome = self.failure_outcome();
                vec![
                    Action::Report(Report::ServerFailed {
                        server: self.server(),
                        stage: Stage::Hook(HookPoint::AfterReady),
                        reason: reason.clone(),
                    }),
                    self.finish(outcome, Some(reason)),
                ]
            }
            (Phase::OnFailureHook { outcome, reason }, Event::HookDone(result)) => {
                let reason = match result {
                    Ok(()) => reason,
                    Err(error) => Some(format!(
                        "{}; its on_failure hook failed too: {error}",
                        reason.unwrap_or_default()
                    )),
                };
                vec![self.finish(outcome, reason)]
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

    fn begin_server(&mut self, now: Instant) -> Vec<Action> {
        self.started = Some(now);
        self.drained = None;
        self.restarted = None;
        self.healthy = None;
        self.last_sessions = None;
        if let Some(settle) = self.settle.take() {
            self.results[self.current].state = ServerState::Unknown;
            return match settle {
                Settle::ReturnUnrestarted => {
                    self.return_unrestarted("settled after an interrupted rollout")
                }
                Settle::AfterRestart => self.start_probing(now),
            };
        }
        while self.current < self.settings.servers.len() && !self.rolls[self.current] {
            self.current += 1;
        }
        if self.current >= self.settings.servers.len() {
            return vec![self.finish(Outcome::Success, None)];
        }
        match &self.stop {
            Stop::No => {}
            Stop::Interrupted => {
                return vec![self.finish(
                    Outcome::Interrupted,
                    Some("stopped by the operator".to_owned()),
                )];
            }
            Stop::AfterThisServer(reason) => {
                let reason = reason.clone();
                // The failure belongs to the server just settled, not to the next one.
                self.current -= 1;
                return vec![self.finish(Outcome::Failed, Some(reason))];
            }
        }
        if self.restart_directly == Some(self.current) {
            // Out of rotation already: no capacity to check, nothing to drain. Maintenance
            // is set again (a reload since may have dropped it), then the restart.
            self.restart_directly = None;
            self.drained = Some(now);
            self.results[self.current].state = ServerState::OutOfRotation;
            self.phase = Phase::EnteringMaint;
            let mut actions = vec![self.stage(Stage::Restarting)];
            actions.extend(Self::run(Effect::SetState(
                self.server(),
                AdminTarget::Maint,
            )));
            return actions;
        }
        self.phase = Phase::Capacity;
        let mut actions = vec![self.stage(Stage::CheckingCapacity)];
        actions.extend(Self::run(Effect::Poll));
        actions
    }

    /// Property 2, at the moment of the drain.
    fn after_capacity_poll(&mut self, views: &[Result<Vec<ServerView>, String>]) -> Vec<Action> {
        let server = self.server();
        for (instance, result) in views.iter().enumerate() {
            let views = match result {
                Ok(views) => views,
                Err(error) => {
                    return self.fail_untouched(format!(
                        "cannot check capacity: HAProxy #{} is unreadable: {error}",
                        instance + 1
                    ));
                }
            };
            for backend in self.settings.topology.backends(instance, self.current) {
                let others = views
                    .iter()
                    .filter(|view| {
                        view.backend == backend.as_str()
                            && view.server != server.as_str()
                            && view.in_rotation()
                    })
                    .count();
                if others < self.settings.min_up {
                    return self.fail_untouched(format!(
                        "capacity: {backend} on HAProxy #{} has {others} other server(s) in rotation besides {server}; min_up {}",
                        instance + 1,
                        self.settings.min_up
                    ));
                }
            }
        }
        if self.has_hook(HookPoint::BeforeDrain) {
            return self.run_hook(HookPoint::BeforeDrain, Phase::BeforeDrainHook);
        }
        self.start_drain()
    }

    fn start_drain(&mut self) -> Vec<Action> {
        self.phase = Phase::Draining;
        vec![
            self.stage(Stage::Draining),
            Action::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
        ]
    }

    fn has_hook(&self, point: HookPoint) -> bool {
        self.hooks_enabled && self.settings.hooks.contains(&point)
    }

    fn run_hook(&mut self, point: HookPoint, phase: Phase) -> Vec<Action> {
        self.phase = phase;
        vec![
            self.stage(Stage::Hook(point)),
            Action::Run(Effect::Hook(point, self.current)),
        ]
    }

    fn after_restart(&mut self, now: Instant) -> Vec<Action> {
        if self.has_hook(HookPoint::AfterRestart) {
            return self.run_hook(HookPoint::AfterRestart, Phase::AfterRestartHook);
        }
        self.start_probing(now)
    }

    /// The server's view on every HAProxy and backend. An unreadable HAProxy is an error
    /// while it has been unreadable for less than its `unreachable_timeout`, and stops the
    /// rollout (`Err(Err(...))`) after.
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
                            "HAProxy #{} has been unreachable for {}s (its unreachable_timeout): {error}",
                            instance + 1,
                            limit.as_secs()
                        )));
                    }
                    problem = Some(format!("HAProxy #{}: {error}", instance + 1));
                    continue;
                }
            };
            for backend in self.settings.topology.backends(instance, self.current) {
                match views
                    .iter()
                    .find(|view| view.backend == backend.as_str() && view.server == server.as_str())
                {
                    Some(view) => found.push(view),
                    None => {
                        return Err(Err(format!(
                            "HAProxy #{} no longer has {backend}/{server}",
                            instance + 1
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
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.views_of(views, now) {
            Ok(found) => {
                let sessions: u64 = found.iter().map(|view| view.sessions).sum();
                if sessions == 0 {
                    self.drained = Some(now);
                    self.results[self.current].timings.draining = self
                        .started
                        .map(|started| now.saturating_duration_since(started));
                    self.phase = Phase::EnteringMaint;
                    actions.push(self.stage(Stage::Restarting));
                    actions.push(Action::Run(Effect::SetState(
                        self.server(),
                        AdminTarget::Maint,
                    )));
                    return actions;
                }
                if self.last_sessions != Some(sessions) {
                    self.last_sessions = Some(sessions);
                    actions.push(Action::Report(Report::SessionsLeft {
                        server: self.server(),
                        sessions,
                    }));
                }
                if now >= deadline {
                    return match self.settings.on_drain_timeout {
                        OnDrainTimeout::Fail => {
                            actions.extend(self.restore(
                                AdminTarget::Ready,
                                Stage::WaitingForSessions,
                                format!(
                                    "{sessions} session(s) still open after drain.timeout ({}s); returned to traffic unrestarted (on_timeout: fail)",
                                    self.settings.drain_timeout.as_secs()
                                ),
                            ));
                            actions
                        }
                        OnDrainTimeout::Force => {
                            self.drained = Some(now);
                            self.results[self.current].timings.draining = self
                                .started
                                .map(|started| now.saturating_duration_since(started));
                            self.phase = Phase::ForcingMaint { sessions };
                            actions.push(self.stage(Stage::Restarting));
                            actions.push(Action::Run(Effect::SetState(
                                self.server(),
                                AdminTarget::Maint,
                            )));
                            actions
                        }
                    };
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
                actions.push(Action::Report(Report::PollFailed { error }));
            }
        }
        self.phase = Phase::Sessions { deadline };
        actions.push(Action::Run(Effect::Wait));
        actions
    }

    fn start_restart(&mut self) -> Vec<Action> {
        self.results[self.current].state = ServerState::OutOfRotation;
        self.phase = Phase::Restarting;
        Self::run(Effect::Restart(self.current))
    }

    fn start_probing(&mut self, now: Instant) -> Vec<Action> {
        self.phase = Phase::Probing {
            deadline: now + self.settings.health_within,
            last_error: None,
        };
        let mut actions = vec![self.stage(Stage::WaitingForHealth)];
        actions.extend(Self::run(Effect::Probe(self.current)));
        actions
    }

    /// The server's views for a wait that only ends on a condition (HAProxy's checks, UP):
    /// `Err` carries what to do instead, when an HAProxy cannot be read. Before `deadline`
    /// that is waiting once more in `phase`; after it, or past an unreachable deadline, the
    /// server is put out of rotation and the rollout stops.
    fn awaited_views<'v>(
        &mut self,
        views: &'v [Result<Vec<ServerView>, String>],
        (deadline, now): (Instant, Instant),
        stage: Stage,
        what: &str,
        phase: Phase,
    ) -> Result<Vec<&'v ServerView>, Vec<Action>> {
        match self.views_of(views, now) {
            Ok(found) => Ok(found),
            Err(Err(fatal)) => Err(self.fail_out_of_rotation(stage, fatal)),
            Err(Ok(error)) if now >= deadline => {
                Err(self.fail_out_of_rotation(stage, format!("could not confirm {what}: {error}")))
            }
            Err(Ok(error)) => {
                self.phase = phase;
                Err(vec![
                    Action::Report(Report::PollFailed { error }),
                    Action::Run(Effect::Wait),
                ])
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
    ) -> Vec<Action> {
        let phase = Phase::Checks { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::WaitingForChecks,
            "HAProxy's checks",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(actions) => return actions,
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
                Action::Run(Effect::SetState(self.server(), AdminTarget::Ready)),
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
    ) -> Vec<Action> {
        let phase = Phase::Up { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::ReturningToTraffic,
            "it is UP",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(actions) => return actions,
        };
        if found
            .iter()
            .all(|view| view.admin.ready() && view.is_fully_up())
        {
            let server = self.server();
            let entry = &mut self.results[self.current];
            entry.state = if matches!(self.stop, Stop::AfterThisServer(_)) {
                ServerState::BackRestartUnknown
            } else {
                ServerState::Done
            };
            entry.timings.haproxy = self
                .healthy
                .map(|healthy| now.saturating_duration_since(healthy));
            let _ = server;
            if self.has_hook(HookPoint::AfterReady) {
                return self.run_hook(HookPoint::AfterReady, Phase::AfterReadyHook);
            }
            return self.complete_server(now);
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

    /// The server is back and every hook passed: report it, then the canary pause if this
    /// was the last canary, else the next server.
    fn complete_server(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::Report(Report::ServerDone {
            server: self.server(),
            timings: self.results[self.current].timings,
        })];
        self.current += 1;
        if let (false, Some((canaries, pause))) = (self.canary_passed, self.settings.canary) {
            let done = self
                .results
                .iter()
                .filter(|result| {
                    matches!(result.state, ServerState::Done | ServerState::DoneEarlier)
                })
                .count();
            if done >= canaries && self.stop == Stop::No {
                match pause {
                    CanaryPause::Manual => {
                        actions.push(self.finish(
                            Outcome::Paused,
                            Some(format!(
                                "paused after {canaries} canary server(s) (canary.pause: manual)"
                            )),
                        ));
                    }
                    CanaryPause::For(duration) => {
                        self.phase = Phase::CanaryWait {
                            until: now + duration,
                        };
                        actions.push(Action::Run(Effect::Wait));
                    }
                }
                return actions;
            }
        }
        actions.extend(self.begin_server(now));
        actions
    }

    /// After the canary pause: every canary still in rotation and exactly UP on every
    /// HAProxy and backend.
    fn after_canary_poll(&mut self, views: &[Result<Vec<ServerView>, String>]) -> Vec<Action> {
        let canaries = self.settings.canary.map_or(0, |(count, _)| count);
        for index in 0..canaries {
            let server = &self.settings.servers[index];
            for (instance, result) in views.iter().enumerate() {
                let problem = match result {
                    Err(error) => Some(format!("HAProxy #{} is unreadable: {error}", instance + 1)),
                    Ok(views) => self
                        .settings
                        .topology
                        .backends(instance, index)
                        .iter()
                        .find_map(|backend| {
                            match views.iter().find(|view| {
                                view.backend == backend.as_str() && view.server == server.as_str()
                            }) {
                                Some(view) if view.in_rotation() => None,
                                Some(view) => Some(format!(
                                    "{backend}/{server} on HAProxy #{} is {} ({})",
                                    instance + 1,
                                    view.status,
                                    view.admin_text()
                                )),
                                None => Some(format!(
                                    "HAProxy #{} no longer has {backend}/{server}",
                                    instance + 1
                                )),
                            }
                        }),
                };
                if let Some(problem) = problem {
                    return self.canary_failed(format!("after the canary pause, {problem}"));
                }
            }
        }
        self.phase = Phase::CanaryProbe { next: 0 };
        Self::run(Effect::Probe(0))
    }

    /// A canary is no longer fine: the rest is not touched. The canaries stay as they are,
    /// in HAProxy's hands (its checks take a failing server out).
    fn canary_failed(&mut self, reason: String) -> Vec<Action> {
        let outcome = self.failure_outcome();
        self.current = self.current.saturating_sub(1);
        vec![self.finish(
            outcome,
            Some(format!(
                "canary check failed: {reason}; no further server was touched"
            )),
        )]
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
    fn fail_untouched(&mut self, reason: String) -> Vec<Action> {
        let outcome = self.failure_outcome();
        vec![
            Action::Report(Report::ServerFailed {
                server: self.server(),
                stage: Stage::CheckingCapacity,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// The server stays where it is (out of rotation): report and stop.
    fn fail(&mut self, stage: Stage, reason: String) -> Vec<Action> {
        self.results[self.current].state = ServerState::OutOfRotation;
        let outcome = self.failure_outcome();
        vec![
            Action::Report(Report::ServerFailed {
                server: self.server(),
                stage,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// Puts the server in maintenance everywhere (it may be half-way back), then stops.
    fn fail_out_of_rotation(&mut self, stage: Stage, reason: String) -> Vec<Action> {
        self.restore(AdminTarget::Maint, stage, reason)
    }

    /// Back to traffic without a restart, then stop (an interrupt before the restart).
    fn return_unrestarted(&mut self, why: &str) -> Vec<Action> {
        self.phase = Phase::Restoring {
            target: AdminTarget::Ready,
            outcome: Outcome::Interrupted,
            stage: Stage::Draining,
            reason: format!("{why}; {} returned to traffic unrestarted", self.server()),
        };
        Self::run(Effect::SetState(self.server(), AdminTarget::Ready))
    }

    fn restore(&mut self, target: AdminTarget, stage: Stage, reason: String) -> Vec<Action> {
        self.phase = Phase::Restoring {
            target,
            outcome: self.failure_outcome(),
            stage,
            reason,
        };
        Self::run(Effect::SetState(self.server(), target))
    }

    /// Stop at the next safe point: a server only drained goes back to traffic unrestarted;
    /// a restart in progress is let finish, and the server returns only once its health and
    /// HAProxy's checks pass (else it stays out, as on any failure); no new server starts.
    fn interrupt(&mut self) -> Vec<Action> {
        if self.stop == Stop::No {
            self.stop = Stop::Interrupted;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle | Phase::Capacity | Phase::Finished => {
                vec![self.finish(
                    Outcome::Interrupted,
                    Some("stopped by the operator before the next server".to_owned()),
                )]
            }
            Phase::Sessions { .. } => self.return_unrestarted("interrupted while draining"),
            // An effect is in flight, or the server is past its restart: the next event
            // continues, and the stop takes effect at the next safe point.
            other => {
                self.phase = other;
                Vec::new()
            }
        }
    }

    /// Stop now: the effect in flight was abandoned; a touched server is left out of
    /// rotation (maintenance), whatever it was doing.
    fn abort_now(&mut self) -> Vec<Action> {
        self.stop = Stop::Interrupted;
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle
            | Phase::Capacity
            | Phase::BeforeDrainHook
            | Phase::CanaryWait { .. }
            | Phase::CanaryCheck
            | Phase::CanaryProbe { .. }
            | Phase::Finished => {
                vec![self.finish(
                    Outcome::Interrupted,
                    Some("aborted with --now before the next server".to_owned()),
                )]
            }
            Phase::OnFailureHook { outcome, reason } => vec![self.finish(outcome, reason)],
            // Back in traffic and confirmed UP: taking it out would only cost capacity.
            Phase::AfterReadyHook => vec![self.finish(
                Outcome::Interrupted,
                Some(format!(
                    "aborted with --now during the after_ready hook of {}, which stays in traffic",
                    self.server()
                )),
            )],
            _ => {
                self.phase = Phase::Restoring {
                    target: AdminTarget::Maint,
                    outcome: Outcome::Interrupted,
                    stage: Stage::Restarting,
                    reason: format!("aborted with --now; {} left out of rotation", self.server()),
                };
                Self::run(Effect::SetState(self.server(), AdminTarget::Maint))
            }
        }
    }

    /// The runtime-API commands that return the server at `index` to traffic.
    fn restore_commands(&self, index: usize) -> Vec<String> {
        let server = &self.settings.servers[index];
        self.settings
            .topology
            .all_backends_of(index)
            .iter()
            .map(|backend| format!("set server {backend}/{server} state ready"))
            .collect()
    }

    fn finish(&mut self, outcome: Outcome, reason: Option<String>) -> Action {
        let failure_hook_due = outcome == Outcome::Failed
            && self.has_hook(HookPoint::OnFailure)
            && self.current < self.settings.servers.len()
            && !matches!(self.phase, Phase::OnFailureHook { .. });
        if failure_hook_due {
            // Runs once; the rollout then finishes as it was going to.
            self.hooks_enabled = false;
            self.phase = Phase::OnFailureHook { outcome, reason };
            return Action::Run(Effect::Hook(HookPoint::OnFailure, self.current));
        }
        self.phase = Phase::Finished;
        // Every server left out of rotation, or in a state this rollout could not confirm,
        // is reported with the commands that return it; no other server needs any.
        for index in 0..self.results.len() {
            self.results[index].restore = match self.results[index].state {
                ServerState::OutOfRotation | ServerState::Unknown => self.restore_commands(index),
                _ => Vec::new(),
            };
        }
        Action::Finish(Finish {
            outcome,
            reason,
            servers: self.results.clone(),
        })
    }
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "none" } else { text }
}

#[cfg(test)]
mod tests;
