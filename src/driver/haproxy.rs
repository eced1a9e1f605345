//! The driver's side of every HAProxy: shared polls, state changes in lockstep on every
//! instance and backend (retried while one is unreachable), noticing a reload, and saying
//! once when an HAProxy goes away and once when it is back.

use super::*;

impl<E: Effects> Driver<'_, E> {
    /// Reads every HAProxy's identity; after a reload, puts back the state each server in
    /// flight must have (a reload drops runtime-set states) and reports it.
    pub(super) async fn check_reloads(
        &self,
        engine: &mut Rollout,
        report: &mut impl FnMut(&Report),
    ) {
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
                report(&Report::Warning { text: text.clone() });
                self.interrupt.safe(super::Cause {
                    kind: "conflict",
                    from: text,
                });
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
    pub(super) fn report_reachability(
        &self,
        views: &[Result<Vec<crate::haproxy::ServerView>, String>],
        report: &mut impl FnMut(&Report),
    ) {
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

    pub(super) async fn poll(&self) -> Views {
        let reads = (0..self.plan.haproxy.len()).map(|instance| async move {
            self.effects
                .servers(instance)
                .await
                .map_err(|error| crate::error::error_chain(&error))
        });
        futures::future::join_all(reads).await
    }

    /// The same change on every HAProxy and backend at once (lockstep).
    pub(super) async fn set_state(
        &self,
        server: &ServerName,
        target: AdminTarget,
    ) -> Result<(), String> {
        let changes =
            (0..self.plan.haproxy.len()).map(|index| self.set_state_on(index, server, target));
        all_ok(changes).await
    }

    /// The server's backends on one HAProxy (`instance`), each change retried while that
    /// HAProxy is unreachable.
    pub(super) async fn set_state_on(
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

    pub(super) fn index_of(&self, server: &ServerName) -> usize {
        self.plan
            .servers
            .iter()
            .position(|candidate| &candidate.name == server)
            .expect("the engine only names servers of the plan")
    }

    pub(super) async fn shutdown_sessions(&self, server: &ServerName) -> Result<(), String> {
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
}
