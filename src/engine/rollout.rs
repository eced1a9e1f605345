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
use crate::haproxy::AdminTarget;
use crate::plan::{CanaryPause, HookPoint, Plan, ServerName};

mod admission;
mod analysis;
mod canary;
mod current;
mod recovery;
mod reload;
mod rollback;
mod server;
mod settings;
mod types;

use types::OldSessions;
pub use types::*;

pub use recovery::{LiveState, Mode, Recovered, RestartFact};
use server::{EntryPoint, RunStep, ServerRun};
use settings::Settings;

/// The coordinator's own effect in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
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
    /// Reading what these servers run before they are touched (`skip_current`).
    ReadingCurrent(Vec<usize>),
    /// Reading the canaries' counters (their analysis).
    Analyzing,
    /// Between two reads of the analysis.
    AnalysisWait,
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
enum Halt {
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
    /// The canaries' analysis, if the plan has one, and whether it passed.
    canary_analysis: Option<crate::plan::Analysis>,
    analysis: Option<analysis::Analysis>,
    analysis_passed: bool,
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
    task: Task,
    /// The next server's capacity is short while other servers of this rollout are out:
    /// wait for one of them to finish before checking again.
    blocked: bool,
    halt: Halt,
    failures: Vec<String>,
    interruptions: Vec<String>,
    /// The `on_failure` hook may still run (it runs once; settling runs none).
    hooks_enabled: bool,
    /// The `on_failure` hook runs for this server as soon as the coordinator is free.
    failure_hook_due: Option<usize>,
    /// With `verify`, what each server runs is read before it is touched (`read` marks the
    /// servers read): its `{previous}`, and with `skip_current`, whether it is left as it is.
    read_first: bool,
    skip_current: bool,
    read: Vec<bool>,
    /// A rollback (`Rollout::rollback`): servers it put back, or found back, are rolled back.
    rolling_back: bool,
}

impl Rollout {
    pub fn new(plan: &Plan, topology: Topology, limits: Limits) -> Self {
        let settings = Settings::of(plan, topology);
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
                previous: None,
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
            canary_analysis: plan.canary.as_ref().and_then(|canary| canary.analysis),
            analysis: None,
            analysis_passed: false,
            results,
            flights: BTreeMap::new(),
            recovering: Vec::new(),
            skipped: Vec::new(),
            old_sessions: Vec::new(),
            settling: false,
            task: Task::Idle,
            blocked: false,
            halt: Halt::No,
            failures: Vec::new(),
            interruptions: Vec::new(),
            hooks_enabled: true,
            failure_hook_due: None,
            read_first: plan.verify.is_some(),
            skip_current: plan.skip_current && plan.verify.is_some(),
            read: vec![false; plan.servers.len()],
            rolling_back: false,
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
            rollout.halt = Halt::Interrupted;
            rollout.hooks_enabled = false;
            rollout.settling = true;
        }
        rollout
    }

    /// Whether the canaries' analysis passed in an earlier run. If it did not, canaries done
    /// before are judged again before any other server starts (and paused for again).
    pub fn canaries_judged(mut self, passed: bool) -> Self {
        if self.canary_analysis.is_some() {
            self.analysis_passed = passed;
            if !passed {
                self.canary_passed = false;
            }
        }
        self
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

    /// The first actions.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if !self.recovering.is_empty() {
            self.task = Task::Recovering { since: now };
            return vec![Action::Run(Lane::Rollout, Effect::Poll)];
        }
        self.advance(now)
    }

    /// Takes the result of a lane's effect and returns what to do next.
    pub fn handle(&mut self, lane: Lane, event: Event, now: Instant) -> Vec<Action> {
        match lane {
            Lane::Rollout => self.handle_task(event, now),
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

    /// Halt at the next safe point: no new server starts; each server in flight stops at
    /// its own next safe point (see `ServerRun::interrupt`).
    pub fn interrupt(&mut self, now: Instant) -> Vec<Action> {
        if self.halt == Halt::No {
            self.halt = Halt::Interrupted;
        }
        for flight in self.flights.values_mut() {
            flight.interrupt_pending = true;
        }
        if self.task == Task::Idle {
            return self.advance(now);
        }
        Vec::new()
    }

    /// Halt now: every effect in flight was abandoned; each touched server is left out of
    /// rotation (see `ServerRun::abort_now`).
    pub fn abort_now(&mut self, now: Instant) -> Vec<Action> {
        if self.halt == Halt::No {
            self.halt = Halt::Interrupted;
        }
        if matches!(
            self.task,
            Task::CanaryWait { .. } | Task::CanaryCheck | Task::CanaryProbe { .. }
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
        self.halt = Halt::Failed;
        self.failures
            .push("internal error: the rollout stalled with nothing in flight".to_owned());
        self.stop_all_now("stopped on an internal error", now)
    }

    /// Every effect in flight was abandoned: each server in flight stops now (see
    /// `ServerRun::stop_now`); the coordinator's own effect is dropped.
    fn stop_all_now(&mut self, why: &str, now: Instant) -> Vec<Action> {
        if self.task != Task::Finished {
            self.task = Task::Idle;
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
        if self.flights.is_empty() && self.task == Task::Idle {
            actions.extend(self.advance(now));
        }
        actions
    }

    fn launch(&mut self, index: usize, start: EntryPoint, now: Instant) -> Vec<Action> {
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
    fn follow(&mut self, index: usize, steps: Vec<RunStep>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for step in steps {
            match step {
                RunStep::Run(effect) => actions.push(Action::Run(Lane::Server(index), effect)),
                RunStep::Report(report) => actions.push(Action::Report(report)),
                RunStep::Done(done) => {
                    self.flights.remove(&index);
                    let previous = self.results[index].previous.take();
                    self.results[index] = ServerResult {
                        previous,
                        ..done.result
                    };
                    if done.requeue {
                        self.queue.push_front(index);
                    }
                    match done.outcome {
                        Outcome::Success => {}
                        Outcome::Failed => {
                            self.fail(index, done.reason);
                        }
                        Outcome::Interrupted | Outcome::Paused => {
                            if self.halt == Halt::No {
                                self.halt = Halt::Interrupted;
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

    fn handle_task(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (std::mem::replace(&mut self.task, Task::Idle), event) {
            (Task::Recovering { since }, Event::Polled(views)) => {
                self.recover_from(&views, since, now)
            }
            (Task::RecoveringWait { since }, Event::Waited) => {
                self.task = Task::Recovering { since };
                vec![Action::Run(Lane::Rollout, Effect::Poll)]
            }
            (Task::Admitting(next), Event::Polled(views)) => self.admit(next, &views, now),
            (Task::ReadingCurrent(servers), Event::CurrentRead(answers)) => {
                self.after_current_read(&servers, answers, now)
            }
            (Task::FailureHook, Event::HookDone(result)) => {
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
            (Task::CanaryWait { until }, Event::Waited) => {
                if self.halt != Halt::No {
                    self.interruptions
                        .push("stopped during the canary pause".to_owned());
                    return self.advance(now);
                }
                if now < until {
                    self.task = Task::CanaryWait { until };
                    return vec![Action::Run(Lane::Rollout, Effect::Wait)];
                }
                self.task = Task::CanaryCheck;
                vec![Action::Run(Lane::Rollout, Effect::Poll)]
            }
            (Task::CanaryCheck, Event::Polled(views)) => self.after_canary_poll(&views, now),
            (Task::Analyzing, Event::Polled(views)) => self.after_analysis_poll(&views, now),
            (Task::AnalysisWait, Event::Waited) => {
                self.task = Task::Analyzing;
                vec![Action::Run(Lane::Rollout, Effect::Poll)]
            }
            (Task::CanaryProbe { next }, Event::Probed(Ok(()))) => {
                let canaries = self.canary.map_or(0, |(count, _)| count);
                if next + 1 < canaries {
                    self.task = Task::CanaryProbe { next: next + 1 };
                    return vec![Action::Run(Lane::Rollout, Effect::Probe(next + 1))];
                }
                self.canary_passed = true;
                self.advance(now)
            }
            (Task::CanaryProbe { next }, Event::Probed(Err(error))) => {
                let server = self.settings.servers[next].clone();
                self.canary_failed(format!("{server} is no longer healthy: {error}"), now)
            }
            (task, event) => {
                self.task = task;
                self.internal_error(format!("{event:?} in {:?}", self.task), now)
            }
        }
    }

    /// A failure of the rollout as a whole (not of a server's run): stop new starts, run
    /// the failure hook (for `server`), finish once the servers in flight are back.
    fn fail_rollout(&mut self, server: usize, reason: String, now: Instant) -> Vec<Action> {
        if self.halt == Halt::Interrupted {
            self.interruptions.push(reason);
        } else {
            self.fail(server, Some(reason));
        }
        self.advance(now)
    }

    /// A failure: no new server starts, and the `on_failure` hook is due for `server` —
    /// once per rollout, and not once the operator asked to stop.
    fn fail(&mut self, server: usize, reason: Option<String>) {
        if self.halt != Halt::Interrupted
            && self.hooks_enabled
            && self.settings.hooks.contains(&HookPoint::OnFailure)
        {
            self.hooks_enabled = false;
            self.failure_hook_due = Some(server);
        }
        self.halt = Halt::Failed;
        self.failures.extend(reason);
    }

    /// An event nobody expects is a driver bug: no new server starts; those in flight
    /// finish their own way.
    fn internal_error(&mut self, reason: String, now: Instant) -> Vec<Action> {
        self.halt = Halt::Failed;
        self.failures.push(format!("internal error: {reason}"));
        if self.task == Task::Finished {
            return Vec::new();
        }
        self.task = Task::Idle;
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
        self.task = Task::Finished;
        let (outcome, reasons) = if !self.failures.is_empty() {
            (Outcome::Failed, &self.failures)
        } else if self.halt == Halt::Interrupted || !self.interruptions.is_empty() {
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
            if self.rolling_back
                && matches!(
                    self.results[index].state,
                    ServerState::Done | ServerState::Current
                )
            {
                self.results[index].state = ServerState::RolledBack;
            }
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
