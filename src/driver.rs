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

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::effects::Effects;
use crate::engine::rollout::{
    Action, CommandFailure, CommandState, Effect, Event, Finish, Lane, OldProcess, Report, Rollout,
};
use crate::haproxy::{AdminTarget, ClientError, Info};
use crate::health::health_url;
use crate::journal::{Change, Record, SentCommand, now};
use crate::plan::{HookPoint, Plan, ServerName};
use crate::ssh::{
    KILL_AFTER, Marker, PlaceholderValues, SshError, Tracked, remote_command, tracked_command,
};

/// How hard the operator asked to stop.
#[derive(Clone, Default)]
pub struct Interrupt {
    level: Arc<AtomicU8>,
    notify: Arc<Notify>,
}

const SAFE: u8 = 1;
const NOW: u8 = 2;

impl Interrupt {
    /// Stop at the next safe point.
    pub fn safe(&self) {
        self.level.fetch_max(SAFE, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Stop now, abandoning the step in flight.
    pub fn now(&self) {
        self.level.fetch_max(NOW, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn level(&self) -> u8 {
        self.level.load(Ordering::SeqCst)
    }

    async fn reached(&self, level: u8) {
        loop {
            let notified = self.notify.notified();
            if self.level() >= level {
                return;
            }
            notified.await;
        }
    }
}

pub struct Driver<'a, E: Effects> {
    pub plan: &'a Plan,
    /// Every effect on the world: HAProxy, hosts, health URLs, the journal.
    pub effects: E,
    pub targets: Vec<PlaceholderValues>,
    /// The backend locks, taken again for a new HAProxy process after a reload.
    pub locks: Option<&'a crate::lock::BackendLocks>,
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
                    now_delivered = true;
                    safe_delivered = true;
                    in_flight.clear();
                    poll = None;
                    polled_for.clear();
                    poll_next.clear();
                    engine.abort_now(Instant::now())
                }
                () = self.interrupt.reached(SAFE), if !safe_delivered => {
                    safe_delivered = true;
                    engine.interrupt(Instant::now())
                }
                views = async { poll.as_mut().expect("a poll runs").await }, if poll.is_some() => {
                    poll = None;
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

    fn write(&self, record: Record) -> Result<(), String> {
        // A journal that cannot be written must not go unnoticed: it is what makes an
        // interrupted rollout recoverable.
        self.effects.record(&record).map_err(|error| {
            tracing::error!("cannot write the journal: {error}");
            format!("cannot write the journal: {error}")
        })
    }

    /// Journals a change about to be made. A change that moves the rollout forward (drain,
    /// cutting sessions, the restart) is not made unless this succeeded; a change in the
    /// safe direction (maintenance, back to ready) is made anyway, since it is how the
    /// rollout stops safely.
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
        match change {
            Change::Maint | Change::Ready => Ok(()),
            _ => written,
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

    /// The outcome of a command: one whose outcome is unknown may still run.
    fn command_outcome(
        &self,
        server: &ServerName,
        change: Change,
        result: &Result<(), CommandFailure>,
    ) {
        let _ = self.write(Record::Outcome {
            time: now(),
            server: server.to_string(),
            change,
            ok: result.is_ok(),
            error: result.as_ref().err().map(|error| error.text().to_owned()),
            may_still_run: matches!(result, Err(CommandFailure::Unknown(_))),
        });
    }

    /// Journals a command about to be started for the server at `index` (on `host`, or
    /// here), with the marker that will prove whether it still runs and its remote bound,
    /// and remembers the marker for `Effect::CheckCommand`.
    fn command_intent(
        &self,
        index: usize,
        change: Change,
        host: Option<&str>,
        timeout: Duration,
    ) -> Result<Marker, CommandFailure> {
        let server = &self.plan.servers[index].name;
        let marker = Marker::new(&self.rollout_id, server.as_str());
        let until = std::time::SystemTime::now() + self.plan.remote_bound(timeout);
        self.intent_of(
            server,
            change,
            Some(SentCommand {
                host: host.map(str::to_owned),
                marker: marker.as_str().to_owned(),
                until: humantime::format_rfc3339_millis(until).to_string(),
            }),
        )
        .map_err(CommandFailure::Failed)?;
        self.commands.lock().expect("the commands lock").insert(
            index,
            StartedCommand {
                host: host.map(str::to_owned),
                marker: marker.clone(),
            },
        );
        Ok(marker)
    }

    /// Runs one effect of one lane (never a poll: polls are shared, see `run`).
    async fn perform(&self, lane: Lane, effect: Effect) -> (Lane, Event) {
        let event = match effect {
            Effect::Poll => Event::Polled(self.poll().await),
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
            Effect::Hook(point, index) => {
                let result = self.hook(point, index).await;
                if let Some(change) = hook_change(point) {
                    self.command_outcome(&self.plan.servers[index].name, change, &result);
                }
                Event::HookDone(result)
            }
            Effect::Wait => {
                tokio::select! {
                    () = tokio::time::sleep(self.plan.poll_interval) => {}
                    () = self.interrupt.reached(SAFE) => {}
                }
                Event::Waited
            }
        };
        (lane, event)
    }

    /// Reads every HAProxy's identity; after a reload, puts back the state each server in
    /// flight must have (a reload drops runtime-set states) and reports it.
    async fn check_reloads(&self, engine: &mut Rollout, report: &mut impl FnMut(&Report)) {
        for index in 0..self.plan.haproxy.len() {
            let Ok(info) = self.effects.info(index).await else {
                continue;
            };
            let old_pid = {
                let mut identities = self.identities.lock().expect("the identities lock");
                if !info.reloaded_since(&identities[index]) {
                    continue;
                }
                std::mem::replace(&mut identities[index], info.clone()).pid
            };
            let instance = &self.plan.haproxy[index];
            if let Some(locks) = self.locks
                && let Err(error) = locks.take(index, &info.identity())
            {
                // Another rollout took the new process's backends first: stop at the next
                // safe point rather than change servers under it.
                let text = format!(
                    "HAProxy {} reloaded and its new process's backends are taken: {error}; stopping at the next safe point",
                    instance.name
                );
                tracing::error!("{text}");
                report(&Report::Warning { text });
                self.interrupt.safe();
            }
            // Sessions the old process still serves are invisible from here on: the engine
            // counts them while it may run.
            let old = (old_pid != 0 && old_pid != info.pid).then(|| OldProcess {
                instance: index,
                pid: old_pid,
                visible: is_local(&instance.socket),
            });
            let mut reapplied = Vec::new();
            for (server, target) in engine.reloaded(old) {
                let _ = self.intent(&server, change_of(target));
                let result = self.set_state_on(index, &server, target).await;
                self.outcome(&server, change_of(target), &result);
                reapplied.push(match result {
                    Ok(()) => format!("{server} {}", target.as_str()),
                    Err(error) => format!("{server} {} FAILED: {error}", target.as_str()),
                });
            }
            let reapplied = (!reapplied.is_empty()).then(|| reapplied.join(", "));
            let _ = self.write(Record::Reload {
                time: now(),
                haproxy: instance.name.to_string(),
                pid: info.pid,
                reapplied: reapplied.clone(),
            });
            report(&Report::Reloaded {
                haproxy: instance.name.to_string(),
                pid: info.pid,
                reapplied,
            });
        }
    }

    /// An HAProxy that stops answering is reported once, with its plan name and how long
    /// the rollout keeps trying; once it answers again, with how long it was away.
    fn report_reachability(&self, views: &Views, report: &mut impl FnMut(&Report)) {
        let mut unreachable = self.unreachable.lock().expect("the reachability lock");
        unreachable.resize(views.len(), None);
        for (index, (result, since)) in views.iter().zip(unreachable.iter_mut()).enumerate() {
            let instance = &self.plan.haproxy[index];
            match (result, *since) {
                (Err(error), None) => {
                    *since = Some(Instant::now());
                    report(&Report::Unreachable {
                        haproxy: instance.name.to_string(),
                        error: error.clone(),
                        timeout: instance.unreachable_timeout,
                    });
                }
                (Ok(_), Some(when)) => {
                    *since = None;
                    report(&Report::Reachable {
                        haproxy: instance.name.to_string(),
                        after: when.elapsed(),
                    });
                }
                _ => {}
            }
        }
    }

    async fn poll(&self) -> Views {
        let reads = (0..self.plan.haproxy.len()).map(|instance| async move {
            self.effects
                .servers(instance)
                .await
                .map_err(|error| crate::commands::error_chain(&error))
        });
        futures::future::join_all(reads).await
    }

    /// The same change on every HAProxy and backend at once (lockstep).
    async fn set_state(&self, server: &ServerName, target: AdminTarget) -> Result<(), String> {
        let changes =
            (0..self.plan.haproxy.len()).map(|index| self.set_state_on(index, server, target));
        all_ok(changes).await
    }

    /// The server's backends on one HAProxy (`instance`), each change retried while that
    /// HAProxy is unreachable.
    async fn set_state_on(
        &self,
        instance: usize,
        server: &ServerName,
        target: AdminTarget,
    ) -> Result<(), String> {
        let deadline = self.plan.haproxy[instance].unreachable_timeout;
        for backend in self.topology.backends(instance, self.index_of(server)) {
            retry(deadline, || {
                self.effects.set_state(instance, backend, server, target)
            })
            .await?;
        }
        Ok(())
    }

    fn index_of(&self, server: &ServerName) -> usize {
        self.plan
            .servers
            .iter()
            .position(|candidate| &candidate.name == server)
            .expect("the engine only names servers of the plan")
    }

    async fn shutdown_sessions(&self, server: &ServerName) -> Result<(), String> {
        let changes = self
            .plan
            .haproxy
            .iter()
            .enumerate()
            .map(|(index, instance)| async move {
                for backend in self.topology.backends(index, self.index_of(server)) {
                    retry(instance.unreachable_timeout, || {
                        self.effects.shutdown_sessions(index, backend, server)
                    })
                    .await?;
                }
                Ok::<(), String>(())
            });
        all_ok(changes).await
    }

    async fn restart(&self, index: usize, marker: &Marker) -> Result<(), CommandFailure> {
        let values = &self.targets[index];
        let restart = &self.plan.restart;
        let command = tracked_command(
            &remote_command(&restart.command, values, restart.timeout),
            marker,
        );
        // The remote `timeout` stops the command; the local deadline only guards against a
        // connection that hangs.
        let deadline = restart.timeout + KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(host = %values.host, %command, "restart");
        let result = self
            .effects
            .run(Some(&values.host), &command, deadline)
            .await;
        if let Ok(output) = &result {
            tracing::debug!(output = %output.trim_end(), "restart output");
        }
        result.map(drop).map_err(command_failure)
    }

    /// Whether a command started earlier still runs, as its host shows it now.
    async fn check_command(&self, started: &StartedCommand) -> Result<CommandState, String> {
        let state = self
            .effects
            .check(started.host.as_deref(), &started.marker)
            .await?;
        Ok(match state {
            Tracked::Running => CommandState::Running,
            Tracked::Ended => CommandState::Ended,
        })
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
fn command_failure(error: SshError) -> CommandFailure {
    match error {
        SshError::Lost { .. } | SshError::Timeout { .. } => {
            CommandFailure::Unknown(error.to_string())
        }
        error => CommandFailure::Failed(error.to_string()),
    }
}

impl<E: Effects> Driver<'_, E> {
    /// Runs a hook of the server at `index`, over SSH on its host or here (`local`).
    async fn hook(&self, point: HookPoint, index: usize) -> Result<(), CommandFailure> {
        let Some(hook) = self.plan.hooks.get(point) else {
            return Ok(());
        };
        let values = &self.targets[index];
        let host = (!hook.local).then_some(values.host.as_str());
        let mut command = remote_command(&hook.command, values, hook.timeout);
        if let Some(change) = hook_change(point) {
            let marker = self.command_intent(index, change, host, hook.timeout)?;
            command = tracked_command(&command, &marker);
        }
        let deadline = hook.timeout + KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(hook = point.as_str(), local = hook.local, %command, "hook");
        let result = self.effects.run(host, &command, deadline).await;
        if let Ok(output) = &result {
            tracing::debug!(output = %output.trim_end(), "hook output");
        }
        result.map(drop).map_err(command_failure)
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
                        crate::commands::error_chain(&error),
                        start.elapsed().as_secs()
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(crate::commands::error_chain(&error)),
        }
    }
}

#[cfg(test)]
mod tests;
