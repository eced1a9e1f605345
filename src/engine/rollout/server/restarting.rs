//! The restart and what follows it: the command's result (or a check that it ended, when
//! its outcome is unknown), the `after_restart` hook, the application's health URL, and
//! `verify`: what it runs must be what this rollout deploys before it takes traffic.

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
            (Phase::Probing { deadline, .. }, Event::Probed(Ok(()))) => {
                if self.settings.expected(self.index).is_some() {
                    self.phase = Phase::Verifying { deadline };
                    return vec![
                        self.stage(Stage::Verifying),
                        RunStep::Run(Effect::Verify(self.index)),
                    ];
                }
                self.leave_maint(now)
            }
            (Phase::Verifying { deadline, .. }, Event::Verified(answer)) => {
                self.after_verify(deadline, answer, now)
            }
            (phase @ Phase::Verifying { .. }, Event::Waited) => {
                self.phase = phase;
                Self::run(Effect::Verify(self.index))
            }
            (
                Phase::Probing {
                    deadline, retry, ..
                },
                Event::Probed(Err(error)),
            ) => {
                if now >= deadline {
                    return self.fail(
                        Stage::WaitingForHealth,
                        format!(
                            "its health endpoint did not answer as expected within {}s: {error}",
                            self.settings.health_within.as_secs()
                        ),
                    );
                }
                let mut steps: Vec<RunStep> = self
                    .waiting(Stage::WaitingForHealth, error.clone())
                    .into_iter()
                    .collect();
                self.phase = Phase::Probing {
                    deadline,
                    last_error: Some(error),
                    retry: (retry * 2).min(self.settings.poll_interval),
                };
                steps.push(RunStep::Run(Effect::Backoff(retry)));
                steps
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

    /// Healthy, and what it runs checked (or nothing to check): out of maintenance, to
    /// wait for HAProxy's checks.
    fn leave_maint(&mut self, now: Instant) -> Vec<RunStep> {
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

    /// A health answer cannot tell an old process from a new one: the server takes traffic
    /// only once it answers what this rollout deploys. Anything else, read again until its
    /// health deadline; then it fails, left out of rotation, with what it answered.
    fn after_verify(
        &mut self,
        deadline: Instant,
        answer: Result<String, String>,
        now: Instant,
    ) -> Vec<RunStep> {
        let expected = self.settings.expected(self.index).unwrap_or_default();
        if let Ok(answer) = &answer
            && answer == expected
        {
            let mut steps = vec![RunStep::Report(Report::Verified {
                server: self.server(),
                answer: answer.clone(),
            })];
            steps.extend(self.leave_maint(now));
            return steps;
        }
        if now >= deadline {
            let what = match &answer {
                Ok(answer) => format!("it answers {answer:?}, not {expected:?}"),
                Err(error) => format!("it could not be read: {error}"),
            };
            return self.fail(
                Stage::Verifying,
                format!(
                    "verify: {what} within {}s of its restart; it stays out of rotation",
                    self.settings.health_within.as_secs()
                ),
            );
        }
        let last = match &answer {
            Ok(answer) => format!("verify answers {answer:?}, expected {expected:?}"),
            Err(error) => format!("verify could not be read: {error}"),
        };
        let mut steps: Vec<RunStep> = self.waiting(Stage::Verifying, last).into_iter().collect();
        self.phase = Phase::Verifying { deadline };
        steps.push(RunStep::Run(Effect::Wait));
        steps
    }
}
