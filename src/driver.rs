//! Runs a rollout: performs each effect the engine asks for (runtime API, SSH, HTTP, a poll
//! interval) and feeds the result back, until the engine finishes.
//!
//! Each server in flight runs one effect at a time; the effects of different servers run
//! concurrently, and their polls are shared. Every state change is written to the journal
//! before it is made and after. A safe stop never cuts an effect short (a restart in
//! progress is let finish); it is handed to the engine between effects. `abort --now`
//! abandons every effect in flight. After every poll and change, and every poll interval
//! while effects run, each HAProxy's identity is checked: after a reload, the state each
//! server in flight must have is put back before anything else happens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::effects::Effects;
use crate::engine::rollout::{
    Action, CommandFailure, CommandState, Effect, Event, Finish, Lane, OldProcess, Polled, Report,
    Rollout, Stage,
};
use crate::haproxy::{AdminTarget, ClientError, Info};
use crate::journal::{Change, Record, SentCommand, WriteError, now};
use crate::plan::template::{PlaceholderValues, health_url, remote_command};
use crate::plan::{HookPoint, Plan, ServerName};
use crate::ssh::{CommandError, Marker, Tracked, tracked_command};

pub use interrupt::{Cause, Interrupt};
use interrupt::{NOW, SAFE};

pub struct Driver<'a, E: Effects> {
    pub plan: &'a Plan,
    /// Every effect on the world: HAProxy, hosts, health URLs, the journal.
    pub effects: E,
    pub targets: Vec<PlaceholderValues>,
    /// The backend locks, taken again for a new HAProxy process after a reload.
    pub locks: Option<&'a crate::state::BackendLocks>,
    pub interrupt: Interrupt,
    /// Each HAProxy's process identity as the rollout first saw it.
    pub identities: Mutex<Vec<Info>>,
    /// Which backends each server is in, on each HAProxy.
    pub topology: crate::engine::Topology,
    /// Names this rollout in the markers of its commands.
    pub rollout_id: String,
    /// Per HAProxy instance: since when every poll of it failed (reported once when it goes
    /// and once when it is back).
    pub unreachable: Mutex<Vec<Option<Instant>>>,
    /// Per plan index: the last command started for that server, whose marker proves on its
    /// host whether it still runs (filled from the journal when recovering).
    pub commands: Mutex<std::collections::HashMap<usize, StartedCommand>>,
}

impl<'a, E: Effects> Driver<'a, E> {
    /// A driver for `plan` with the world behind `effects`: each server's placeholder values
    /// (`targets`), which backends each server is in, and each HAProxy's process as
    /// pre-flight saw it. Without backend locks and with no command of an earlier run known
    /// until `with_locks` and `with_commands` say otherwise.
    pub fn new(
        plan: &'a Plan,
        effects: E,
        targets: Vec<PlaceholderValues>,
        topology: crate::engine::Topology,
        identities: Vec<Info>,
        rollout_id: String,
    ) -> Self {
        Driver {
            plan,
            effects,
            targets,
            locks: None,
            interrupt: Interrupt::default(),
            identities: Mutex::new(identities),
            topology,
            rollout_id,
            unreachable: Mutex::new(Vec::new()),
            commands: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes the backend locks again for a new HAProxy process after a reload.
    pub fn with_locks(mut self, locks: &'a crate::state::BackendLocks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The commands an earlier run started, by plan index, whose markers say whether
    /// they still run.
    pub fn with_commands(self, commands: Vec<(usize, StartedCommand)>) -> Self {
        *self.commands.lock().expect("the commands lock") = commands.into_iter().collect();
        self
    }
}

/// A command started on a server's host (`None`: this machine), with its marker.
#[derive(Debug, Clone)]
pub struct StartedCommand {
    pub host: Option<String>,
    pub marker: Marker,
}

/// Whether a process of this machine still runs (a zombie nobody reaped does not).
fn still_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `Z` is a zombie.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether a runtime API address is on this machine.
pub fn is_local(address: &crate::plan::SocketAddress) -> bool {
    match address {
        crate::plan::SocketAddress::Unix(_) => true,
        crate::plan::SocketAddress::Tcp { host, .. } => {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        // Another host, even when it is this one under another name: its processes
        // cannot be seen from here.
        crate::plan::SocketAddress::Ssh { .. } => false,
    }
}

fn change_of(target: AdminTarget) -> Change {
    match target {
        AdminTarget::Drain => Change::Drain,
        AdminTarget::Maint => Change::Maint,
        AdminTarget::Ready => Change::Ready,
    }
}

type Views = Vec<Result<Vec<crate::haproxy::ServerView>, String>>;

impl<E: Effects> Driver<'_, E> {
    /// Runs `engine` to its finish. `report` sees every report, the driver's own included.
    ///
    /// Each lane's effect runs concurrently with the others'. Polls are shared: the lanes
    /// that ask for one while none is running get the next one, which starts after they
    /// asked, so every lane sees HAProxy after its own last change.
    /// Says why the rollout stops, and how: at its next safe point, or now.
    fn report_stopping(&self, now: bool, report: &mut impl FnMut(&Report)) {
        if let Some(cause) = self.interrupt.cause() {
            report(&Report::Stopping {
                kind: cause.kind,
                from: cause.from,
                now,
            });
        }
    }

    pub async fn run(&self, mut engine: Rollout, mut report: impl FnMut(&Report)) -> Finish {
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut poll: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Views> + '_>>> =
            None;
        let (mut polled_for, mut poll_next): (Vec<Lane>, Vec<Lane>) = (Vec::new(), Vec::new());
        let (mut safe_delivered, mut now_delivered) = (false, false);
        let mut ticker = tokio::time::interval(self.plan.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reload_check = Instant::now();
        let mut actions = engine.start(Instant::now());
        loop {
            for action in actions.drain(..) {
                match action {
                    Action::Report(event) => {
                        match &event {
                            Report::ServerDone { server, .. } => {
                                let _ = self.write(Record::ServerDone {
                                    time: now(),
                                    server: server.to_string(),
                                });
                            }
                            Report::ServerFailed {
                                server,
                                stage: Stage::Verifying,
                                reason,
                            } => {
                                let _ = self.write(Record::Outcome {
                                    time: now(),
                                    server: server.to_string(),
                                    change: Change::Verify,
                                    ok: false,
                                    error: Some(reason.clone()),
                                    may_still_run: false,
                                });
                            }
                            Report::AnalysisVerdict { verdict, tallied } => {
                                let _ = self.write(Record::Analysis {
                                    time: now(),
                                    verdict: verdict.as_str().to_owned(),
                                    requests: tallied.requests,
                                    errors: tallied.errors,
                                });
                            }
                            Report::CommandEnded { server, proven, .. } => {
                                let _ = self.write(Record::CommandEnded {
                                    time: now(),
                                    server: server.to_string(),
                                    proven: *proven,
                                });
                            }
                            _ => {}
                        }
                        report(&event);
                    }
                    Action::Finish(finish) => return finish,
                    Action::Run(lane, Effect::Poll) => poll_next.push(lane),
                    Action::Run(lane, effect) => in_flight.push(self.perform(lane, effect)),
                }
            }
            if poll.is_none() && !poll_next.is_empty() {
                polled_for = std::mem::take(&mut poll_next);
                poll = Some(Box::pin(self.poll()));
            }
            if poll.is_none() && in_flight.is_empty() {
                // An engine that neither finishes nor asks for anything would hang.
                actions = engine.stalled(Instant::now());
                continue;
            }
            actions = tokio::select! {
                biased;
                () = self.interrupt.reached(NOW), if !now_delivered => {
                    self.report_stopping(true, &mut report);
                    now_delivered = true;
                    safe_delivered = true;
                    in_flight.clear();
                    poll = None;
                    polled_for.clear();
                    poll_next.clear();
                    engine.abort_now(Instant::now())
                }
                () = self.interrupt.reached(SAFE), if !safe_delivered => {
                    self.report_stopping(false, &mut report);
                    safe_delivered = true;
                    engine.interrupt(Instant::now())
                }
                views = async { poll.as_mut().expect("a poll runs").await }, if poll.is_some() => {
                    poll = None;
                    let views = Polled::new(views);
                    // Identities are read after the views: unchanged, the views came from
                    // the same process; changed, a reload happened and the old process
                    // counts.
                    if !now_delivered {
                        last_reload_check = Instant::now();
                        self.check_reloads(&mut engine, &mut report).await;
                    }
                    self.report_reachability(&views, &mut report);
                    let gone: Vec<OldProcess> = engine
                        .old_processes()
                        .into_iter()
                        .filter(|process| !still_runs(process.pid))
                        .collect();
                    engine.old_processes_gone(&gone);
                    let now = Instant::now();
                    let mut actions = Vec::new();
                    for lane in polled_for.drain(..) {
                        actions.extend(engine.handle(lane, Event::Polled(views.clone()), now));
                    }
                    actions
                }
                Some((lane, event)) = futures::StreamExt::next(&mut in_flight), if !in_flight.is_empty() => {
                    let changed = matches!(
                        event,
                        Event::Changed(_) | Event::Restarted(_) | Event::HookDone(_)
                    );
                    if changed && !now_delivered {
                        last_reload_check = Instant::now();
                        self.check_reloads(&mut engine, &mut report).await;
                    }
                    engine.handle(lane, event, Instant::now())
                }
                _ = ticker.tick() => {
                    // While effects run (a restart, a hook), a reload would put a server
                    // back into traffic: watch for it every poll interval.
                    if !now_delivered && last_reload_check.elapsed() >= self.plan.poll_interval {
                        last_reload_check = Instant::now();
                        self.check_reloads(&mut engine, &mut report).await;
                    }
                    Vec::new()
                }
            };
        }
    }

    fn write(&self, record: Record) -> Result<(), WriteError> {
        // A journal that cannot be written must not go unnoticed: it is what makes an
        // interrupted rollout recoverable.
        self.effects.record(&record).inspect_err(|error| {
            tracing::error!("cannot write the journal: {error}");
        })
    }

    /// Journals a change about to be made. A change that moves the rollout forward (drain,
    /// cutting sessions, the restart) is not made unless this succeeded; a change in the
    /// safe direction (maintenance, back to ready) is made anyway when only the journal
    /// file failed, since it is how the rollout stops safely, but never when shared state
    /// refused the write (fenced): another command may be in charge of the server now.
    fn intent(&self, server: &ServerName, change: Change) -> Result<(), String> {
        self.intent_of(server, change, None)
    }

    fn intent_of(
        &self,
        server: &ServerName,
        change: Change,
        command: Option<SentCommand>,
    ) -> Result<(), String> {
        let written = self.write(Record::Intent {
            time: now(),
            server: server.to_string(),
            change,
            command,
        });
        match (change, written) {
            (_, Ok(())) => Ok(()),
            (Change::Maint | Change::Ready, Err(error)) if error.allows_safe_changes() => Ok(()),
            (_, Err(error)) => Err(format!("cannot write the journal: {error}")),
        }
    }

    fn outcome<T, Error: std::fmt::Display>(
        &self,
        server: &ServerName,
        change: Change,
        result: &Result<T, Error>,
    ) {
        let _ = self.write(Record::Outcome {
            time: now(),
            server: server.to_string(),
            change,
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
            may_still_run: false,
        });
    }

    /// Runs one effect of one lane (never a poll: polls are shared, see `run`).
    async fn perform(&self, lane: Lane, effect: Effect) -> (Lane, Event) {
        let event = match effect {
            Effect::Poll => Event::Polled(Polled::new(self.poll().await)),
            Effect::SetState(server, target) => {
                if let Err(error) = self.intent(&server, change_of(target)) {
                    return (lane, Event::Changed(Err(error)));
                }
                let result = self.set_state(&server, target).await;
                self.outcome(&server, change_of(target), &result);
                Event::Changed(result)
            }
            Effect::ShutdownSessions(server) => {
                if let Err(error) = self.intent(&server, Change::ShutdownSessions) {
                    return (lane, Event::Changed(Err(error)));
                }
                let result = self.shutdown_sessions(&server).await;
                self.outcome(&server, Change::ShutdownSessions, &result);
                Event::Changed(result)
            }
            Effect::Restart(index) => {
                let server = self.plan.servers[index].name.clone();
                let host = self.targets[index].host.clone();
                let marker = match self.command_intent(
                    index,
                    Change::Restart,
                    Some(&host),
                    self.plan.restart.timeout,
                ) {
                    Ok(marker) => marker,
                    Err(error) => return (lane, Event::Restarted(Err(error))),
                };
                let result = self.restart(index, &marker).await;
                self.command_outcome(&server, Change::Restart, &result);
                Event::Restarted(result)
            }
            Effect::CheckCommand(index) => {
                let started = self
                    .commands
                    .lock()
                    .expect("the commands lock")
                    .get(&index)
                    .cloned();
                Event::CommandChecked(match started {
                    None => Err("no marker was recorded for its last command".to_owned()),
                    Some(started) => self.check_command(&started).await,
                })
            }
            Effect::Probe(index) => {
                let server = &self.plan.servers[index];
                let url = health_url(server.health_url(self.plan), &self.targets[index]);
                Event::Probed(self.effects.probe(&url).await)
            }
            Effect::Verify(index) => Event::Verified(self.read_verify(index).await),
            Effect::ReadCurrent(servers) => {
                let answers =
                    futures::future::join_all(servers.iter().map(|index| self.read_verify(*index)))
                        .await;
                for (index, answer) in servers.iter().zip(&answers) {
                    if let Ok(answer) = answer {
                        // A fact for a later rollback; the rollout does not depend on it.
                        let _ = self.write(Record::Read {
                            time: now(),
                            server: self.plan.servers[*index].name.to_string(),
                            answer: answer.clone(),
                        });
                    }
                }
                Event::CurrentRead(answers)
            }
            Effect::Hook(point, index) => {
                let result = self.hook(point, index).await;
                if let Some(change) = hook_change(point) {
                    self.command_outcome(&self.plan.servers[index].name, change, &result);
                }
                Event::HookDone(result)
            }
            Effect::Wait | Effect::Backoff(_) => {
                let wait = match effect {
                    Effect::Backoff(wait) => wait,
                    _ => self.plan.poll_interval,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.interrupt.reached(SAFE) => {}
                }
                Event::Waited
            }
        };
        (lane, event)
    }
}

/// The journal's name for a hook that runs for one server (`on_failure` runs for the
/// rollout and is not a server's change).
fn hook_change(point: HookPoint) -> Option<Change> {
    match point {
        HookPoint::BeforeDrain => Some(Change::BeforeDrainHook),
        HookPoint::AfterRestart => Some(Change::AfterRestartHook),
        HookPoint::AfterReady => Some(Change::AfterReadyHook),
        HookPoint::OnFailure => None,
    }
}

/// A command that was lost or outlived its local deadline may still run; any other error
/// means it ran and failed.
fn command_failure(error: CommandError) -> CommandFailure {
    match error {
        CommandError::Lost { .. } | CommandError::Timeout { .. } => {
            CommandFailure::Unknown(error.to_string())
        }
        error => CommandFailure::Failed(error.to_string()),
    }
}

/// Runs the changes at once; every failure is reported, joined.
async fn all_ok(
    changes: impl IntoIterator<Item = impl std::future::Future<Output = Result<(), String>>>,
) -> Result<(), String> {
    let errors: Vec<String> = futures::future::join_all(changes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Retries a runtime-API change while HAProxy cannot be reached (100 ms, doubling, at most
/// 2 s apart), until `deadline`; any other error is final at once.
async fn retry<F, Fut>(deadline: Duration, mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(error @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. })) => {
                if start.elapsed() + pause > deadline {
                    return Err(format!(
                        "{} (retried for {}s)",
                        crate::error::error_chain(&error),
                        start.elapsed().as_secs()
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(crate::error::error_chain(&error)),
        }
    }
}

mod commands;
mod haproxy;
mod interrupt;

#[cfg(test)]
mod tests;
