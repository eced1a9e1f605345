//! The engine's vocabulary with the driver and the reporters: events in, effects and
//! reports out, and how a rollout and each server end.

use std::time::{Duration, Instant};

pub use super::super::observation::Polled;
pub use super::analysis::{CanaryVerdict, Tallied};
use crate::haproxy::AdminTarget;
use crate::plan::{HookPoint, ServerName};

/// What the driver reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Server views of every HAProxy, in plan order; an unreadable one carries its error.
    Polled(Polled),
    /// The result of a state change or session shutdown on every HAProxy and backend.
    Changed(Result<(), String>),
    Restarted(Result<(), CommandFailure>),
    Probed(Result<(), String>),
    /// What `verify` read on a server (its answer, whitespace trimmed), or why it could not.
    Verified(Result<String, String>),
    /// What `verify` read on each server of a `ReadCurrent`, in its order.
    CurrentRead(Vec<Result<String, String>>),
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
    /// Its stable name for pipelines (docs/events.md).
    pub fn key(self) -> &'static str {
        match self {
            CommandKind::Restart => "restart",
            CommandKind::Hook(point) => point.as_str(),
        }
    }

    /// Its name for people.
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
    /// Read what the server at this plan index runs (`verify`) once.
    Verify(usize),
    /// Read what each of these servers runs (`verify`) before it is touched, at once.
    ReadCurrent(Vec<usize>),
    /// Ask the host of the server at this plan index, over a fresh connection, whether the
    /// last command started for it still runs.
    CheckCommand(usize),
    /// Run a hook for the server at this plan index.
    Hook(HookPoint, usize),
    /// Wait one poll interval.
    Wait,
    /// Wait this long (less than a poll interval): a quick retry that ends a wait soon
    /// after what it waits for happened.
    Backoff(Duration),
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
pub(super) struct OldSessions {
    pub process: OldProcess,
    pub servers: Vec<usize>,
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
    /// Reading what it runs (`verify`) after its restart.
    Verifying,
    WaitingForChecks,
    ReturningToTraffic,
    Hook(HookPoint),
}

impl Stage {
    /// Its stable name for pipelines (docs/events.md).
    pub fn key(self) -> &'static str {
        match self {
            Stage::CheckingCapacity => "checking_capacity",
            Stage::Draining => "draining",
            Stage::WaitingForSessions => "waiting_sessions",
            Stage::Restarting => "restarting",
            Stage::WaitingForHealth => "health",
            Stage::Verifying => "verifying",
            Stage::WaitingForChecks => "haproxy_checks",
            Stage::ReturningToTraffic => "returning",
            Stage::Hook(HookPoint::BeforeDrain) => "hook_before_drain",
            Stage::Hook(HookPoint::AfterRestart) => "hook_after_restart",
            Stage::Hook(HookPoint::AfterReady) => "hook_after_ready",
            Stage::Hook(HookPoint::OnFailure) => "hook_on_failure",
        }
    }

    /// Its name for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CheckingCapacity => "checking capacity",
            Stage::Draining => "draining",
            Stage::WaitingForSessions => "waiting for 0 sessions",
            Stage::Restarting => "restarting",
            Stage::WaitingForHealth => "waiting for its health endpoint",
            Stage::Verifying => "verifying what it runs",
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
    /// Left as it was: before it was touched, `verify` answered what this rollout deploys
    /// (`skip_current`).
    Current,
    /// Restarted and back in traffic, UP on every HAProxy.
    Done,
    /// Rolled back: back in traffic, UP, answering what it ran before the rollout.
    RolledBack,
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
    /// What `verify` read on it before this rollout touched it.
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Stage {
        server: ServerName,
        stage: Stage,
        /// How long the stage may last before the server fails (`None`: a single step).
        within: Option<Duration>,
    },
    /// The rollout was asked to stop: at its next safe point, or `now`.
    Stopping {
        /// `abort`, `signal` or `conflict` (docs/events.md).
        kind: &'static str,
        /// Where the request came from, for people.
        from: String,
        now: bool,
    },
    /// A wait goes on, and why: reported when the reason changes (a refused connection
    /// that becomes a 503, a check that goes from L4CON to L7STS).
    Waiting {
        server: ServerName,
        stage: Stage,
        last: String,
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
    /// After its restart, it answers what this rollout deploys.
    Verified {
        server: ServerName,
        answer: String,
    },
    /// Before it was touched, it already answered what this rollout deploys: left as it is.
    AlreadyCurrent {
        server: ServerName,
        answer: String,
    },
    /// Before it was touched, `verify` read this (`None`: it could not be read, why in
    /// `error`); the server is deployed.
    Running {
        server: ServerName,
        answer: Option<String>,
        error: Option<String>,
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
    /// The canaries' analysis so far (at most once a second).
    Analysis {
        tallied: Tallied,
    },
    /// The canaries' analysis ended.
    AnalysisVerdict {
        verdict: CanaryVerdict,
        tallied: Tallied,
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
