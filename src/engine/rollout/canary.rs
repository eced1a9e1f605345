//! After the canary pause: every canary still in rotation and exactly UP, and healthy.

use super::*;

impl Rollout {
    /// After the canary pause: every canary still in rotation and exactly UP on every
    /// HAProxy and backend.
    pub(super) fn after_canary_poll(&mut self, views: &Polled, now: Instant) -> Vec<Action> {
        let canaries = self.canary.map_or(0, |(count, _)| count);
        for index in 0..canaries {
            let server = &self.settings.servers[index];
            for (instance, result) in views.iter().enumerate() {
                let problem = match result {
                    Err(error) => Some(format!(
                        "{} is unreadable: {error}",
                        self.settings.haproxy(instance)
                    )),
                    Ok(_) => self
                        .settings
                        .topology
                        .backends(instance, index)
                        .iter()
                        .find_map(|backend| {
                            match views.server(instance, backend.as_str(), server.as_str()) {
                                Some(view) if view.in_rotation() => None,
                                Some(view) => Some(format!(
                                    "{backend}/{server} on {} is {} ({})",
                                    self.settings.haproxy(instance),
                                    view.status,
                                    view.admin_text()
                                )),
                                None => Some(format!(
                                    "{} no longer has {backend}/{server}",
                                    self.settings.haproxy(instance)
                                )),
                            }
                        }),
                };
                if let Some(problem) = problem {
                    return self.canary_failed(format!("after the canary pause, {problem}"), now);
                }
            }
        }
        self.task = Task::CanaryProbe { next: 0 };
        vec![Action::Run(Lane::Rollout, Effect::Probe(0))]
    }

    /// A canary is no longer fine: the rest is not touched. The canaries stay as they are,
    /// in HAProxy's hands (its checks take a failing server out).
    pub(super) fn canary_failed(&mut self, reason: String, now: Instant) -> Vec<Action> {
        let last_canary = self.canary.map_or(0, |(count, _)| count.saturating_sub(1));
        self.fail_rollout(
            last_canary,
            format!("canary check failed: {reason}; no further server was touched"),
            now,
        )
    }
}
