//! Rolling back: the servers a rollout changed go back to what they ran before, newest first,
//! through the same safe sequence as a restart (capacity check, drain, zero sessions,
//! maintenance, the rollback command, health, `verify` answering what it ran before,
//! HAProxy's checks, UP), under the same limits.

use super::*;

impl Rollout {
    /// `verify` must answer each server's previous version (`None`: not known, not
    /// verified) rather than what the plan deploys: for a rollback, and for settling one
    /// that was killed.
    pub fn expecting(mut self, servers: &[(usize, Option<String>)]) -> Self {
        if servers.is_empty() {
            return self;
        }
        let settings = Arc::get_mut(&mut self.settings)
            .expect("the settings are not shared before the rollout starts");
        let expected = settings
            .expected
            .get_or_insert_with(|| vec![None; settings.servers.len()]);
        for (index, previous) in servers {
            expected[*index].clone_from(previous);
        }
        self
    }

    /// A rollback with `plan`, the plan's rollback form (`Plan::for_rollback`: its restart
    /// is the rollback command). `servers`: each server to roll back by plan index, newest
    /// first, with what `verify` read on it before the rollout (`None`: not known, so not
    /// verified). Each is decided from what every HAProxy shows now, like a server an
    /// earlier run left: in traffic, it starts like any server (read first: one that already
    /// answers what it ran before is left as it is); out of rotation, its rollback runs once
    /// no session is left on it. `interrupted`: what an earlier, killed rollback left in
    /// flight (its journal's facts): a command of it that may still run holds its server out
    /// of rotation until it can no longer run (property 9), like any recovery.
    pub fn rollback(
        plan: &Plan,
        topology: Topology,
        limits: Limits,
        servers: &[(usize, Option<String>)],
        interrupted: &[Recovered],
    ) -> Self {
        let mut rollout = Rollout::new(plan, topology, limits).expecting(servers);
        rollout.rolling_back = true;
        rollout.queue.clear();
        rollout.canary = None;
        rollout.canary_passed = true;
        // Its earlier answer is what a rollback must see; no read can replace it.
        rollout.read = vec![true; rollout.settings.servers.len()];
        for (index, _) in servers {
            rollout.read[*index] = !rollout.skip_current;
            rollout.results[*index].state = ServerState::Unknown;
        }
        rollout.recovering = servers
            .iter()
            .map(|(index, _)| Recovered {
                index: *index,
                restart: RestartFact::MayHaveRun,
                may_run: interrupted
                    .iter()
                    .find(|earlier| earlier.index == *index)
                    .and_then(|earlier| earlier.may_run),
            })
            .collect();
        rollout
    }
}
