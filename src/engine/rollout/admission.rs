//! When the next server starts: plan order, every server before it drained, the capacity
//! rules of property 2 (docs/safety.md; `capacity.rs`) checked on a fresh read of every HAProxy, the canary
//! pause.

use std::collections::HashSet;

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
                    within: self.settings.within(Stage::Hook(HookPoint::OnFailure)),
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
            // Every canary is back before the analysis and the pause begin.
            if !self.flights.is_empty() {
                return Vec::new();
            }
            if let (Some(rules), false) = (self.canary_analysis, self.analysis_passed) {
                return self.start_analysis(rules, canaries, now);
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
        if self.read_first && !self.read[next] {
            return self.read_current();
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
                within: None,
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
    /// its backends at least `min_up` other servers in rotation. The servers after it that
    /// fit start from the same read too, each counting every server this rollout has out
    /// (the ones started from this read included, though the read still shows them in
    /// rotation), so one read admits as many as the rules allow.
    pub(super) fn admit(&mut self, next: usize, views: &Polled, now: Instant) -> Vec<Action> {
        // A failure (or a stop) since the poll began: `next` does not start.
        if self.halt != Halt::No || self.flights.values().any(|flight| flight.run.failing()) {
            return self.advance(now);
        }
        if let Some((instance, error)) = views
            .iter()
            .enumerate()
            .find_map(|(instance, result)| result.as_ref().err().map(|error| (instance, error)))
        {
            let reason = format!(
                "cannot check capacity: {} is unreadable: {error}",
                self.settings.haproxy(instance)
            );
            return self.refuse(next, reason, now);
        }
        let in_rotation = InRotation::new(
            views
                .iter()
                .map(|result| result.as_ref().ok().map(Vec::as_slice)),
        );
        match self.shortfall(next, &in_rotation) {
            None => {}
            // Servers of this rollout are out: one of them coming back may make room.
            Some(reason) if !self.flights.is_empty() => {
                self.blocked = true;
                return vec![Action::Report(Report::WaitingForCapacity {
                    server: self.settings.servers[next].clone(),
                    reason,
                })];
            }
            Some(reason) => return self.refuse(next, reason, now),
        }
        self.queue.pop_front();
        let mut actions = self.launch(next, EntryPoint::Checked, now);
        while let Some(&after) = self.queue.front() {
            let canary_pause =
                !self.canary_passed && self.canary.is_some_and(|(canaries, _)| after >= canaries);
            let unread = self.read_first && !self.read[after];
            if canary_pause
                || unread
                || !self.fits(after)
                || self.shortfall(after, &in_rotation).is_some()
            {
                // Checked again on a fresh read once the servers started here are drained.
                break;
            }
            self.queue.pop_front();
            actions.extend(self.launch(after, EntryPoint::Checked, now));
        }
        actions
    }

    /// Why taking `server` out would leave too few servers in rotation in one of its
    /// backends on one HAProxy, counting every server this rollout has in flight as out.
    fn shortfall(&self, server: usize, in_rotation: &InRotation) -> Option<String> {
        let name = self.settings.servers[server].as_str();
        let ours: HashSet<&str> = self
            .flights
            .keys()
            .map(|index| self.settings.servers[*index].as_str())
            .collect();
        for instance in 0..self.settings.instances.len() {
            for backend in self.settings.topology.backends(instance, server) {
                let others = in_rotation
                    .others(instance, backend.as_str(), name)
                    .into_iter()
                    .filter(|other| !ours.contains(other))
                    .count();
                if !leaves_enough(others, self.min_up) {
                    let mut in_flight: Vec<&str> = ours.iter().copied().collect();
                    in_flight.sort_unstable();
                    let in_flight = if in_flight.is_empty() {
                        String::new()
                    } else {
                        format!("; this rollout has {} out", in_flight.join(", "))
                    };
                    return Some(format!(
                        "capacity: {backend} on {} has {others} other server(s) in rotation besides {name}; min_up {}; out of rotation there: {}{in_flight}",
                        self.settings.haproxy(instance),
                        self.min_up,
                        in_rotation.out_text(instance, backend.as_str())
                    ));
                }
            }
        }
        None
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
