//! A server's way out of traffic: its `before_drain` hook, the drain, zero sessions on every
//! HAProxy (or the drain timeout), maintenance; and securing it out of rotation when a
//! command may still run.

use super::*;

impl ServerRun {
    pub(super) fn while_draining(
        &mut self,
        phase: Phase,
        event: Event,
        now: Instant,
    ) -> Vec<RunStep> {
        match (phase, event) {
            (Phase::Draining, Event::Changed(Ok(()))) => {
                self.result.state = ServerState::Unknown;
                if self.interrupted() {
                    return self.return_unrestarted("interrupted while draining");
                }
                self.phase = Phase::Sessions {
                    deadline: now + self.settings.drain_timeout,
                };
                vec![
                    self.stage(Stage::WaitingForSessions),
                    RunStep::Run(Effect::Poll),
                ]
            }
            // Part of the drain may have landed: put the server back everywhere.
            (Phase::Draining, Event::Changed(Err(error))) => self.restore(
                AdminTarget::Ready,
                Stage::Draining,
                format!("drain failed: {error}"),
            ),
            (Phase::Sessions { deadline }, Event::Polled(views)) => {
                self.after_sessions_poll(&views, deadline, now)
            }
            (Phase::ForcingMaint { sessions }, Event::Changed(Ok(()))) => {
                self.phase = Phase::ForcingShutdown { sessions };
                Self::run(Effect::ShutdownSessions(self.server()))
            }
            (Phase::ForcingShutdown { sessions }, Event::Changed(Ok(()))) => {
                self.result.sessions_cut = Some(sessions);
                let mut steps = vec![RunStep::Report(Report::SessionsCut {
                    server: self.server(),
                    sessions,
                })];
                if self.interrupted() {
                    steps.extend(self.return_unrestarted("interrupted before the restart"));
                } else {
                    steps.extend(self.start_restart(now));
                }
                steps
            }
            (
                Phase::ForcingMaint { .. } | Phase::ForcingShutdown { .. },
                Event::Changed(Err(error)),
            ) => self.fail_out_of_rotation(
                Stage::WaitingForSessions,
                format!("cutting the remaining sessions failed: {error}"),
            ),
            (Phase::EnteringMaint, Event::Changed(Ok(()))) => {
                if self.interrupted() {
                    return self.return_unrestarted("interrupted before the restart");
                }
                self.start_restart(now)
            }
            (Phase::Securing { may_run, target }, Event::Changed(Ok(()))) => {
                self.holding = Some(target);
                self.result.state = ServerState::OutOfRotation;
                self.after_command = self.then_secured;
                self.phase = Phase::CommandMayRun {
                    what: may_run.what,
                    until: may_run.until,
                    next_check: now + CHECK_EVERY,
                };
                Self::run(Effect::Wait)
            }
            (Phase::Securing { target, .. }, Event::Changed(Err(error))) => self
                .fail_out_of_rotation(
                    Stage::Draining,
                    format!(
                        "taking it out ({}) failed while a command may still run: {error}",
                        target.as_str()
                    ),
                ),
            (Phase::EnteringMaint, Event::Changed(Err(error))) => {
                self.fail_out_of_rotation(Stage::Restarting, format!("maintenance failed: {error}"))
            }
            (Phase::BeforeDrainHook, Event::HookDone(Ok(()))) => {
                if self.interrupted() {
                    return vec![self.finish(
                        Outcome::Interrupted,
                        Some(format!(
                            "stopped by the operator before {} was drained",
                            self.server()
                        )),
                    )];
                }
                self.start_drain()
            }
            (Phase::BeforeDrainHook, Event::HookDone(Err(error))) => {
                let mut steps = self.note_unknown(&error);
                steps.extend(
                    self.fail_untouched(format!("its before_drain hook failed: {}", error.text())),
                );
                steps
            }
            (phase, event) => self.unexpected(phase, event),
        }
    }
}
