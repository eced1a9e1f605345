//! The settings each server's run decides with, taken from the plan once.

use std::time::Duration;

use super::super::topology::Topology;
use super::{CommandKind, Stage};
use crate::plan::{HookPoint, OnDrainTimeout, Plan, ServerName};

/// The settings each server's run decides with, taken from the plan.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) servers: Vec<ServerName>,
    /// Which backends each server is in, on each HAProxy.
    pub(super) topology: Topology,
    pub(super) drain_timeout: Duration,
    pub(super) on_drain_timeout: OnDrainTimeout,
    pub(super) health_within: Duration,
    pub(super) poll_interval: Duration,
    pub(super) ready_timeout: Duration,
    /// Per HAProxy instance: how long it may stay unreadable before the rollout stops.
    pub(super) unreachable_timeouts: Vec<Duration>,
    /// Per HAProxy instance: its name in the plan, for reports.
    pub(super) instances: Vec<String>,
    /// The hook points the plan has a command for.
    pub(super) hooks: Vec<HookPoint>,
    /// How long after it was sent the restart, and each hook, may still run on its host.
    pub(super) restart_bound: Duration,
    pub(super) hook_bounds: Vec<(HookPoint, Duration)>,
    /// How long the restart, and each hook, is given on its host (its `timeout`).
    pub(super) restart_timeout: Duration,
    pub(super) hook_timeouts: Vec<(HookPoint, Duration)>,
    /// With `verify`: per server, the answer it must give after its restart (`None`: not
    /// known, as for a rollback of a server whose earlier answer was never read).
    pub(super) expected: Option<Vec<Option<String>>>,
}

impl Settings {
    pub(super) fn of(plan: &Plan, topology: Topology) -> Self {
        Settings {
            servers: plan
                .servers
                .iter()
                .map(|server| server.name.clone())
                .collect(),
            topology,
            drain_timeout: plan.drain.timeout,
            on_drain_timeout: plan.drain.on_timeout,
            health_within: plan.health.within,
            poll_interval: plan.poll_interval,
            ready_timeout: plan.ready.timeout,
            unreachable_timeouts: plan
                .haproxy
                .iter()
                .map(|instance| instance.unreachable_timeout)
                .collect(),
            instances: plan
                .haproxy
                .iter()
                .map(|instance| instance.name.to_string())
                .collect(),
            hooks: [
                HookPoint::BeforeDrain,
                HookPoint::AfterRestart,
                HookPoint::AfterReady,
                HookPoint::OnFailure,
            ]
            .into_iter()
            .filter(|point| plan.hooks.get(*point).is_some())
            .collect(),
            restart_bound: plan.remote_bound(plan.restart.timeout),
            hook_bounds: [
                HookPoint::BeforeDrain,
                HookPoint::AfterRestart,
                HookPoint::AfterReady,
                HookPoint::OnFailure,
            ]
            .into_iter()
            .filter_map(|point| Some((point, plan.remote_bound(plan.hooks.get(point)?.timeout))))
            .collect(),
            restart_timeout: plan.restart.timeout,
            hook_timeouts: [
                HookPoint::BeforeDrain,
                HookPoint::AfterRestart,
                HookPoint::AfterReady,
                HookPoint::OnFailure,
            ]
            .into_iter()
            .filter_map(|point| Some((point, plan.hooks.get(point)?.timeout)))
            .collect(),
            expected: plan.verify.as_ref().map(|verify| {
                plan.servers
                    .iter()
                    .map(|server| Some(verify.expected(&server.name)))
                    .collect()
            }),
        }
    }

    /// `HAProxy lb1`: an instance as the plan names it.
    pub(super) fn haproxy(&self, instance: usize) -> String {
        format!(
            "HAProxy {}",
            self.instances
                .get(instance)
                .map_or("(unknown)", String::as_str)
        )
    }

    /// The answer `verify` must give for the server at `index`, if there is one to check.
    pub(super) fn expected(&self, index: usize) -> Option<&str> {
        self.expected.as_ref()?.get(index)?.as_deref()
    }

    /// How long a stage may last before the server fails (`None`: a single step).
    pub(super) fn within(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::CheckingCapacity | Stage::Draining => None,
            Stage::WaitingForSessions => Some(self.drain_timeout),
            Stage::Restarting => Some(self.restart_timeout),
            Stage::WaitingForHealth | Stage::Verifying => Some(self.health_within),
            Stage::WaitingForChecks | Stage::ReturningToTraffic => Some(self.ready_timeout),
            Stage::Hook(point) => self
                .hook_timeouts
                .iter()
                .find(|(candidate, _)| *candidate == point)
                .map(|(_, timeout)| *timeout),
        }
    }

    pub(super) fn bound(&self, what: CommandKind) -> Duration {
        match what {
            CommandKind::Restart => self.restart_bound,
            CommandKind::Hook(point) => self
                .hook_bounds
                .iter()
                .find(|(candidate, _)| *candidate == point)
                .map_or(self.restart_bound, |(_, bound)| *bound),
        }
    }
}
