//! Runs a rollout: performs each effect the engine asks for (runtime API, SSH, HTTP, a poll
//! interval) and feeds the result back, until the engine finishes.
//!
//! Exactly one effect runs at a time. Every state change is written to the journal before
//! it is made and after. A safe stop never cuts an effect short (a restart in progress is
//! let finish); it is handed to the engine between effects. `abort --now` abandons the
//! effect in flight. After every effect, and every poll interval while a restart runs, each
//! HAProxy's identity is checked: after a reload, the state the server in flight must have
//! is put back before anything else happens.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::engine::rollout::{Action, Effect, Event, Finish, Report, RestartFailure, Rollout};
use crate::haproxy::{AdminTarget, Client, ClientError, Info};
use crate::health::{HealthChecker, health_url};
use crate::journal::{Change, Journal, Record, now};
use crate::plan::{Plan, ServerName};
use crate::ssh::{KILL_AFTER, PlaceholderValues, SshError, SshPool, remote_command};

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

pub struct Driver<'a> {
    pub plan: &'a Plan,
    pub clients: Vec<Client>,
    pub targets: Vec<PlaceholderValues>,
    /// `None` when this run restarts nothing (settling after an interrupted rollout).
    pub ssh: Option<&'a SshPool>,
    pub health: HealthChecker,
    pub interrupt: Interrupt,
    pub journal: Mutex<Journal>,
    /// Each HAProxy's process identity as the rollout first saw it.
    pub identities: Mutex<Vec<Info>>,
    /// Which backends each server is in, on each HAProxy.
    pub topology: crate::engine::Topology,
    /// Old HAProxy processes a reload replaced while a server was draining: their
    /// sessions cannot be read over the new process's socket.
    pub old_processes: Mutex<Vec<OldProcess>>,
}

/// An HAProxy process replaced by a reload, which may still be finishing sessions.
#[derive(Debug, Clone, Copy)]
pub struct OldProcess {
    pub instance: usize,
    pub pid: u32,
    /// The HAProxy runs on this machine, so whether the process still runs can be seen.
    pub local: bool,
}

impl OldProcess {
    /// Whether it may still hold sessions: a local process until it is gone (or a zombie);
    /// a remote one cannot be seen, so always.
    fn may_hold_sessions(&self) -> bool {
        if !self.local {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // The state follows the parenthesised command name: `Z` is a zombie.
            Ok(stat) => !stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => false,
        }
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

impl Driver<'_> {
    /// Runs `engine` to its finish. `report` sees every report, the driver's own included.
    pub async fn run(&self, mut engine: Rollout, mut report: impl FnMut(&Report)) -> Finish {
        let mut event = Event::Start;
        let (mut safe_delivered, mut now_delivered) = (false, false);
        loop {
            let level = self.interrupt.level();
            let actions = if level >= NOW && !now_delivered {
                now_delivered = true;
                safe_delivered = true;
                engine.handle(Event::AbortNow, Instant::now())
            } else if level >= SAFE && !safe_delivered {
                safe_delivered = true;
                let actions = engine.handle(Event::Interrupted, Instant::now());
                if actions.is_empty() {
                    engine.handle(event, Instant::now())
                } else {
                    actions
                }
            } else {
                engine.handle(event, Instant::now())
            };
            let effect = match self.follow(actions, &mut report) {
                Ok(effect) => effect,
                Err(finish) => return finish,
            };
            event = tokio::select! {
                biased;
                () = self.interrupt.reached(NOW), if !now_delivered => Event::Waited,
                event = self.perform(effect, &engine, &mut report) => event,
            };
            if !now_delivered && self.interrupt.level() < NOW && !matches!(event, Event::Polled(_))
            {
                self.check_reloads(&engine, &mut report).await;
            }
        }
    }

    /// Reports what is to be reported; returns the one effect to run, or the finish.
    fn follow(
        &self,
        actions: Vec<Action>,
        report: &mut impl FnMut(&Report),
    ) -> Result<Effect, Finish> {
        let mut effect = None;
        for action in actions {
            match action {
                Action::Report(event) => {
                    if let Report::ServerDone { server, .. } = &event {
                        let _ = self.write(Record::ServerDone {
                            time: now(),
                            server: server.to_string(),
                        });
                    }
                    report(&event);
                }
                Action::Finish(finish) => return Err(finish),
                Action::Run(next) => {
                    debug_assert!(effect.is_none(), "the engine asks for one effect at a time");
                    effect = Some(next);
                }
            }
        }
        // An engine that neither finishes nor asks for anything would hang the driver.
        Ok(effect.unwrap_or(Effect::Wait))
    }

    fn write(&self, record: Record) -> Result<(), String> {
        // A journal that cannot be written must not go unnoticed: it is what makes an
        // interrupted rollout recoverable.
        self.journal
            .lock()
            .expect("the journal lock")
            .append(&record)
            .map_err(|error| {
                tracing::error!("cannot write the journal: {error}");
                format!("cannot write the journal: {error}")
            })
    }

    /// Journals a change about to be made. A change that moves the rollout forward (drain,
    /// cutting sessions, the restart) is not made unless this succeeded; a change in the
    /// safe direction (maintenance, back to ready) is made anyway, since it is how the
    /// rollout stops safely.
    fn intent(&self, server: &ServerName, change: Change) -> Result<(), String> {
        let written = self.write(Record::Intent {
            time: now(),
            server: server.to_string(),
            change,
        });
        match change {
            Change::Drain | Change::ShutdownSessions | Change::Restart => written,
            Change::Maint | Change::Ready => Ok(()),
        }
    }

    fn outcome<T, E: std::fmt::Display>(
        &self,
        server: &ServerName,
        change: Change,
        result: &Result<T, E>,
    ) {
        let _ = self.write(Record::Outcome {
            time: now(),
            server: server.to_string(),
            change,
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
        });
    }

    async fn perform(
        &self,
        effect: Effect,
        engine: &Rollout,
        report: &mut impl FnMut(&Report),
    ) -> Event {
        match effect {
            Effect::Poll => {
                let mut views = self.poll().await;
                // Identities are read after the views: unchanged, the views came from the
                // same process; changed, a reload happened and the old process counts.
                self.check_reloads(engine, report).await;
                self.count_old_processes(&mut views, engine);
                Event::Polled(views)
            }
            Effect::SetState(server, target) => {
                if let Err(error) = self.intent(&server, change_of(target)) {
                    return Event::Changed(Err(error));
                }
                let result = self.set_state(&server, target).await;
                self.outcome(&server, change_of(target), &result);
                Event::Changed(result)
            }
            Effect::ShutdownSessions(server) => {
                if let Err(error) = self.intent(&server, Change::ShutdownSessions) {
                    return Event::Changed(Err(error));
                }
                let result = self.shutdown_sessions(&server).await;
                self.outcome(&server, Change::ShutdownSessions, &result);
                Event::Changed(result)
            }
            Effect::Restart(index) => {
                let server = self.plan.servers[index].name.clone();
                if let Err(error) = self.intent(&server, Change::Restart) {
                    return Event::Restarted(Err(RestartFailure::Failed(error)));
                }
                // While the restart runs, a reload would put the server back into traffic:
                // watch for it and put maintenance back at once.
                let result = {
                    let restart = self.restart(index);
                    tokio::pin!(restart);
                    loop {
                        tokio::select! {
                            result = &mut restart => break result,
                            () = tokio::time::sleep(self.plan.poll_interval) => {
                                self.check_reloads(engine, report).await;
                            }
                        }
                    }
                };
                self.outcome(
                    &server,
                    Change::Restart,
                    &result.as_ref().map_err(restart_failure_text),
                );
                Event::Restarted(result)
            }
            Effect::Probe(index) => {
                let server = &self.plan.servers[index];
                let url = health_url(server.health_url(self.plan), &self.targets[index]);
                Event::Probed(self.health.probe(&url).await)
            }
            Effect::Hook(point, index) => Event::HookDone(self.hook(point, index).await),
            Effect::Wait => {
                tokio::select! {
                    () = tokio::time::sleep(self.plan.poll_interval) => {}
                    () = self.interrupt.reached(SAFE) => {}
                }
                Event::Waited
            }
        }
    }

    /// Reads every HAProxy's identity; after a reload, puts back the state the server in
    /// flight must have (a reload drops runtime-set states) and reports it.
    async fn check_reloads(&self, engine: &Rollout, report: &mut impl FnMut(&Report)) {
        for (index, client) in self.clients.iter().enumerate() {
            let Ok(info) = client.info().await else {
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
            if engine.draining_before_restart() && old_pid != 0 && old_pid != info.pid {
                // Sessions the old process still serves are invisible from here on: count
                // them as present until it is gone.
                self.old_processes
                    .lock()
                    .expect("the old processes lock")
                    .push(OldProcess {
                        instance: index,
                        pid: old_pid,
                        local: is_local(&instance.socket),
                    });
            }
            let expected = engine.expected_state();
            let mut reapplied = None;
            if let Some((server, target)) = &expected {
                let _ = self.intent(server, change_of(*target));
                let result = self.set_state_on(index, server, *target).await;
                self.outcome(server, change_of(*target), &result);
                reapplied = Some(match result {
                    Ok(()) => format!("{server} {}", target.as_str()),
                    Err(error) => format!("{server} {} FAILED: {error}", target.as_str()),
                });
            }
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

    async fn poll(&self) -> Vec<Result<Vec<crate::haproxy::ServerView>, String>> {
        let reads = self.clients.iter().map(|client| async move {
            client
                .servers()
                .await
                .map_err(|error| crate::commands::error_chain(&error))
        });
        futures::future::join_all(reads).await
    }

    /// An old process a reload replaced may still serve sessions on the server in flight;
    /// until it is gone, that server counts at least one session there.
    fn count_old_processes(
        &self,
        results: &mut [Result<Vec<crate::haproxy::ServerView>, String>],
        engine: &Rollout,
    ) {
        let mut old = self.old_processes.lock().expect("the old processes lock");
        old.retain(OldProcess::may_hold_sessions);
        let Some((server, _)) = engine.expected_state() else {
            return;
        };
        for process in old.iter() {
            if let Some(Ok(views)) = results.get_mut(process.instance) {
                for view in views
                    .iter_mut()
                    .filter(|view| view.server == server.as_str())
                {
                    view.sessions = view.sessions.max(1);
                }
            }
        }
    }

    /// The same change on every HAProxy and backend at once (lockstep).
    async fn set_state(&self, server: &ServerName, target: AdminTarget) -> Result<(), String> {
        let changes = (0..self.clients.len()).map(|index| self.set_state_on(index, server, target));
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
        let client = &self.clients[instance];
        let deadline = self.plan.haproxy[instance].unreachable_timeout;
        for backend in self.topology.backends(instance, self.index_of(server)) {
            retry(deadline, || client.set_state(backend, server, target)).await?;
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
        let changes = self.clients.iter().zip(&self.plan.haproxy).enumerate().map(
            |(index, (client, instance))| async move {
                for backend in self.topology.backends(index, self.index_of(server)) {
                    retry(instance.unreachable_timeout, || {
                        client.shutdown_sessions(backend, server)
                    })
                    .await?;
                }
                Ok::<(), String>(())
            },
        );
        all_ok(changes).await
    }

    async fn restart(&self, index: usize) -> Result<(), RestartFailure> {
        let values = &self.targets[index];
        let restart = &self.plan.restart;
        let command = remote_command(&restart.command, values, restart.timeout);
        // The remote `timeout` stops the command; the local deadline only guards against a
        // connection that hangs.
        let deadline = restart.timeout + KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(host = %values.host, %command, "restart");
        let Some(ssh) = self.ssh else {
            return Err(RestartFailure::Failed(
                "no SSH connection was opened for this run".to_owned(),
            ));
        };
        match ssh.run(&values.host, &command, deadline).await {
            Ok(output) => {
                tracing::debug!(output = %output.trim_end(), "restart output");
                Ok(())
            }
            Err(error @ (SshError::Lost { .. } | SshError::Timeout { .. })) => {
                Err(RestartFailure::Unknown(error.to_string()))
            }
            Err(error) => Err(RestartFailure::Failed(error.to_string())),
        }
    }
}

impl Driver<'_> {
    /// Runs a hook of the server at `index`, over SSH on its host or here (`local`).
    async fn hook(&self, point: crate::plan::HookPoint, index: usize) -> Result<(), String> {
        let Some(hook) = self.plan.hooks.get(point) else {
            return Ok(());
        };
        let values = &self.targets[index];
        let command = remote_command(&hook.command, values, hook.timeout);
        let deadline = hook.timeout + KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(hook = point.as_str(), local = hook.local, %command, "hook");
        let result = if hook.local {
            crate::ssh::run_local(&command, deadline).await
        } else {
            match self.ssh {
                Some(ssh) => ssh.run(&values.host, &command, deadline).await,
                None => return Err("no SSH connection was opened for this run".to_owned()),
            }
        };
        result
            .map(|output| tracing::debug!(output = %output.trim_end(), "hook output"))
            .map_err(|error| error.to_string())
    }
}

fn restart_failure_text(failure: &RestartFailure) -> String {
    match failure {
        RestartFailure::Failed(text) | RestartFailure::Unknown(text) => text.clone(),
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
