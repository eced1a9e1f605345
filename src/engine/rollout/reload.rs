//! Property 7: a reload of HAProxy, as the engine sees it: what to put back, and the
//! sessions an old process may still serve, which the new process's socket does not show.

use super::*;

impl Rollout {
    /// Property 7: HAProxy `old.instance` reloaded (its process changed). Returns the
    /// state each server in flight must have, which the reload dropped and the driver puts
    /// back on that HAProxy before anything else. The servers draining and not yet
    /// restarted count a session on the old process from now on, while it may still run
    /// (docs/safety.md, property 3: no restart under a request the old process still serves).
    pub fn reloaded(&mut self, old: Option<OldProcess>) -> Vec<(ServerName, AdminTarget)> {
        let servers: Vec<usize> = self
            .flights
            .iter()
            .filter(|(_, flight)| flight.run.draining_before_restart())
            .map(|(index, _)| *index)
            .collect();
        if let Some(process) = old
            && !servers.is_empty()
        {
            self.old_sessions.push(OldSessions { process, servers });
        }
        self.expected_states()
    }

    /// The old processes whose sessions still count and that the driver can look up.
    pub fn old_processes(&self) -> Vec<OldProcess> {
        self.old_sessions
            .iter()
            .map(|old| old.process)
            .filter(|process| process.visible)
            .collect()
    }

    /// The driver looked: these old processes no longer run, so their sessions are over.
    pub fn old_processes_gone(&mut self, gone: &[OldProcess]) {
        self.old_sessions.retain(|old| !gone.contains(&old.process));
    }

    /// A poll of `index`'s lane: a session counts on it on every HAProxy whose old process
    /// may still serve its requests, as long as it drains before its restart.
    pub(super) fn count_old_sessions(&mut self, index: usize, polled: &mut Polled) {
        let flights = &self.flights;
        self.old_sessions.retain_mut(|old| {
            old.servers.retain(|server| {
                flights
                    .get(server)
                    .is_some_and(|flight| flight.run.draining_before_restart())
            });
            !old.servers.is_empty()
        });
        let server = self.settings.servers[index].as_str();
        let instances: Vec<usize> = self
            .old_sessions
            .iter()
            .filter(|old| old.servers.contains(&index))
            .map(|old| old.process.instance)
            .collect();
        if instances.is_empty() {
            return; // the poll stays shared
        }
        polled.edit_views(|views| {
            for instance in instances {
                if let Some(Ok(views)) = views.get_mut(instance) {
                    for view in views.iter_mut().filter(|view| view.server == server) {
                        view.sessions = view.sessions.max(1);
                    }
                }
            }
        });
    }
}
