//! The rollout state machine: takes observations (server views, command results, restart
//! and health outcomes, the time) and returns what to do next. No I/O, no clock reads.
//!
//! Servers start in plan order, each through the sequence of `steps.rs` (`server.rs`).
//! Several may be in flight at once, up to `capacity.max_unavailable` of each backend: the
//! next one starts only once the one before it is drained (so its capacity check sees it
//! out), fits the limits, and leaves `min_up` other servers in rotation in each of its
//! backends. Each server in flight is a lane with one effect at a time; the coordinator's
//! own effects (capacity polls, the canary pause) are the `Lane::Rollout` lane. The driver
//! runs the lanes' effects concurrently and feeds each result back to its lane.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capacity::{InRotation, leaves_enough};
use super::topology::Topology;

pub use super::capacity::Limits;
use crate::haproxy::{AdminTarget, ServerView};
use crate::plan::{CanaryPause, HookPoint, OnDrainTimeout, Plan, ServerName};

mod recovery;
mod server;

use recovery::Decision;
pub use recovery::{Live, Mode, Recovered, RestartFact};
use server::{ServerRun, Start, Step};

/// What the driver reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Server views of every HAProxy, in plan order; an unreadable one carries its error.
    Polled(Vec<Result<Vec<ServerView>, String>>),
    /// The result of a state change or session shutdown on every HAProxy and backend.
    Changed(Result<(), String>),
    Restarted(Result<(), CommandFailure>),
    Probed(Result<(), String>),
    /// A hook finished: `Err` carries why it failed, with its output.
    HookDone(Result<(), CommandFailure>),
    /// Whether the last command started for a server still runs on its host, as a fresh
    /// connection showed it; `Err`: it could not be asked.
    CommandChecked(Result<CommandState, String>),
    /// One poll interval passed (or a wait ended early because the operator asked to stop).
    Waited,
}

/// Why a command on a server's host (its restart, a hook) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFailure {
    /// It ran and failed: non-zero exit, timeout.
    Failed(String),
    /// The connection was lost (or the tool could not wait for it): it may still be running
    /// until its remote bound, unless its host shows it ended.
    Unknown(String),
}

impl CommandFailure {
    pub fn text(&self) -> &str {
        match self {
            CommandFailure::Failed(text) | CommandFailure::Unknown(text) => text,
        }
    }
}

/// Whether a command the tool started still runs, as its host shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    Running,
    Ended,
}

/// A command the tool runs on a server's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Restart,
    Hook(HookPoint),
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Restart => "restart",
            CommandKind::Hook(HookPoint::BeforeDrain) => "before_drain hook",
            CommandKind::Hook(HookPoint::AfterRestart) => "after_restart hook",
            CommandKind::Hook(HookPoint::AfterReady) => "after_ready hook",
            CommandKind::Hook(HookPoint::OnFailure) => "on_failure hook",
        }
    }
}

/// A command of the tool that may still be running on a server's host until `until`
/// (its remote bound), because nothing proved that it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MayRun {
    pub what: CommandKind,
    pub until: Instant,
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
    /// Ask the host of the server at this plan index, over a fresh connection, whether the
    /// last command started for it still runs.
    CheckCommand(usize),
    /// Run a hook for the server at this plan index.
    Hook(HookPoint, usize),
    /// Wait one poll interval.
    Wait,
}

/// An HAProxy process a reload replaced: it keeps serving the sessions it had, which the new
/// process's socket does not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldProcess {
    pub instance: usize,
    pub pid: u32,
    /// It runs where the tool can look it up (the same machine): it counts until it is
    /// gone. A remote one cannot be seen and counts until the server's drain deadline.
    pub visible: bool,
}

/// An old process and the servers that were draining when it was replaced: each counts at
/// least one session there while it may still run.
#[derive(Debug, Clone)]
struct OldSessions {
    process: OldProcess,
    servers: Vec<usize>,
}

/// Who an effect belongs to: a server in flight (by plan index) or the coordinator itself.
/// Each lane has at most one effect in flight; its result goes back to the same lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Rollout,
    Server(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Lane, Effect),
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
    /// Left out on the operator's word (`resume --skip`): not touched by this run, and
    /// found out of rotation or in traffic.
    Skipped { out_of_rotation: bool },
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
    /// A command of this rollout may still run on its host until then.
    pub may_run: Option<MayRun>,
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
    /// The next server waits: starting it now would break `min_up` while other servers of
    /// this rollout are out.
    WaitingForCapacity {
        server: ServerName,
        reason: String,
    },
    /// A command whose outcome is unknown may still run on the server's host: the server
    /// stays out of rotation until it ended or `until` passed.
    CommandMayRun {
        server: ServerName,
        what: CommandKind,
        until: Instant,
    },
    /// That command can no longer run: its host showed it ended (`proven`), or its remote
    /// bound passed.
    CommandEnded {
        server: ServerName,
        what: CommandKind,
        proven: bool,
    },
    /// Recovering: what a server an earlier run was working on shows now, and where it goes
    /// on from.
    Found {
        server: ServerName,
        live: String,
        decision: String,
    },
    /// Something an operator should know that changes nothing by itself.
    Warning {
        text: String,
    },
    /// An HAProxy could not be read: reported once when it goes, with how long the rollout
    /// keeps trying (`unreachable_timeout`) before it stops.
    Unreachable {
        haproxy: String,
        error: String,
        timeout: Duration,
    },
    /// It answers again, after being unreachable this long.
    Reachable {
        haproxy: String,
        after: Duration,
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
    /// HAProxy reloaded (the driver saw its process change) and the state each server in
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

/// The settings each server's run decides with, taken from the plan.
#[derive(Debug, Clone)]
struct Settings {
    servers: Vec<ServerName>,
    /// Which backends each server is in, on each HAProxy.
    topology: Topology,
    drain_timeout: Duration,
    on_drain_timeout: OnDrainTimeout,
    health_within: Duration,
    ready_timeout: Duration,
    /// Per HAProxy instance: how long it may stay unreadable before the rollout stops.
    unreachable_timeouts: Vec<Duration>,
    /// Per HAProxy instance: its name in the plan, for reports.
    instances: Vec<String>,
    /// The hook points the plan has a command for.
    hooks: Vec<HookPoint>,
    /// How long after it was sent the restart, and each hook, may still run on its host.
    restart_bound: Duration,
    hook_bounds: Vec<(HookPoint, Duration)>,
}

impl Settings {
    /// `HAProxy lb1`: an instance as the plan names it.
    fn haproxy(&self, instance: usize) -> String {
        format!(
            "HAProxy {}",
            self.instances
                .get(instance)
                .map_or("(unknown)", String::as_str)
        )
    }

    fn bound(&self, what: CommandKind) -> Duration {
        match what {
            CommandKind::Restart => self.restart_bound,
            CommandKind::Hook(point) => self
                .hook_bounds
                .iter()
                .find(|(candidate, _)| *candidate == point)
                .map_or(self.restart_bound, |(_, bound)| *bound),
        }
    }
}

/// The coordinator's own effect in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Own {
    Idle,
    /// Reading every HAProxy to decide where the recovered servers go on from.
    Recovering {
        since: Instant,
    },
    /// An HAProxy could not be read for that: reading again after a poll interval.
    RecoveringWait {
        since: Instant,
    },
    /// Reading every HAProxy to check the capacity for this server.
    Admitting(usize),
    /// The canaries are back: wait until `until`, then check them.
    CanaryWait {
        until: Instant,
    },
    CanaryCheck,
    /// Asking the health URL of each canary in turn (an index into the plan's servers).
    CanaryProbe {
        next: usize,
    },
    /// The failure hook of a failure that belongs to the rollout (capacity, canaries).
    FailureHook,
    Finished,
}

/// Whether new servers may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    Interrupted,
    Failed,
}

/// A server in flight.
struct Flight {
    run: ServerRun,
    /// The operator's stop is delivered between two of its effects, with the next result.
    interrupt_pending: bool,
}

pub struct Rollout {
    settings: Arc<Settings>,
    min_up: usize,
    limits: Limits,
    /// How many servers, from the start of the plan, are canaries, and the pause after them.
    canary: Option<(usize, CanaryPause)>,
    /// The canary pause is behind us (or there is none).
    canary_passed: bool,
    results: Vec<ServerResult>,
    /// Servers still to start, in plan order.
    queue: VecDeque<usize>,
    flights: BTreeMap<usize, Flight>,
    /// Servers an earlier run was working on: decided from live state first.
    recovering: Vec<Recovered>,
    /// Servers the operator left out (`resume --skip`).
    skipped: Vec<usize>,
    /// Old HAProxy processes that may still serve sessions of servers that were draining.
    old_sessions: Vec<OldSessions>,
    /// Settling after an interrupted run: put right, restart nothing, stop.
    settling: bool,
    own: Own,
    /// The next server's capacity is short while other servers of this rollout are out:
    /// wait for one of them to finish before checking again.
    blocked: bool,
    stop: Stop,
    failures: Vec<String>,
    interruptions: Vec<String>,
    /// The `on_failure` hook may still run (it runs once; settling runs none).
    hooks_enabled: bool,
    /// The `on_failure` hook runs for this server as soon as the coordinator is free.
    failure_hook_due: Option<usize>,
}

impl Rollout {
    pub fn new(plan: &Plan, topology: Topology, limits: Limits) -> Self {
        let settings = Settings {
            servers: plan
                .servers
                .iter()
                .map(|server| server.name.clone())
                .collect(),
            topology,
            drain_timeout: plan.drain.timeout,
            on_drain_timeout: plan.drain.on_timeout,
            health_within: plan.health.within,
            ready_timeout: plan.ready.timeout,
            unreachable_timeouts: plan
                .haproxy
                .iter()
                .map(|instance| instance.unreachable_timeout)
                .collect(),
            instances: plan
                .haproxy
                .iter()
                .map(|instance| instance.name.to_string())
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
            restart_bound: plan.remote_bound(plan.restart.timeout),
            hook_bounds: [
                HookPoint::BeforeDrain,
                HookPoint::AfterRestart,
                HookPoint::AfterReady,
                HookPoint::OnFailure,
            ]
            .into_iter()
            .filter_map(|point| Some((point, plan.remote_bound(plan.hooks.get(point)?.timeout))))
            .collect(),
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
                may_run: None,
            })
            .collect();
        Rollout {
            queue: (0..settings.servers.len()).collect(),
            settings: Arc::new(settings),
            min_up: plan.capacity.min_up as usize,
            limits,
            canary: plan
                .canary
                .as_ref()
                .map(|canary| (canary.servers, canary.pause)),
            canary_passed: plan.canary.is_none(),
            results,
            flights: BTreeMap::new(),
            recovering: Vec::new(),
            skipped: Vec::new(),
            old_sessions: Vec::new(),
            settling: false,
            own: Own::Idle,
            blocked: false,
            stop: Stop::No,
            failures: Vec::new(),
            interruptions: Vec::new(),
            hooks_enabled: true,
            failure_hook_due: None,
        }
    }

    /// Continues (`Mode::Resume`) or settles (`Mode::Settle`) a rollout an earlier run left:
    /// the servers at `done` were restarted and back before; those in `recovered` it was
    /// working on go on from what the live state and the journal's facts allow (decided at
    /// the first poll, see `recovery.rs`), before any other server starts.
    pub fn recover(
        plan: &Plan,
        topology: Topology,
        limits: Limits,
        mode: Mode,
        done: &[usize],
        recovered: Vec<Recovered>,
    ) -> Self {
        let mut rollout = Rollout::new(plan, topology, limits);
        for index in done {
            rollout.results[*index].state = ServerState::DoneEarlier;
        }
        rollout.queue.retain(|index| {
            !done.contains(index) && !recovered.iter().any(|server| server.index == *index)
        });
        for server in &recovered {
            rollout.results[server.index].state = ServerState::Unknown;
        }
        rollout.recovering = recovered;
        // Canaries done before the interruption (or the pause) are not paused for again.
        if let Some((canaries, _)) = rollout.canary {
            rollout.canary_passed |= done.len() >= canaries;
        }
        if mode == Mode::Settle {
            rollout.queue.clear();
            rollout.stop = Stop::Interrupted;
            rollout.hooks_enabled = false;
            rollout.settling = true;
        }
        rollout
    }

    /// Leaves `skipped` out: not touched, reported as skipped. One an earlier run was
    /// working on is looked at first, so the summary says whether it is out of rotation.
    pub fn skip(mut self, skipped: &[usize]) -> Self {
        self.queue.retain(|index| !skipped.contains(index));
        for index in skipped {
            self.results[*index].state = ServerState::Skipped {
                out_of_rotation: false,
            };
        }
        self.skipped = skipped.to_vec();
        self
    }

    /// The admin state each server in flight must have now: what a reload of HAProxy drops
    /// and the driver puts back.
    pub fn expected_states(&self) -> Vec<(ServerName, AdminTarget)> {
        self.flights
            .values()
            .filter_map(|flight| flight.run.expected_state())
            .collect()
    }

    /// Property 7: HAProxy `old.instance` reloaded (its process changed). Returns the
    /// state each server in flight must have, which the reload dropped and the driver puts
    /// back on that HAProxy before anything else. The servers draining and not yet
    /// restarted count a session on the old process from now on, while it may still run
    /// (property 3: no restart under a request the old process still serves).
    pub fn reloaded(&mut self, old: Option<OldProcess>) -> Vec<(ServerName, AdminTarget)> {
        let servers: Vec<usize> = self
            .flights
            .iter()
            .filter(|(_, flight)| flight.run.draining_before_restart())
            .map(|(index, _)| *index)
            .collect();
        if let Some(process) = old
            && !servers.is_empty()
        {
            self.old_sessions.push(OldSessions { process, servers });
        }
        self.expected_states()
    }

    /// The old processes whose sessions still count and that the driver can look up.
    pub fn old_processes(&self) -> Vec<OldProcess> {
        self.old_sessions
            .iter()
            .map(|old| old.process)
            .filter(|process| process.visible)
            .collect()
    }

    /// The driver looked: these old processes no longer run, so their sessions are over.
    pub fn old_processes_gone(&mut self, gone: &[OldProcess]) {
        self.old_sessions.retain(|old| !gone.contains(&old.process));
    }

    /// A poll of `index`'s lane: a session counts on it on every HAProxy whose old process
    /// may still serve its requests, as long as it drains before its restart.
    fn count_old_sessions(&mut self, index: usize, views: &mut [Result<Vec<ServerView>, String>]) {
        let flights = &self.flights;
        self.old_sessions.retain_mut(|old| {
            old.servers.retain(|server| {
                flights
                    .get(server)
                    .is_some_and(|flight| flight.run.draining_before_restart())
            });
            !old.servers.is_empty()
        });
        let server = self.settings.servers[index].as_str();
        for old in self
            .old_sessions
            .iter()
            .filter(|old| old.servers.contains(&index))
        {
            if let Some(Ok(views)) = views.get_mut(old.process.instance) {
                for view in views.iter_mut().filter(|view| view.server == server) {
                    view.sessions = view.sessions.max(1);
                }
            }
        }
    }

    /// The first actions.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if !self.recovering.is_empty() {
            self.own = Own::Recovering { since: now };
            return vec![Action::Run(Lane::Rollout, Effect::Poll)];
        }
        self.advance(now)
    }

    /// Where each recovered server goes on from, from what every HAProxy shows now.
    fn recover_from(
        &mut self,
        views: &[Result<Vec<ServerView>, String>],
        since: Instant,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(instance) = views.iter().position(Result::is_err) {
            let limit = self.settings.unreachable_timeouts[instance];
            if now.saturating_duration_since(since) < limit {
                // The driver reports it unreachable (once) and back.
                self.own = Own::RecoveringWait { since };
                return vec![Action::Run(Lane::Rollout, Effect::Wait)];
            }
        }
        let mode = if self.settling {
            Mode::Settle
        } else {
            Mode::Resume
        };
        let mut actions = Vec::new();
        let mut queued = Vec::new();
        for server in std::mem::take(&mut self.recovering) {
            let name = self.settings.servers[server.index].clone();
            let live = match recovery::live(&self.settings, server.index, views) {
                Ok(live) => live,
                Err(reason) => {
                    let reason = format!("cannot tell what {name} shows now: {reason}");
                    actions.push(Action::Report(Report::ServerFailed {
                        server: name,
                        stage: Stage::CheckingCapacity,
                        reason: reason.clone(),
                    }));
                    self.fail(server.index, Some(reason));
                    continue;
                }
            };
            let decision = if self.skipped.contains(&server.index) {
                Decision::Leave(ServerState::Skipped {
                    out_of_rotation: live != Live::InTraffic,
                })
            } else {
                recovery::decide(mode, live, server.restart, server.may_run)
            };
            actions.push(Action::Report(Report::Found {
                server: name,
                live: live.text(),
                decision: decision.text().to_owned(),
            }));
            match decision {
                Decision::Queue => queued.push(server.index),
                Decision::Leave(state) => self.results[server.index].state = state,
                Decision::Start(start) => actions.extend(self.launch(server.index, start, now)),
            }
        }
        // In plan order, ahead of the servers not started yet.
        for index in queued.into_iter().rev() {
            self.queue.push_front(index);
        }
        actions.extend(self.advance(now));
        actions
    }

    /// Takes the result of a lane's effect and returns what to do next.
    pub fn handle(&mut self, lane: Lane, event: Event, now: Instant) -> Vec<Action> {
        match lane {
            Lane::Rollout => self.handle_own(event, now),
            Lane::Server(index) => {
                let event = match event {
                    Event::Polled(mut views) => {
                        self.count_old_sessions(index, &mut views);
                        Event::Polled(views)
                    }
                    event => event,
                };
                let Some(flight) = self.flights.get_mut(&index) else {
                    return self
                        .internal_error(format!("{event:?} for a server not in flight"), now);
                };
                let steps = if std::mem::take(&mut flight.interrupt_pending) {
                    let steps = flight.run.interrupt();
                    if steps.is_empty() {
                        flight.run.handle(event, now)
                    } else {
                        steps
                    }
                } else {
                    flight.run.handle(event, now)
                };
                let mut actions = self.follow(index, steps, now);
                // Its drain may just have landed: the next server may start.
                actions.extend(self.advance(now));
                actions
            }
        }
    }

    /// Stop at the next safe point: no new server starts; each server in flight stops at
    /// its own next safe point (see `ServerRun::interrupt`).
    pub fn interrupt(&mut self, now: Instant) -> Vec<Action> {
        if self.stop == Stop::No {
            self.stop = Stop::Interrupted;
        }
        for flight in self.flights.values_mut() {
            flight.interrupt_pending = true;
        }
        if self.own == Own::Idle {
            return self.advance(now);
        }
        Vec::new()
    }

    /// Stop now: every effect in flight was abandoned; each touched server is left out of
    /// rotation (see `ServerRun::abort_now`).
    pub fn abort_now(&mut self, now: Instant) -> Vec<Action> {
        if self.stop == Stop::No {
            self.stop = Stop::Interrupted;
        }
        if matches!(
            self.own,
            Own::CanaryWait { .. } | Own::CanaryCheck | Own::CanaryProbe { .. }
        ) {
            self.interruptions
                .push("aborted with --now during the canary pause".to_owned());
        }
        // Aborted: the failure hook does not run (any more).
        self.failure_hook_due = None;
        self.stop_all_now("aborted with --now", now)
    }

    /// The driver has nothing in flight and no finish: a bug. Every server in flight is
    /// left out of rotation (and reported so), as with `abort --now`.
    pub fn stalled(&mut self, now: Instant) -> Vec<Action> {
        self.stop = Stop::Failed;
        self.failures
            .push("internal error: the rollout stalled with nothing in flight".to_owned());
        self.stop_all_now("stopped on an internal error", now)
    }

    /// Every effect in flight was abandoned: each server in flight stops now (see
    /// `ServerRun::stop_now`); the coordinator's own effect is dropped.
    fn stop_all_now(&mut self, why: &str, now: Instant) -> Vec<Action> {
        if self.own != Own::Finished {
            self.own = Own::Idle;
        }
        let mut actions = Vec::new();
        let indexes: Vec<usize> = self.flights.keys().copied().collect();
        for index in indexes {
            let Some(flight) = self.flights.get_mut(&index) else {
                continue;
            };
            flight.interrupt_pending = false;
            let steps = flight.run.stop_now(why);
            actions.extend(self.follow(index, steps, now));
        }
        if self.flights.is_empty() && self.own == Own::Idle {
            actions.extend(self.advance(now));
        }
        actions
    }

    fn launch(&mut self, index: usize, start: Start, now: Instant) -> Vec<Action> {
        let mut run = ServerRun::new(Arc::clone(&self.settings), index, start, self.settling);
        let steps = run.begin(now);
        self.flights.insert(
            index,
            Flight {
                run,
                interrupt_pending: false,
            },
        );
        self.follow(index, steps, now)
    }

    /// A server's steps, as the rollout's actions; a server that finished frees its place.
    fn follow(&mut self, index: usize, steps: Vec<Step>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for step in steps {
            match step {
                Step::Run(effect) => actions.push(Action::Run(Lane::Server(index), effect)),
                Step::Report(report) => actions.push(Action::Report(report)),
                Step::Done(done) => {
                    self.flights.remove(&index);
                    self.results[index] = done.result;
                    if done.requeue {
                        self.queue.push_front(index);
                    }
                    match done.outcome {
                        Outcome::Success => {}
                        Outcome::Failed => {
                            self.fail(index, done.reason);
                        }
                        Outcome::Interrupted | Outcome::Paused => {
                            if self.stop == Stop::No {
                                self.stop = Stop::Interrupted;
                            }
                            self.interruptions.extend(done.reason);
                        }
                    }
                    self.blocked = false;
                    actions.extend(self.advance(now));
                }
            }
        }
        actions
    }

    /// Starts what may start now; finishes when nothing is left in flight or to start.
    fn advance(&mut self, now: Instant) -> Vec<Action> {
        if self.own != Own::Idle {
            return Vec::new();
        }
        if let Some(server) = self.failure_hook_due.take() {
            self.own = Own::FailureHook;
            return vec![
                Action::Report(Report::Stage {
                    server: self.settings.servers[server].clone(),
                    stage: Stage::Hook(HookPoint::OnFailure),
                }),
                Action::Run(Lane::Rollout, Effect::Hook(HookPoint::OnFailure, server)),
            ];
        }
        if self.stop != Stop::No {
            return if self.flights.is_empty() {
                vec![self.conclude()]
            } else {
                Vec::new()
            };
        }
        let Some(&next) = self.queue.front() else {
            return if self.flights.is_empty() {
                vec![self.conclude()]
            } else {
                Vec::new()
            };
        };
        if let (false, Some((canaries, pause))) = (self.canary_passed, self.canary)
            && next >= canaries
        {
            // Every canary is back before the pause begins.
            if !self.flights.is_empty() {
                return Vec::new();
            }
            return match pause {
                CanaryPause::Manual => {
                    self.own = Own::Finished;
                    vec![Action::Finish(Finish {
                        outcome: Outcome::Paused,
                        reason: Some(format!(
                            "paused after {canaries} canary server(s) (canary.pause: manual)"
                        )),
                        servers: self.results.clone(),
                    })]
                }
                CanaryPause::For(duration) => {
                    self.own = Own::CanaryWait {
                        until: now + duration,
                    };
                    vec![Action::Run(Lane::Rollout, Effect::Wait)]
                }
            };
        }
        // The next server's capacity check must see every server before it out, and it must
        // fit the limits; until then it waits for a server in flight to move on.
        if self.blocked
            || self
                .flights
                .values()
                .any(|flight| !flight.run.past_drain() || flight.run.failing())
            || !self.fits(next)
        {
            return Vec::new();
        }
        self.own = Own::Admitting(next);
        vec![
            Action::Report(Report::Stage {
                server: self.settings.servers[next].clone(),
                stage: Stage::CheckingCapacity,
            }),
            Action::Run(Lane::Rollout, Effect::Poll),
        ]
    }

    /// Property 2's second half: this rollout has fewer than `max_unavailable` servers out
    /// in each backend of `server`, on each HAProxy.
    fn fits(&self, server: usize) -> bool {
        self.limits.fits(
            &self.settings.topology,
            self.settings.instances.len(),
            server,
            &self.flights.keys().copied().collect::<Vec<_>>(),
        )
    }

    fn handle_own(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (std::mem::replace(&mut self.own, Own::Idle), event) {
            (Own::Recovering { since }, Event::Polled(views)) => {
                self.recover_from(&views, since, now)
            }
            (Own::RecoveringWait { since }, Event::Waited) => {
                self.own = Own::Recovering { since };
                vec![Action::Run(Lane::Rollout, Effect::Poll)]
            }
            (Own::Admitting(next), Event::Polled(views)) => self.admit(next, &views, now),
            (Own::FailureHook, Event::HookDone(result)) => {
                if let (Err(error), Some(last)) = (result, self.failures.last_mut()) {
                    last.push_str(&format!(
                        "; its on_failure hook failed too: {}",
                        error.text()
                    ));
                    if let CommandFailure::Unknown(_) = error {
                        last.push_str(" (it may still run on its host until its timeout)");
                    }
                }
                self.advance(now)
            }
            (Own::CanaryWait { until }, Event::Waited) => {
                if self.stop != Stop::No {
                    self.interruptions
                        .push("stopped during the canary pause".to_owned());
                    return self.advance(now);
                }
                if now < until {
                    self.own = Own::CanaryWait { until };
                    return vec![Action::Run(Lane::Rollout, Effect::Wait)];
                }
                self.own = Own::CanaryCheck;
                vec![Action::Run(Lane::Rollout, Effect::Poll)]
            }
            (Own::CanaryCheck, Event::Polled(views)) => self.after_canary_poll(&views, now),
            (Own::CanaryProbe { next }, Event::Probed(Ok(()))) => {
                let canaries = self.canary.map_or(0, |(count, _)| count);
                if next + 1 < canaries {
                    self.own = Own::CanaryProbe { next: next + 1 };
                    return vec![Action::Run(Lane::Rollout, Effect::Probe(next + 1))];
                }
                self.canary_passed = true;
                self.advance(now)
            }
            (Own::CanaryProbe { next }, Event::Probed(Err(error))) => {
                let server = self.settings.servers[next].clone();
                self.canary_failed(format!("{server} is no longer healthy: {error}"), now)
            }
            (own, event) => {
                self.own = own;
                self.internal_error(format!("{event:?} in {:?}", self.own), now)
            }
        }
    }

    /// Property 2, at the moment `next` would start: every HAProxy readable, and in each of
    /// its backends at least `min_up` other servers in rotation.
    fn admit(
        &mut self,
        next: usize,
        views: &[Result<Vec<ServerView>, String>],
        now: Instant,
    ) -> Vec<Action> {
        // A failure (or a stop) since the poll began: `next` does not start.
        if self.stop != Stop::No || self.flights.values().any(|flight| flight.run.failing()) {
            return self.advance(now);
        }
        let server = &self.settings.servers[next];
        let mut shortfall = None;
        for (instance, result) in views.iter().enumerate() {
            let views = match result {
                Ok(views) => views,
                Err(error) => {
                    return self.refuse(
                        next,
                        format!(
                            "cannot check capacity: {} is unreadable: {error}",
                            self.settings.haproxy(instance)
                        ),
                        now,
                    );
                }
            };
            let in_rotation = InRotation::new(
                (0..views.len()).map(|of| (of == instance).then_some(views.as_slice())),
            );
            for backend in self.settings.topology.backends(instance, next) {
                let others = in_rotation
                    .others(instance, backend.as_str(), server.as_str())
                    .len();
                if !leaves_enough(others, self.min_up) && shortfall.is_none() {
                    shortfall = Some(format!(
                        "capacity: {backend} on {} has {others} other server(s) in rotation besides {server}; min_up {}",
                        self.settings.haproxy(instance),
                        self.min_up
                    ));
                }
            }
        }
        match shortfall {
            None => {
                self.queue.pop_front();
                self.launch(next, Start::Checked, now)
            }
            // Servers of this rollout are out: one of them coming back may make room.
            Some(reason) if !self.flights.is_empty() => {
                self.blocked = true;
                vec![Action::Report(Report::WaitingForCapacity {
                    server: server.clone(),
                    reason,
                })]
            }
            Some(reason) => self.refuse(next, reason, now),
        }
    }

    /// `next` may not start, and no other server after it: the rollout stops once the
    /// servers in flight are back.
    fn refuse(&mut self, next: usize, reason: String, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::Report(Report::ServerFailed {
            server: self.settings.servers[next].clone(),
            stage: Stage::CheckingCapacity,
            reason: reason.clone(),
        })];
        actions.extend(self.fail_rollout(next, reason, now));
        actions
    }

    /// A failure of the rollout as a whole (not of a server's run): stop new starts, run
    /// the failure hook (for `server`), finish once the servers in flight are back.
    fn fail_rollout(&mut self, server: usize, reason: String, now: Instant) -> Vec<Action> {
        if self.stop == Stop::Interrupted {
            self.interruptions.push(reason);
        } else {
            self.fail(server, Some(reason));
        }
        self.advance(now)
    }

    /// A failure: no new server starts, and the `on_failure` hook is due for `server` —
    /// once per rollout, and not once the operator asked to stop.
    fn fail(&mut self, server: usize, reason: Option<String>) {
        if self.stop != Stop::Interrupted
            && self.hooks_enabled
            && self.settings.hooks.contains(&HookPoint::OnFailure)
        {
            self.hooks_enabled = false;
            self.failure_hook_due = Some(server);
        }
        self.stop = Stop::Failed;
        self.failures.extend(reason);
    }

    /// After the canary pause: every canary still in rotation and exactly UP on every
    /// HAProxy and backend.
    fn after_canary_poll(
        &mut self,
        views: &[Result<Vec<ServerView>, String>],
        now: Instant,
    ) -> Vec<Action> {
        let canaries = self.canary.map_or(0, |(count, _)| count);
        for index in 0..canaries {
            let server = &self.settings.servers[index];
            for (instance, result) in views.iter().enumerate() {
                let problem = match result {
                    Err(error) => Some(format!(
                        "{} is unreadable: {error}",
                        self.settings.haproxy(instance)
                    )),
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
                                    "{backend}/{server} on {} is {} ({})",
                                    self.settings.haproxy(instance),
                                    view.status,
                                    view.admin_text()
                                )),
                                None => Some(format!(
                                    "{} no longer has {backend}/{server}",
                                    self.settings.haproxy(instance)
                                )),
                            }
                        }),
                };
                if let Some(problem) = problem {
                    return self.canary_failed(format!("after the canary pause, {problem}"), now);
                }
            }
        }
        self.own = Own::CanaryProbe { next: 0 };
        vec![Action::Run(Lane::Rollout, Effect::Probe(0))]
    }

    /// A canary is no longer fine: the rest is not touched. The canaries stay as they are,
    /// in HAProxy's hands (its checks take a failing server out).
    fn canary_failed(&mut self, reason: String, now: Instant) -> Vec<Action> {
        let last_canary = self.canary.map_or(0, |(count, _)| count.saturating_sub(1));
        self.fail_rollout(
            last_canary,
            format!("canary check failed: {reason}; no further server was touched"),
            now,
        )
    }

    /// An event nobody expects is a driver bug: no new server starts; those in flight
    /// finish their own way.
    fn internal_error(&mut self, reason: String, now: Instant) -> Vec<Action> {
        self.stop = Stop::Failed;
        self.failures.push(format!("internal error: {reason}"));
        if self.own == Own::Finished {
            return Vec::new();
        }
        self.own = Own::Idle;
        self.advance(now)
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

    /// Nothing in flight, nothing more to start: the finish.
    fn conclude(&mut self) -> Action {
        self.own = Own::Finished;
        let (outcome, reasons) = if !self.failures.is_empty() {
            (Outcome::Failed, &self.failures)
        } else if self.stop == Stop::Interrupted || !self.interruptions.is_empty() {
            (Outcome::Interrupted, &self.interruptions)
        } else {
            (Outcome::Success, &self.interruptions)
        };
        let reason = match (outcome, reasons.is_empty()) {
            (Outcome::Success, _) => None,
            (_, false) => Some(reasons.join("; ")),
            (_, true) => Some("stopped by the operator before the next server".to_owned()),
        };
        // Every server left out of rotation, or in a state this rollout could not confirm,
        // is reported with the commands that return it; no other server needs any.
        for index in 0..self.results.len() {
            self.results[index].restore = match self.results[index].state {
                ServerState::OutOfRotation
                | ServerState::Unknown
                | ServerState::Skipped {
                    out_of_rotation: true,
                } => self.restore_commands(index),
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
