//! What a server in flight concludes from each poll of HAProxy: zero sessions, HAProxy's
//! checks passed after the restart, exactly UP; and an HAProxy that cannot be read.

use super::*;
use crate::engine::Polled;

impl ServerRun {
    /// The server's view on every HAProxy and backend. An unreadable HAProxy is an error
    /// while it has been unreadable for less than its `unreachable_timeout`, and stops the
    /// run (`Err(Err(...))`) after.
    pub(super) fn views_of<'v>(
        &mut self,
        views: &'v Polled,
        now: Instant,
    ) -> Result<Vec<&'v ServerView>, Result<String, String>> {
        let server = self.server();
        let mut found = Vec::new();
        let mut problem = None;
        for (instance, result) in views.iter().enumerate() {
            match result {
                Ok(_) => self.unreadable_since[instance] = None,
                Err(error) => {
                    let since = *self.unreadable_since[instance].get_or_insert(now);
                    let limit = self.settings.unreachable_timeouts[instance];
                    if now.saturating_duration_since(since) >= limit {
                        return Err(Err(format!(
                            "{} has been unreachable for {}s (its unreachable_timeout): {error}",
                            self.settings.haproxy(instance),
                            limit.as_secs()
                        )));
                    }
                    problem = Some(format!("{}: {error}", self.settings.haproxy(instance)));
                    continue;
                }
            }
            for backend in self.settings.topology.backends(instance, self.index) {
                match views.server(instance, backend.as_str(), server.as_str()) {
                    Some(view) => found.push(view),
                    None => {
                        return Err(Err(format!(
                            "{} no longer has {backend}/{server}",
                            self.settings.haproxy(instance)
                        )));
                    }
                }
            }
        }
        match problem {
            Some(problem) => Err(Ok(problem)),
            None => Ok(found),
        }
    }

    pub(super) fn after_sessions_poll(
        &mut self,
        views: &Polled,
        deadline: Instant,
        now: Instant,
    ) -> Vec<RunStep> {
        let mut steps = Vec::new();
        match self.views_of(views, now) {
            Ok(found) => {
                let sessions: u64 = found.iter().map(|view| view.sessions).sum();
                if sessions == 0 {
                    self.mark_drained(now);
                    self.phase = Phase::EnteringMaint;
                    steps.push(self.stage(Stage::Restarting));
                    steps.push(RunStep::Run(Effect::SetState(
                        self.server(),
                        AdminTarget::Maint,
                    )));
                    return steps;
                }
                if self.last_sessions != Some(sessions) {
                    self.last_sessions = Some(sessions);
                    steps.push(RunStep::Report(Report::SessionsLeft {
                        server: self.server(),
                        sessions,
                    }));
                }
                if now >= deadline {
                    match self.settings.on_drain_timeout {
                        OnDrainTimeout::Fail => {
                            steps.extend(self.restore(
                                AdminTarget::Ready,
                                Stage::WaitingForSessions,
                                format!(
                                    "{sessions} session(s) still open after drain.timeout ({}s); returned to traffic unrestarted (on_timeout: fail)",
                                    self.settings.drain_timeout.as_secs()
                                ),
                            ));
                        }
                        OnDrainTimeout::Force => {
                            self.mark_drained(now);
                            self.phase = Phase::ForcingMaint { sessions };
                            steps.push(self.stage(Stage::Restarting));
                            steps.push(RunStep::Run(Effect::SetState(
                                self.server(),
                                AdminTarget::Maint,
                            )));
                        }
                    }
                    return steps;
                }
            }
            Err(Err(fatal)) => {
                return self.restore(
                    AdminTarget::Ready,
                    Stage::WaitingForSessions,
                    format!("could not confirm 0 sessions: {fatal}"),
                );
            }
            Err(Ok(error)) => {
                if now >= deadline {
                    return self.restore(
                        AdminTarget::Ready,
                        Stage::WaitingForSessions,
                        format!("could not confirm 0 sessions before drain.timeout: {error}"),
                    );
                }
                // The driver reports an unreachable HAProxy once, and when it is back.
            }
        }
        self.phase = Phase::Sessions { deadline };
        steps.push(RunStep::Run(Effect::Wait));
        steps
    }

    /// The server's views for a wait that only ends on a condition (HAProxy's checks, UP):
    /// `Err` carries what to do instead, when an HAProxy cannot be read. Before `deadline`
    /// that is waiting once more in `phase`; after it, or past an unreachable deadline, the
    /// server is put out of rotation and the run stops.
    pub(super) fn awaited_views<'v>(
        &mut self,
        views: &'v Polled,
        (deadline, now): (Instant, Instant),
        stage: Stage,
        what: &str,
        phase: Phase,
    ) -> Result<Vec<&'v ServerView>, Vec<RunStep>> {
        match self.views_of(views, now) {
            Ok(found) => Ok(found),
            Err(Err(fatal)) => Err(self.fail_out_of_rotation(stage, fatal)),
            Err(Ok(error)) if now >= deadline => {
                Err(self.fail_out_of_rotation(stage, format!("could not confirm {what}: {error}")))
            }
            // Not yet past its deadline: the driver reports an unreachable HAProxy once, and
            // when it is back.
            Err(Ok(_)) => {
                self.phase = phase;
                Err(vec![RunStep::Run(Effect::Wait)])
            }
        }
    }

    /// HAProxy's own checks passed after the restart: exactly DRAIN with a passing check
    /// (or, for a server HAProxy does not check, running) on every HAProxy and backend.
    pub(super) fn after_checks_poll(
        &mut self,
        views: &Polled,
        deadline: Instant,
        now: Instant,
    ) -> Vec<RunStep> {
        let phase = Phase::Checks { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::WaitingForChecks,
            "HAProxy's checks",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(steps) => return steps,
        };
        let confirmed = found.iter().all(|view| {
            view.admin.draining()
                && !view.admin.in_maintenance()
                && if view.is_checked() {
                    view.status == "DRAIN" && view.last_check_passed()
                } else {
                    view.operational == crate::haproxy::OpState::Running
                }
        });
        if confirmed {
            self.phase = Phase::Returning;
            return vec![
                self.stage(Stage::ReturningToTraffic),
                RunStep::Run(Effect::SetState(self.server(), AdminTarget::Ready)),
            ];
        }
        let statuses: Vec<String> = found
            .iter()
            .map(|view| {
                format!(
                    "{}/{} {} (check {})",
                    view.backend,
                    view.server,
                    view.status,
                    or_none(&view.check_status)
                )
            })
            .collect();
        if now >= deadline {
            return self.fail_out_of_rotation(
                Stage::WaitingForChecks,
                format!(
                    "HAProxy's checks did not pass within ready.timeout ({}s): {}",
                    self.settings.ready_timeout.as_secs(),
                    statuses.join(", ")
                ),
            );
        }
        let mut steps: Vec<RunStep> = self
            .waiting(Stage::WaitingForChecks, statuses.join(", "))
            .into_iter()
            .collect();
        self.phase = phase;
        steps.push(RunStep::Run(Effect::Wait));
        steps
    }

    pub(super) fn after_up_poll(
        &mut self,
        views: &Polled,
        deadline: Instant,
        now: Instant,
    ) -> Vec<RunStep> {
        let phase = Phase::Up { deadline };
        let found = match self.awaited_views(
            views,
            (deadline, now),
            Stage::ReturningToTraffic,
            "it is UP",
            phase.clone(),
        ) {
            Ok(found) => found,
            Err(steps) => return steps,
        };
        if found
            .iter()
            .all(|view| view.admin.ready() && view.is_fully_up())
        {
            self.result.state =
                if matches!(self.stop, Stopping::AfterThisServer(_)) || self.restart_unknown {
                    ServerState::BackRestartUnknown
                } else {
                    ServerState::Done
                };
            self.result.timings.haproxy = self
                .healthy
                .map(|healthy| now.saturating_duration_since(healthy));
            if self.has_hook(HookPoint::AfterReady) {
                return self.run_hook(HookPoint::AfterReady, Phase::AfterReadyHook, now);
            }
            return self.complete();
        }
        let statuses: Vec<String> = found
            .iter()
            .map(|view| format!("{}/{} {}", view.backend, view.server, view.status))
            .collect();
        if now >= deadline {
            return self.fail_out_of_rotation(
                Stage::ReturningToTraffic,
                format!(
                    "not exactly UP within ready.timeout: {}",
                    statuses.join(", ")
                ),
            );
        }
        let mut steps: Vec<RunStep> = self
            .waiting(Stage::ReturningToTraffic, statuses.join(", "))
            .into_iter()
            .collect();
        self.phase = phase;
        steps.push(RunStep::Run(Effect::Wait));
        steps
    }
}
