//! Runs a rollout: performs each effect the engine asks for (runtime API, SSH, HTTP, a poll
//! interval) and feeds the result back, until the engine finishes.
//!
//! Exactly one effect runs at a time. A signal never cuts an effect short (a restart in
//! progress is let finish); it is delivered to the engine between effects, and cuts only a
//! poll-interval wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::engine::rollout::{Action, Effect, Event, Finish, Report, Rollout};
use crate::haproxy::{AdminTarget, Client};
use crate::health::{HealthChecker, health_url};
use crate::plan::{Plan, ServerName};
use crate::ssh::{KILL_AFTER, PlaceholderValues, SshPool, remote_command};

/// Set by a signal handler; read between effects.
#[derive(Clone, Default)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

pub struct Driver<'a> {
    pub plan: &'a Plan,
    pub clients: Vec<Client>,
    pub targets: Vec<PlaceholderValues>,
    pub ssh: &'a SshPool,
    pub health: HealthChecker,
    pub interrupt: Interrupt,
}

impl Driver<'_> {
    pub async fn run(&self, mut report: impl FnMut(&Report)) -> Finish {
        let mut engine = Rollout::new(self.plan);
        let mut event = Event::Start;
        let mut interrupt_delivered = false;
        loop {
            if self.interrupt.is_set() && !interrupt_delivered {
                interrupt_delivered = true;
                let actions = engine.handle(Event::Interrupted, Instant::now());
                if !actions.is_empty() {
                    match self.follow(actions, &mut report) {
                        Ok(effect) => {
                            event = self.perform(effect).await;
                            continue;
                        }
                        Err(finish) => return finish,
                    }
                }
            }
            let actions = engine.handle(event, Instant::now());
            match self.follow(actions, &mut report) {
                Ok(effect) => event = self.perform(effect).await,
                Err(finish) => return finish,
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
                Action::Report(event) => report(&event),
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

    async fn perform(&self, effect: Effect) -> Event {
        match effect {
            Effect::Poll => Event::Polled(self.poll().await),
            Effect::SetState(server, target) => {
                Event::Changed(self.set_state(&server, target).await)
            }
            Effect::ShutdownSessions(server) => {
                Event::Changed(self.shutdown_sessions(&server).await)
            }
            Effect::Restart(index) => Event::Restarted(self.restart(index).await),
            Effect::Probe(index) => {
                let server = &self.plan.servers[index];
                let url = health_url(server.health_url(self.plan), &self.targets[index]);
                Event::Probed(self.health.probe(&url).await)
            }
            Effect::Wait => {
                let notified = self.interrupt.notify.notified();
                if !self.interrupt.is_set() {
                    tokio::select! {
                        () = tokio::time::sleep(self.plan.poll_interval) => {}
                        () = notified => {}
                    }
                }
                Event::Waited
            }
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

    /// The same change on every HAProxy and backend at once (lockstep).
    async fn set_state(&self, server: &ServerName, target: AdminTarget) -> Result<(), String> {
        let changes = self.clients.iter().flat_map(|client| {
            self.plan
                .backends
                .iter()
                .map(move |backend| async move { client.set_state(backend, server, target).await })
        });
        collect_errors(futures::future::join_all(changes).await)
    }

    async fn shutdown_sessions(&self, server: &ServerName) -> Result<(), String> {
        let changes = self.clients.iter().flat_map(|client| {
            self.plan
                .backends
                .iter()
                .map(move |backend| async move { client.shutdown_sessions(backend, server).await })
        });
        collect_errors(futures::future::join_all(changes).await)
    }

    async fn restart(&self, index: usize) -> Result<(), String> {
        let values = &self.targets[index];
        let restart = &self.plan.restart;
        let command = remote_command(&restart.command, values, restart.timeout);
        // The remote `timeout` stops the command; the local deadline only guards against a
        // connection that hangs.
        let deadline = restart.timeout + KILL_AFTER + std::time::Duration::from_secs(5);
        tracing::debug!(host = %values.host, %command, "restart");
        self.ssh
            .run(&values.host, &command, deadline)
            .await
            .map(|output| tracing::debug!(output = %output.trim_end(), "restart output"))
            .map_err(|error| error.to_string())
    }
}

fn collect_errors(results: Vec<Result<(), crate::haproxy::ClientError>>) -> Result<(), String> {
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|error| crate::commands::error_chain(&error))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
