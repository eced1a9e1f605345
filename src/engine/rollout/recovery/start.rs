//! Where the coordinator starts a recovery: one read of every HAProxy, then each server an
//! earlier run left goes on from what the decision table says.

use super::super::*;
use super::Decision;

impl Rollout {
    /// Where each recovered server goes on from, from what every HAProxy shows now.
    pub(in crate::engine::rollout) fn recover_from(
        &mut self,
        views: &Polled,
        since: Instant,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(instance) = views.iter().position(Result::is_err) {
            let limit = self.settings.unreachable_timeouts[instance];
            if now.saturating_duration_since(since) < limit {
                // The driver reports it unreachable (once) and back.
                self.task = Task::RecoveringWait { since };
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
                    out_of_rotation: live != LiveState::InTraffic,
                })
            } else {
                recovery::decide(mode, live, server.restart, server.may_run)
            };
            let decision_text = match decision {
                // A rollback runs the rollback command where a resume would restart.
                Decision::Queue if self.rolling_back => {
                    "it is rolled back like any server: capacity check, drain, 0 sessions, the rollback command"
                }
                Decision::Start(EntryPoint::RestartAfterSessions) if self.rolling_back => {
                    "its rollback command runs once no session is left on it"
                }
                _ => decision.text(),
            };
            actions.push(Action::Report(Report::Found {
                server: name,
                live: live.text(),
                decision: decision_text.to_owned(),
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
}
