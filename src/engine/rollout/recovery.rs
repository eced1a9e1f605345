//! Recovery from the live world: where each server an earlier run of this rollout was working
//! on goes on from, decided from what every HAProxy shows now (its admin state and sessions)
//! and the journal's facts (was its restart sent, did it succeed, may a command still run),
//! never from the journal alone. `resume` and `abort` both start here.

use super::Polled;
use super::server::{AfterCommand, EntryPoint};
use super::{CommandKind, MayRun, ServerState, Settings};
use crate::haproxy::AdminTarget;
use crate::plan::HookPoint;

/// What recovering is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `resume`: finish the rollout.
    Resume,
    /// `abort` after a killed run: put every server right, restart nothing, stop.
    Settle,
}

/// What the journal says about a server's restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartFact {
    NotSent,
    /// Its restart command exited 0.
    Succeeded,
    /// Sent, and it failed, or its outcome is unknown: it may have run, fully or in part.
    MayHaveRun,
}

/// A server an earlier run was working on, as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub index: usize,
    pub restart: RestartFact,
    /// A command the earlier run sent that nothing proved ended, and its remote bound.
    pub may_run: Option<MayRun>,
}

/// A server's admin state on every HAProxy and backend, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveState {
    /// Ready on at least one HAProxy: it may take new traffic.
    InTraffic,
    /// Ready nowhere, draining somewhere.
    Draining { sessions: u64 },
    /// In maintenance everywhere.
    Maintenance { sessions: u64 },
}

impl LiveState {
    pub fn text(self) -> String {
        match self {
            LiveState::InTraffic => "in traffic (ready)".to_owned(),
            LiveState::Draining { sessions } => format!("draining, {sessions} session(s)"),
            LiveState::Maintenance { sessions } => format!("in maintenance, {sessions} session(s)"),
        }
    }
}

/// Where a recovered server goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// In traffic and not restarted: like a server not yet started (capacity check, drain,
    /// zero sessions, restart).
    Queue,
    /// Nothing to do; its state for the summary.
    Leave(ServerState),
    Start(EntryPoint),
}

impl Decision {
    pub fn text(self) -> &'static str {
        match self {
            Decision::Queue => {
                "it starts again like any other server: capacity check, drain, 0 sessions, restart"
            }
            Decision::Leave(ServerState::Skipped { .. }) => {
                "skipped (--skip): left as it is, not touched"
            }
            Decision::Leave(_) => "it was never restarted and stays in traffic",
            Decision::Start(EntryPoint::RestartAfterSessions) => {
                "its restart is redone once no session is left on it"
            }
            Decision::Start(EntryPoint::AfterRestart { .. }) => {
                "it returns to traffic only once its health and HAProxy's checks pass"
            }
            Decision::Start(EntryPoint::ConfirmUp { .. }) => {
                "it was restarted and is in traffic: confirmed once exactly UP"
            }
            Decision::Start(EntryPoint::ReturnUnrestarted) => {
                "it was never restarted and returns to traffic"
            }
            Decision::Start(EntryPoint::AwaitCommand { .. }) => {
                "it stays in maintenance until that command can no longer run"
            }
            Decision::Start(EntryPoint::Checked) => "it starts again",
        }
    }
}

/// A decision made without a command that may run, as what follows one.
fn after_command(decision: Decision) -> AfterCommand {
    match decision {
        Decision::Queue => AfterCommand::Queue,
        Decision::Leave(state) => AfterCommand::Leave(state),
        Decision::Start(EntryPoint::RestartAfterSessions) => AfterCommand::RestartAfterSessions,
        Decision::Start(EntryPoint::ConfirmUp { restart_known }) => {
            AfterCommand::ConfirmUp { restart_known }
        }
        Decision::Start(EntryPoint::ReturnUnrestarted) => AfterCommand::ReturnUnrestarted,
        Decision::Start(EntryPoint::AfterRestart { restart_known }) => {
            AfterCommand::Probe { restart_known }
        }
        Decision::Start(EntryPoint::Checked | EntryPoint::AwaitCommand { .. }) => {
            AfterCommand::Probe {
                restart_known: false,
            }
        }
    }
}

/// The server's state on every HAProxy and backend it is in; `Err` names what is missing.
pub(super) fn live(settings: &Settings, index: usize, views: &Polled) -> Result<LiveState, String> {
    let server = &settings.servers[index];
    let (mut ready, mut draining, mut sessions) = (false, false, 0);
    for (instance, result) in views.iter().enumerate() {
        if let Err(error) = result {
            return Err(format!(
                "{} is unreadable: {error}",
                settings.haproxy(instance)
            ));
        }
        for backend in settings.topology.backends(instance, index) {
            let view = views
                .server(instance, backend.as_str(), server.as_str())
                .ok_or_else(|| {
                    format!(
                        "{} no longer has {backend}/{server}",
                        settings.haproxy(instance)
                    )
                })?;
            ready |= view.admin.ready();
            draining |= view.admin.draining() && !view.admin.in_maintenance();
            sessions += view.sessions;
        }
    }
    Ok(if ready {
        LiveState::InTraffic
    } else if draining {
        LiveState::Draining { sessions }
    } else {
        LiveState::Maintenance { sessions }
    })
}

/// Where a recovered server goes on from. Two rules hold in every cell: a server that may
/// take traffic is drained and reaches zero sessions before any restart (docs/safety.md, property 10), and
/// a server whose command may still run stays out of rotation until it cannot (property 9).
pub(super) fn decide(
    mode: Mode,
    live: LiveState,
    restart: RestartFact,
    may_run: Option<MayRun>,
) -> Decision {
    if let Some(may_run) = may_run {
        // Nothing new starts on its host, and it does not return to traffic, until the
        // command can no longer run. Only a command that runs while the server is out (its
        // restart, its `after_restart` hook) takes it out meanwhile, if its host shows it
        // still running: drained, so the sessions on it finish. A `before_drain` or
        // `after_ready` hook ran while it took traffic anyway.
        let holds_out = matches!(
            may_run.what,
            CommandKind::Restart | CommandKind::Hook(HookPoint::AfterRestart)
        );
        let secure = (holds_out && live == LiveState::InTraffic).then_some(AdminTarget::Drain);
        let secured = if secure.is_some() {
            LiveState::Draining { sessions: 0 }
        } else {
            live
        };
        return Decision::Start(EntryPoint::AwaitCommand {
            may_run,
            holding: match live {
                LiveState::InTraffic => None,
                LiveState::Draining { .. } => Some(AdminTarget::Drain),
                LiveState::Maintenance { .. } => Some(AdminTarget::Maint),
            },
            secure,
            then: after_command(decide(mode, live, restart, None)),
            then_secured: after_command(decide(mode, secured, restart, None)),
        });
    }
    let restart_known = restart == RestartFact::Succeeded;
    match (mode, live, restart) {
        (Mode::Resume, LiveState::InTraffic, RestartFact::Succeeded)
        | (Mode::Settle, LiveState::InTraffic, RestartFact::Succeeded | RestartFact::MayHaveRun) => {
            Decision::Start(EntryPoint::ConfirmUp { restart_known })
        }
        (Mode::Resume, LiveState::InTraffic, _) => Decision::Queue,
        (Mode::Settle, LiveState::InTraffic, RestartFact::NotSent) => {
            Decision::Leave(ServerState::ReturnedUnrestarted)
        }
        (_, LiveState::Draining { .. } | LiveState::Maintenance { .. }, RestartFact::Succeeded) => {
            Decision::Start(EntryPoint::AfterRestart { restart_known })
        }
        (Mode::Resume, LiveState::Draining { .. } | LiveState::Maintenance { .. }, _) => {
            Decision::Start(EntryPoint::RestartAfterSessions)
        }
        (
            Mode::Settle,
            LiveState::Draining { .. } | LiveState::Maintenance { .. },
            RestartFact::NotSent,
        ) => Decision::Start(EntryPoint::ReturnUnrestarted),
        (
            Mode::Settle,
            LiveState::Draining { .. } | LiveState::Maintenance { .. },
            RestartFact::MayHaveRun,
        ) => Decision::Start(EntryPoint::AfterRestart { restart_known }),
    }
}

mod start;
