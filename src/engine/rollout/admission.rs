//! When the next server starts: plan order, every server before it drained, the capacity
//! rules of property 2 (docs/safety.md; `capacity.rs`) checked on a fresh read of every HAProxy, the canary
//! pause.

use super::*;

impl Rollout {
    /// Starts what may start now; finishes when nothing is left in flight or to start.
    pub(super) fn advance(&mut self, now: Instant) -> Vec<Action> {
        if self.task != Task::Idle {
            return Vec::new();
        }
        if let Some(server) = self.failure_hook_due.take() {
            self.task = Task::FailureHook;
            return vec![
                Action::Report(Report::Stage {
                    server: self.settings.servers[server].clone(),
                    stage: Stage::Hook(HookPoint::OnFailure),
                }),
                Action::Run(Lane::Rollout, Effect::Hook(HookPoint::OnFailure, server)),
            ];
        }
        if self.halt != Halt::No {
            return if self.flights.is_empty() {
                vec![self.conclude()]
            } else {
                Vec::new()
            };
        }
        let Some(&next) = self.queue.front() else {
            return if self.flights.is_empty() {
                vec![self.conclude()]
            } else {
                Vec::new()
            };
        };
        if let (false, Some((canaries, pause))) = (self.canary_passed, self.canary)
            && next >= canaries
        {
            // Every canary is back before the pause begins.
            if !self.flights.is_empty() {
                return Vec::new();
            }
            return match pause {
                CanaryPause::Manual => {
                    self.task = Task::Finished;
                    vec![Action::Finish(Finish {
                        outcome: Outcome::Paused,
                        reason: Some(format!(
                            "paused after {canaries} canary server(s) (canary.pause: manual)"
                        )),
                        servers: self.results.clone(),
                    })]
                }
                CanaryPause::For(duration) => {
                    self.task = Task::CanaryWait {
                        until: now + duration,
                    };
                    vec![Action::Run(Lane::Rollout, Effect::Wait)]
                }
            };
        }
        // The next server's capacity check must see every server before it out, and it must
        // fit the limits; until then it waits for a server in flight to move on.
        if self.blocked
            || self
                .flights
                .values()
                .any(|flight| !flight.run.past_drain() || flight.run.failing())
            || !self.fits(next)
        {
            return Vec::new();
        }
        self.task = Task::Admitting(next);
        vec![
            Action::Report(Report::Stage {
                server: self.settings.servers[next].clone(),
                stage: Stage::CheckingCapacity,
            }),
            Action::Run(Lane::Rollout, Effect::Poll),
        ]
    }

    /// Property 2's second half: this rollout has fewer than `max_unavailable` servers out
    /// in each backend of `server`, on each HAProxy.
    pub(super) fn fits(&self, server: usize) -> bool {
        self.limits.fits(
            &self.settings.topology,
            self.settings.instances.len(),
            server,
            &self.flights.keys().copied().collect::<Vec<_>>(),
        )
    }

    /// Property 2, at the moment `next` would start: every HAProxy readable, and in each of
    /// its backends at least `min_up` other servers in rotation.
    pub(super) fn admit(
        &mut self,
        next: usize,
        views: &[Result<Vec<ServerView>, String>],
        now: Instant,
    ) -> Vec<Action> {
        // A failure (or a stop) since the poll began: `next` does not start.
        if self.halt != Halt::No || self.flights.values().any(|flight| flight.run.failing()) {
            return self.advance(now);
        }
        let server = &self.settings.servers[next];
        let mut shortfall = None;
        for (instance, result) in views.iter().enumerate() {
            let views = match result {
                Ok(views) => views,
                Err(error) => {
                    return self.refuse(
                        next,
                        format!(
                            "cannot check capacity: {} is unreadable: {error}",
                            self.settings.haproxy(instance)
                        ),
                        now,
                    );
                }
            };
            let in_rotation = InRotation::new(
                (0..views.len()).map(|of| (of == instance).then_some(views.as_slice())),
            );
            for backend in self.settings.topology.backends(instance, next) {
                let others = in_rotation
                    .others(instance, backend.as_str(), server.as_str())
                    .len();
                if !leaves_enough(others, self.min_up) && shortfall.is_none() {
                    shortfall = Some(format!(
                        "capacity: {backend} on {} has {others} other server(s) in rotation besides {server}; min_up {}",
                        self.settings.haproxy(instance),
                        self.min_up
                    ));
                }
            }
        }
        match shortfall {
            None => {
                self.queue.pop_front();
                self.launch(next, EntryPoint::Checked, now)
            }
            // Servers of this rollout are out: one of them coming back may make room.
            Some(reason) if !self.flights.is_empty() => {
                self.blocked = true;
                vec![Action::Report(Report::WaitingForCapacity {
                    server: server.clone(),
                    reason,
                })]
            }
            Some(reason) => self.refuse(next, reason, now),
        }
    }

    /// `next` may not start, and no other server after it: the rollout stops once the
    /// servers in flight are back.
    pub(super) fn refuse(&mut self, next: usize, reason: String, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::Report(Report::ServerFailed {
            server: self.settings.servers[next].clone(),
            stage: Stage::CheckingCapacity,
            reason: reason.clone(),
        })];
        actions.extend(self.fail_rollout(next, reason, now));
        actions
    }
}
