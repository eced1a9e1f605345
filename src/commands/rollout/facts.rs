//! The journal's facts about the servers an earlier run was working on: what was sent to
//! each, and until when a command may still run. Facts only: the engine decides from what
//! every HAProxy shows now.

use std::time::Instant;

use super::Context;
use crate::driver::StartedCommand;
use crate::engine::rollout::{CommandKind, MayRun, Mode, Recovered, RestartFact};
use crate::journal::{Change, Interrupted};
use crate::plan::HookPoint;
use crate::ssh::Marker;

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
        /// The canaries' analysis passed in an earlier run.
        analysis_passed: bool,
    },
    /// Roll these servers back (plan index, what `verify` read on it before the rollout),
    /// newest first; the plan is the rollback's (`Plan::for_rollback`). `facts`: what an
    /// earlier rollback that was killed left in flight.
    Rollback {
        servers: Vec<(usize, Option<String>)>,
        facts: Facts,
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
    /// What `verify` must answer when it is not what the plan deploys: a rollback's servers
    /// answer what they ran before the rollout.
    pub expected: Vec<(usize, Option<String>)>,
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
