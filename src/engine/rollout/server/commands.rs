//! A command whose outcome is unknown (docs/safety.md, property 9): the server stays out of rotation until
//! its host shows the command ended or its remote bound passed, then goes on.

use super::*;

impl ServerRun {
    /// The command last sent may still run until its remote bound: what it is and until when.
    pub(super) fn may_run(&self) -> Option<MayRun> {
        self.sent.map(|(what, sent)| MayRun {
            what,
            until: sent + self.settings.bound(what),
        })
    }

    /// A command whose outcome is unknown: it is reported as possibly running (and the
    /// summary says until when).
    pub(super) fn note_unknown(&mut self, error: &CommandFailure) -> Vec<RunStep> {
        let CommandFailure::Unknown(_) = error else {
            return Vec::new();
        };
        let Some(may_run) = self.may_run() else {
            return Vec::new();
        };
        self.result.may_run = Some(may_run);
        vec![RunStep::Report(Report::CommandMayRun {
            server: self.server(),
            what: may_run.what,
            until: may_run.until,
        })]
    }

    /// Property 9: the last command's outcome is unknown. The server stays in maintenance
    /// until its host shows the command ended, or its remote bound passed; then it is
    /// settled by its health and HAProxy's checks.
    pub(super) fn await_command(&mut self, now: Instant) -> Vec<RunStep> {
        let Some(may_run) = self.may_run() else {
            return self.start_probing(now);
        };
        self.wait_for_command(may_run, now)
    }

    pub(super) fn wait_for_command(&mut self, may_run: MayRun, now: Instant) -> Vec<RunStep> {
        self.result.may_run = Some(may_run);
        self.phase = Phase::CommandMayRun {
            what: may_run.what,
            until: may_run.until,
            next_check: now + CHECK_EVERY,
        };
        vec![
            RunStep::Report(Report::CommandMayRun {
                server: self.server(),
                what: may_run.what,
                until: may_run.until,
            }),
            RunStep::Run(Effect::CheckCommand(self.index)),
        ]
    }

    pub(super) fn after_command_check(
        &mut self,
        event: Event,
        (what, until, next_check): (CommandKind, Instant, Instant),
        now: Instant,
    ) -> Vec<RunStep> {
        let ended = |run: &mut Self, proven: bool| {
            run.result.may_run = None;
            let mut steps = vec![RunStep::Report(Report::CommandEnded {
                server: run.server(),
                what,
                proven,
            })];
            run.secure = None;
            steps.extend(match run.after_command {
                AfterCommand::Probe { restart_known } => {
                    run.restart_unknown |= !restart_known;
                    run.start_probing(now)
                }
                AfterCommand::RestartAfterSessions => run.wait_for_sessions(now),
                AfterCommand::ReturnUnrestarted => {
                    run.return_unrestarted("settled after an interrupted rollout")
                }
                AfterCommand::ConfirmUp { restart_known } => run.confirm_up(restart_known, now),
                AfterCommand::Queue => {
                    run.result.state = ServerState::Untouched;
                    let mut done = run.finish(Outcome::Success, None);
                    if let RunStep::Done(done) = &mut done {
                        done.requeue = true;
                    }
                    vec![done]
                }
                AfterCommand::Leave(state) => {
                    run.result.state = state;
                    vec![run.finish(Outcome::Success, None)]
                }
            });
            steps
        };
        match event {
            Event::CommandChecked(Ok(CommandState::Ended)) => ended(self, true),
            _ if now >= until => ended(self, false),
            // Still running, or the host cannot tell: out of traffic before anything else.
            Event::CommandChecked(_) if self.secure.is_some() => {
                let target = self.secure.take().unwrap_or(AdminTarget::Maint);
                self.phase = Phase::Securing {
                    may_run: MayRun { what, until },
                    target,
                };
                vec![
                    self.stage(Stage::Draining),
                    RunStep::Run(Effect::SetState(self.server(), target)),
                ]
            }
            Event::Waited if now >= next_check => {
                self.phase = Phase::CommandMayRun {
                    what,
                    until,
                    next_check: now + CHECK_EVERY,
                };
                Self::run(Effect::CheckCommand(self.index))
            }
            _ => {
                self.phase = Phase::CommandMayRun {
                    what,
                    until,
                    next_check,
                };
                Self::run(Effect::Wait)
            }
        }
    }
}
