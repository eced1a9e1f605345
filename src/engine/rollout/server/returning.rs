//! Back into traffic: leaving maintenance, HAProxy's own checks passing, ready, exactly UP
//! on every HAProxy, the `after_ready` hook.

use super::*;

impl ServerRun {
    pub(super) fn while_returning(
        &mut self,
        phase: Phase,
        event: Event,
        now: Instant,
    ) -> Vec<RunStep> {
        match (phase, event) {
            (Phase::LeavingMaint, Event::Changed(Ok(()))) => {
                self.phase = Phase::Checks {
                    deadline: now + self.settings.ready_timeout,
                };
                Self::run(Effect::Poll)
            }
            (Phase::LeavingMaint, Event::Changed(Err(error))) => self.fail_out_of_rotation(
                Stage::WaitingForChecks,
                format!("leaving maintenance failed: {error}"),
            ),
            (Phase::Checks { deadline }, Event::Polled(views)) => {
                self.after_checks_poll(&views, deadline, now)
            }
            (Phase::Returning, Event::Changed(Ok(()))) => {
                self.phase = Phase::Up {
                    deadline: now + self.settings.ready_timeout,
                };
                Self::run(Effect::Poll)
            }
            (Phase::Returning, Event::Changed(Err(error))) => self.fail_out_of_rotation(
                Stage::ReturningToTraffic,
                format!("returning to traffic failed: {error}"),
            ),
            (Phase::Up { deadline }, Event::Polled(views)) => {
                self.after_up_poll(&views, deadline, now)
            }
            (Phase::AfterReadyHook, Event::HookDone(Ok(()))) => self.complete(),
            // The server passed its health check and HAProxy's: it stays in traffic.
            (Phase::AfterReadyHook, Event::HookDone(Err(error))) => {
                let reason = format!(
                    "its after_ready hook failed: {}; {} is back in traffic (it passed its checks)",
                    error.text(),
                    self.server()
                );
                let outcome = self.failure_outcome();
                let mut steps = self.note_unknown(&error);
                steps.push(RunStep::Report(Report::ServerFailed {
                    server: self.server(),
                    stage: Stage::Hook(HookPoint::AfterReady),
                    reason: reason.clone(),
                }));
                steps.push(self.finish(outcome, Some(reason)));
                steps
            }
            (phase, event) => self.unexpected(phase, event),
        }
    }
}
