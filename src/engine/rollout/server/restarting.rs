//! The restart and what follows it: the command's result (or a check that it ended, when
//! its outcome is unknown), the `after_restart` hook, the application's health URL.

use super::*;

impl ServerRun {
    pub(super) fn while_restarting(
        &mut self,
        phase: Phase,
        event: Event,
        now: Instant,
    ) -> Vec<RunStep> {
        match (phase, event) {
            (Phase::Restarting, Event::Restarted(result)) => {
                let unknown = match result {
                    Ok(()) => false,
                    Err(CommandFailure::Failed(error)) => {
                        return self
                            .fail(Stage::Restarting, format!("the restart failed: {error}"));
                    }
                    Err(CommandFailure::Unknown(error)) => {
                        self.stop = Stopping::AfterThisServer(format!(
                            "the restart's outcome is unknown ({error}); {} stayed out of rotation until the restart could no longer run, was then settled by its health and HAProxy's checks, and the rollout stopped",
                            self.server()
                        ));
                        true
                    }
                };
                self.restarted = Some(now);
                self.result.timings.restarting = self
                    .drained
                    .map(|drained| now.saturating_duration_since(drained));
                if unknown {
                    // Property 9: it may still be running; a health answer now could come
                    // from the old process, about to be killed.
                    return self.await_command(now);
                }
                if self.has_hook(HookPoint::AfterRestart) {
                    return self.run_hook(HookPoint::AfterRestart, Phase::AfterRestartHook, now);
                }
                self.start_probing(now)
            }
            (
                Phase::CommandMayRun {
                    what,
                    until,
                    next_check,
                },
                event @ (Event::CommandChecked(_) | Event::Waited),
            ) => self.after_command_check(event, (what, until, next_check), now),
            (Phase::Probing { .. }, Event::Probed(Ok(()))) => {
                self.healthy = Some(now);
                self.result.timings.health = self
                    .restarted
                    .map(|restarted| now.saturating_duration_since(restarted));
                self.phase = Phase::LeavingMaint;
                vec![
                    self.stage(Stage::WaitingForChecks),
                    RunStep::Run(Effect::SetState(self.server(), AdminTarget::Drain)),
                ]
            }
            (Phase::Probing { deadline, .. }, Event::Probed(Err(error))) => {
                if now >= deadline {
                    return self.fail(
                        Stage::WaitingForHealth,
                        format!(
                            "its health endpoint did not answer as expected within {}s: {error}",
                            self.settings.health_within.as_secs()
                        ),
                    );
                }
                self.phase = Phase::Probing {
                    deadline,
                    last_error: Some(error),
                };
                Self::run(Effect::Wait)
            }
            (phase @ Phase::Probing { .. }, Event::Waited) => {
                self.phase = phase;
                Self::run(Effect::Probe(self.index))
            }
            (Phase::AfterRestartHook, Event::HookDone(Ok(()))) => self.start_probing(now),
            (Phase::AfterRestartHook, Event::HookDone(Err(CommandFailure::Unknown(error)))) => {
                self.stop = Stopping::AfterThisServer(format!(
                    "the outcome of its after_restart hook is unknown ({error}); {} stayed out of rotation until the hook could no longer run, was then settled by its health and HAProxy's checks, and the rollout stopped",
                    self.server()
                ));
                self.await_command(now)
            }
            (Phase::AfterRestartHook, Event::HookDone(Err(CommandFailure::Failed(error)))) => self
                .fail(
                    Stage::Hook(HookPoint::AfterRestart),
                    format!("its after_restart hook failed: {error}"),
                ),
            (phase, event) => self.unexpected(phase, event),
        }
    }
}
