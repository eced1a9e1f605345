//! Pre-flight: from what every HAProxy reports now, decide whether a rollout may start, and
//! say why not. Nothing here changes anything or talks to anything.

use std::collections::BTreeSet;

use crate::haproxy::{AdminState, Level, Snapshot};
use crate::plan::{Haproxy, Placeholder, Plan, Server};
use crate::ssh::PlaceholderValues;

/// What was read from one HAProxy instance.
pub struct Observation<'a> {
    pub instance: &'a Haproxy,
    /// The state, or why it could not be read.
    pub state: Result<Snapshot, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Pass,
    Warning,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub outcome: Outcome,
    pub text: String,
}

/// Where one server is, as HAProxy has it, and the values its placeholders take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    /// `None` when no HAProxy could say, or they disagree (a blocker says which).
    pub values: Option<PlaceholderValues>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub checks: Vec<Check>,
    pub targets: Vec<Target>,
}

impl Preflight {
    pub fn blocked(&self) -> bool {
        self.checks
            .iter()
            .any(|check| check.outcome == Outcome::Blocked)
    }

    pub fn with(&self, outcome: Outcome) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(move |check| check.outcome == outcome)
    }

    fn push(&mut self, outcome: Outcome, text: String) {
        self.checks.push(Check { outcome, text });
    }
}

/// Runs every check that needs no change and no SSH. `ours` names servers that an
/// interrupted run of this rollout took out of rotation (from its journal): their state is
/// expected, not someone else's doing.
pub fn preflight(plan: &Plan, observations: &[Observation], ours: &[&str]) -> Preflight {
    let mut result = Preflight::default();
    for observation in observations {
        check_instance(plan, observation, ours, &mut result);
    }
    for server in &plan.servers {
        let target = target(plan, server, observations, &mut result);
        result.targets.push(target);
    }
    // Who is in rotation per HAProxy and backend, read once for every server's check.
    let in_rotation: Vec<Vec<Vec<&str>>> = observations
        .iter()
        .map(|observation| match &observation.state {
            Ok(snapshot) => plan
                .backends
                .iter()
                .map(|backend| {
                    snapshot
                        .backend(backend.as_str())
                        .filter(|view| view.in_rotation())
                        .map(|view| view.server.as_str())
                        .collect()
                })
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect();
    for server in &plan.servers {
        check_capacity(plan, server, observations, &in_rotation, &mut result);
    }
    result
}

fn check_instance(plan: &Plan, observation: &Observation, ours: &[&str], result: &mut Preflight) {
    let instance = observation.instance;
    let name = &instance.name;
    let snapshot = match &observation.state {
        Ok(snapshot) => snapshot,
        Err(error) => {
            result.push(Outcome::Blocked, format!("{name}: {error}"));
            return;
        }
    };
    let version = &snapshot.info.version;
    match snapshot.level {
        Some(Level::Admin) => result.push(
            Outcome::Pass,
            format!("{name} ({}): HAProxy {version}, pid {}, socket at admin level", instance.socket, snapshot.info.pid),
        ),
        Some(level) => result.push(
            Outcome::Blocked,
            format!(
                "{name} ({}): the socket is at level {}; changing server states needs `level admin` on its `stats socket` line",
                instance.socket,
                level.as_str()
            ),
        ),
        None => result.push(
            Outcome::Warning,
            format!(
                "{name} ({}): HAProxy {version} cannot report its socket level (`show cli level` needs 2.2 or later); admin level is not proven",
                instance.socket
            ),
        ),
    }
    if snapshot.info.stopping {
        result.push(
            Outcome::Blocked,
            format!("{name}: this HAProxy process is stopping (an old process after a reload?)"),
        );
    }
    for backend in &plan.backends {
        if !snapshot.has_backend(backend.as_str()) {
            result.push(
                Outcome::Blocked,
                format!("{name}: there is no backend `{backend}` (or it has no servers)"),
            );
            continue;
        }
        let mut missing = Vec::new();
        for server in &plan.servers {
            match snapshot.server(backend.as_str(), server.name.as_str()) {
                None => missing.push(server.name.as_str()),
                Some(view) if ours.contains(&view.server.as_str()) => result.push(
                    Outcome::Pass,
                    format!(
                        "{name}: {}/{} is {} since the interrupted rollout; it is redone first",
                        view.backend,
                        view.server,
                        view.admin_text()
                    ),
                ),
                Some(view) => check_server_state(name.as_str(), view, result),
            }
        }
        if missing.is_empty() {
            result.push(
                Outcome::Pass,
                format!("{name}: backend {backend} has every server of the plan"),
            );
        } else {
            result.push(
                Outcome::Blocked,
                format!(
                    "{name}: backend {backend} has no server {}",
                    missing.join(", ")
                ),
            );
        }
    }
}

/// A plan server that someone else took out of rotation must not be put back silently.
fn check_server_state(instance: &str, view: &crate::haproxy::ServerView, result: &mut Preflight) {
    let id = format!("{instance}: {}/{}", view.backend, view.server);
    let restore = format!("set server {}/{} state ready", view.backend, view.server);
    if view.admin.0 & AdminState::CMAINT != 0 {
        result.push(
            Outcome::Blocked,
            format!("{id} is disabled in the HAProxy configuration; it cannot be rolled: leave it out of the plan"),
        );
    } else if view.admin.in_maintenance() || view.admin.draining() {
        result.push(
            Outcome::Blocked,
            format!(
                "{id} is out of rotation before the rollout ({}); the rollout would put it back into traffic. \
                 If it may take traffic, return it first (`{restore}`); otherwise leave it out of the plan",
                view.admin_text()
            ),
        );
    } else {
        for warning in view.warnings() {
            result.push(Outcome::Warning, format!("{id}: {warning}"));
        }
    }
}

fn target(
    plan: &Plan,
    server: &Server,
    observations: &[Observation],
    result: &mut Preflight,
) -> Target {
    let mut seen: BTreeSet<(String, Option<u16>)> = BTreeSet::new();
    for observation in observations {
        let Ok(snapshot) = &observation.state else {
            continue;
        };
        for backend in &plan.backends {
            if let Some(view) = snapshot.server(backend.as_str(), server.name.as_str()) {
                seen.insert((view.address.clone(), view.port));
            }
        }
    }
    let name = server.name.to_string();
    let needs_address = server.host.is_none()
        || server.health_url(plan).uses(Placeholder::Addr)
        || server.health_url(plan).uses(Placeholder::Port)
        || plan.restart.command.uses(Placeholder::Addr)
        || plan.restart.command.uses(Placeholder::Port);
    if seen.len() > 1 && needs_address {
        let all: Vec<String> = seen
            .iter()
            .map(|(address, port)| match port {
                Some(port) => format!("{address}:{port}"),
                None => address.clone(),
            })
            .collect();
        result.push(
            Outcome::Blocked,
            format!("{name} has different addresses in different backends or HAProxy instances ({}); {{addr}}, {{port}} and the default SSH host need one", all.join(", ")),
        );
        return Target {
            server: name,
            values: None,
        };
    }
    let Some((address, port)) = seen.into_iter().next() else {
        return Target {
            server: name,
            values: None,
        };
    };
    if port.is_none() && server.health_url(plan).uses(Placeholder::Port) {
        result.push(
            Outcome::Blocked,
            format!("{name}: HAProxy knows no port for it, but its health URL uses {{port}}; set `health_url` for it"),
        );
    }
    let host = server
        .host
        .as_ref()
        .map_or_else(|| address.clone(), |host| host.as_str().to_owned());
    Target {
        server: name.clone(),
        values: Some(PlaceholderValues {
            server: name,
            host,
            addr: address,
            port,
        }),
    }
}

/// Property 2: draining this server must leave at least `min_up` other servers in rotation
/// in each of its backends on each HAProxy. Checked against the state read now.
fn check_capacity(
    plan: &Plan,
    server: &Server,
    observations: &[Observation],
    in_rotation: &[Vec<Vec<&str>>],
    result: &mut Preflight,
) {
    let min_up = plan.capacity.min_up as usize;
    for (observation, per_backend) in observations.iter().zip(in_rotation) {
        let Ok(snapshot) = &observation.state else {
            continue;
        };
        let instance = &observation.instance.name;
        for (backend, in_rotation) in plan.backends.iter().zip(per_backend) {
            if snapshot
                .server(backend.as_str(), server.name.as_str())
                .is_none()
            {
                continue;
            }
            let others = in_rotation
                .iter()
                .filter(|name| **name != server.name.as_str());
            let count = others.clone().count();
            // Long lists help nobody: name a few.
            let mut listed: Vec<&str> = others.take(5).copied().collect();
            if count > listed.len() {
                listed.push("...");
            }
            let listed = if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            };
            let plural = if count == 1 { "" } else { "s" };
            if count >= min_up {
                result.push(
                    Outcome::Pass,
                    format!(
                        "capacity: draining {} leaves {backend} on {instance} with {count} other server{plural} in rotation ({listed}); min_up {min_up}",
                        server.name
                    ),
                );
            } else {
                result.push(
                    Outcome::Blocked,
                    format!(
                        "capacity: {backend} on {instance} has {count} other server{plural} in rotation besides {} ({listed}); min_up {min_up}",
                        server.name
                    ),
                );
            }
        }
    }
}
