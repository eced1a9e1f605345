//! Before the capacity check of each server, what it runs is read (`verify`): what a
//! rollback puts back (`{previous}`), and, with `skip_current`, whether it already answers
//! what this rollout deploys, so that it is left as it is and a second `apply` of the same
//! version changes nothing.

use super::*;

/// How many servers, from the front of the queue, one read covers: the next ones to start,
/// read at once rather than one read per start.
const READ_AHEAD: usize = 16;

impl Rollout {
    /// Reads what the next servers still unread run, before any of them is touched.
    pub(super) fn read_current(&mut self) -> Vec<Action> {
        let servers: Vec<usize> = self
            .queue
            .iter()
            .copied()
            .filter(|index| !self.read[*index])
            .take(READ_AHEAD)
            .collect();
        self.task = Task::ReadingCurrent(servers.clone());
        vec![Action::Run(Lane::Rollout, Effect::ReadCurrent(servers))]
    }

    /// A server that answers what it must after its restart is already current: it leaves
    /// the queue untouched. Any other answer, or none, and it is deployed.
    pub(super) fn after_current_read(
        &mut self,
        servers: &[usize],
        answers: Vec<Result<String, String>>,
        now: Instant,
    ) -> Vec<Action> {
        if answers.len() != servers.len() {
            return self.internal_error(
                format!("{} answers for {} servers", answers.len(), servers.len()),
                now,
            );
        }
        let mut actions = Vec::new();
        for (&index, answer) in servers.iter().zip(answers) {
            self.read[index] = true;
            let server = self.settings.servers[index].clone();
            let expected = self.settings.expected(index);
            if let Ok(answer) = &answer {
                self.results[index].previous = Some(answer.clone());
            }
            actions.push(Action::Report(match answer {
                Ok(answer) if self.skip_current && Some(answer.as_str()) == expected => {
                    self.queue.retain(|queued| *queued != index);
                    self.results[index].state = ServerState::Current;
                    Report::AlreadyCurrent { server, answer }
                }
                Ok(answer) => Report::Running {
                    server,
                    answer: Some(answer),
                    error: None,
                },
                Err(error) => Report::Running {
                    server,
                    answer: None,
                    error: Some(error),
                },
            }));
        }
        actions.extend(self.advance(now));
        actions
    }
}
