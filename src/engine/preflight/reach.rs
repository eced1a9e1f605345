//! Pre-flight checks whose facts the commands gather (connecting over SSH, asking health
//! URLs) and the engine judges: every host reachable with a verified key, and every server
//! HAProxy has in rotation answering its health URL now, or the rollout would take it out and
//! could not put it back.

use super::{Observation, Preflight, Verdict};
use crate::plan::Plan;

impl Preflight {
    /// The servers whose health URL is asked before anything changes: those in rotation on
    /// every HAProxy that has them, with an address known.
    pub fn to_probe(&self, observations: &[Observation]) -> Vec<usize> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, target)| target.values.is_some())
            .filter(|(index, target)| {
                let mut views = observations
                    .iter()
                    .enumerate()
                    .filter_map(|(instance, observation)| {
                        Some((instance, observation.state.as_ref().ok()?))
                    })
                    .flat_map(|(instance, snapshot)| {
                        self.topology
                            .backends(instance, *index)
                            .iter()
                            .filter_map(|backend| {
                                snapshot.servers.iter().find(|view| {
                                    view.backend == backend.as_str() && view.server == target.server
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .peekable();
                views.peek().is_some() && views.all(|view| view.in_rotation())
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// What each server of `to_probe` answered: one that fails blocks, with its URL's error.
    pub fn probed(&mut self, plan: &Plan, answers: &[(usize, Result<(), String>)]) {
        let mut healthy = 0;
        for (index, answer) in answers {
            match answer {
                Ok(()) => healthy += 1,
                Err(error) => self.push(
                    Verdict::Blocked,
                    format!(
                        "health: {} is in rotation but its health URL does not answer {}: {error}; apply would take it out and could not put it back: check health.url",
                        plan.servers[*index].name,
                        plan.health.expect_status
                    ),
                ),
            }
        }
        if healthy > 0 {
            self.push(
                Verdict::Pass,
                format!("health: {healthy} server(s) in rotation answer their health URL"),
            );
        }
    }

    /// Whether every host answered over SSH with a verified key (`Ok`: how many hosts).
    pub fn connected(&mut self, result: Result<usize, String>) {
        match result {
            Ok(hosts) => self.push(
                Verdict::Pass,
                format!("ssh: {hosts} host(s) reachable, host keys verified"),
            ),
            Err(error) => self.push(Verdict::Blocked, format!("ssh: {error}")),
        }
    }

    /// SSH was not tried (`plan --no-ssh`): said, as apply will check it.
    pub fn not_connected(&mut self) {
        self.push(
            Verdict::Warning,
            "ssh: not checked (--no-ssh); apply connects to every host and verifies its key before it changes anything".to_owned(),
        );
    }
}

impl Preflight {
    /// Where the rollout's state lives and whether `apply` could take the plan's lock now
    /// (`Ok(None)`: free; `Ok(Some(holder))`: a rollout holds it; `Err`: the state cannot
    /// be used, e.g. an etcd that cannot be reached).
    pub fn state(&mut self, place: &str, holder: Result<Option<String>, String>) {
        match holder {
            Ok(None) => self.push(
                Verdict::Pass,
                format!("state: {place}; no rollout of this plan is running"),
            ),
            Ok(Some(holder)) => self.push(
                Verdict::Blocked,
                format!("state: a rollout of this plan is running: {holder} (apply would exit 5)"),
            ),
            Err(error) => self.push(Verdict::Blocked, format!("state: {error}")),
        }
    }
}
