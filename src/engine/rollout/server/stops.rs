//! How a server's run ends: back and done, failed (left out, or back if it was never
//! restarted), or stopped by the operator at a safe point or at once.

use super::*;

impl ServerRun {
    /// The server is back and every hook passed.
    pub(super) fn complete(&mut self) -> Vec<RunStep> {
        let done = RunStep::Report(Report::ServerDone {
            server: self.server(),
            timings: self.result.timings,
        });
        let finish = match &self.stop {
            Stopping::AfterThisServer(reason) => {
                let reason = reason.clone();
                self.finish(Outcome::Failed, Some(reason))
            }
            Stopping::No | Stopping::Interrupted => self.finish(Outcome::Success, None),
        };
        vec![done, finish]
    }

    /// What a stop now means for the outcome: the operator's interrupt wins.
    pub(super) fn failure_outcome(&self) -> Outcome {
        if self.interrupted() {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        }
    }

    /// The server was never changed: nothing to restore.
    pub(super) fn fail_untouched(&mut self, reason: String) -> Vec<RunStep> {
        let outcome = self.failure_outcome();
        vec![
            RunStep::Report(Report::ServerFailed {
                server: self.server(),
                stage: Stage::CheckingCapacity,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// The server stays where it is (out of rotation): report and stop.
    pub(super) fn fail(&mut self, stage: Stage, reason: String) -> Vec<RunStep> {
        self.result.state = ServerState::OutOfRotation;
        let outcome = self.failure_outcome();
        vec![
            RunStep::Report(Report::ServerFailed {
                server: self.server(),
                stage,
                reason: reason.clone(),
            }),
            self.finish(outcome, Some(reason)),
        ]
    }

    /// Puts the server in maintenance everywhere (it may be half-way back), then stops.
    pub(super) fn fail_out_of_rotation(&mut self, stage: Stage, reason: String) -> Vec<RunStep> {
        self.restore(AdminTarget::Maint, stage, reason)
    }

    /// Back to traffic without a restart, then stop (an interrupt before the restart).
    pub(super) fn return_unrestarted(&mut self, why: &str) -> Vec<RunStep> {
        self.phase = Phase::Restoring {
            target: AdminTarget::Ready,
            outcome: Outcome::Interrupted,
            stage: Stage::Draining,
            reason: format!("{why}; {} returned to traffic unrestarted", self.server()),
        };
        Self::run(Effect::SetState(self.server(), AdminTarget::Ready))
    }

    pub(super) fn restore(
        &mut self,
        target: AdminTarget,
        stage: Stage,
        reason: String,
    ) -> Vec<RunStep> {
        self.phase = Phase::Restoring {
            target,
            outcome: self.failure_outcome(),
            stage,
            reason,
        };
        Self::run(Effect::SetState(self.server(), target))
    }

    /// Stopping at the next safe point, delivered between two effects: a server only drained
    /// goes back to traffic unrestarted; a restart in progress is let finish, and the server
    /// returns only once its health and HAProxy's checks pass (else it stays out, as on any
    /// failure). Empty: the next event continues, and the stop takes effect at the next
    /// safe point.
    pub fn interrupt(&mut self) -> Vec<RunStep> {
        if self.stop == Stopping::No {
            self.stop = Stopping::Interrupted;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Sessions { .. } => self.return_unrestarted("interrupted while draining"),
            other => {
                self.phase = other;
                Vec::new()
            }
        }
    }

    /// Stopping now (`why`: `abort --now`, an internal error): the effect in flight was
    /// abandoned; a touched server is left out of rotation (maintenance), whatever it was
    /// doing.
    pub fn stop_now(&mut self, why: &str) -> Vec<RunStep> {
        self.stop = Stopping::Interrupted;
        // A command in flight is abandoned, not stopped: it may still run until its bound.
        // (Waiting for one, the summary already says until when.)
        if matches!(
            self.phase,
            Phase::Restarting
                | Phase::BeforeDrainHook
                | Phase::AfterRestartHook
                | Phase::AfterReadyHook
        ) {
            self.result.may_run = self.may_run();
        }
        if self.holding.is_none() && matches!(self.phase, Phase::CommandMayRun { .. }) {
            // Waiting for an earlier run's hook, in traffic: nothing of ours to undo.
            self.phase = Phase::Idle;
            return vec![self.finish(
                Outcome::Interrupted,
                Some(format!("{why}; {} stays in traffic", self.server())),
            )];
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle | Phase::BeforeDrainHook | Phase::Finished => {
                vec![self.finish(
                    Outcome::Interrupted,
                    Some(format!("{why} before {} was drained", self.server())),
                )]
            }
            // Back in traffic and confirmed UP: taking it out would only cost capacity.
            Phase::AfterReadyHook => vec![self.finish(
                Outcome::Interrupted,
                Some(format!(
                    "{why} during the after_ready hook of {}, which stays in traffic",
                    self.server()
                )),
            )],
            _ => {
                self.phase = Phase::Restoring {
                    target: AdminTarget::Maint,
                    outcome: Outcome::Interrupted,
                    stage: Stage::Restarting,
                    reason: format!("{why}; {} left out of rotation", self.server()),
                };
                Self::run(Effect::SetState(self.server(), AdminTarget::Maint))
            }
        }
    }

    /// The run ends. (The `on_failure` hook is the coordinator's: once per rollout.)
    pub(super) fn finish(&mut self, outcome: Outcome, reason: Option<String>) -> RunStep {
        self.phase = Phase::Finished;
        RunStep::Done(Done {
            outcome,
            reason,
            result: self.result.clone(),
            requeue: false,
        })
    }
}
