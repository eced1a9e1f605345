//! Pre-flight: from what every HAProxy reports now, decide whether a rollout may start, and
//! say why not. Nothing here changes anything or talks to anything.

use std::collections::BTreeSet;

use super::capacity::{InRotation, Limits, leaves_enough};
use super::observation::Observation;
use super::topology::Topology;
use crate::haproxy::{AdminState, Level};
use crate::plan::PlaceholderValues;
use crate::plan::{BackendName, Backends, MaxUnavailable, Placeholder, Plan, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Warning,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub verdict: Verdict,
    pub text: String,
}

/// Where one server is, as HAProxy has it, and the values its placeholders take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    /// `None` when no HAProxy could say, or they disagree (a blocker says which).
    pub values: Option<PlaceholderValues>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub checks: Vec<Check>,
    pub targets: Vec<Target>,
    /// Which backends each server is in, on each HAProxy.
    pub topology: Topology,
}

impl Preflight {
    pub fn blocked(&self) -> bool {
        self.checks
            .iter()
            .any(|check| check.verdict == Verdict::Blocked)
    }

    pub fn with(&self, verdict: Verdict) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(move |check| check.verdict == verdict)
    }

    fn push(&mut self, verdict: Verdict, text: String) {
        self.checks.push(Check { verdict, text });
    }
}

mod reach;

/// Runs every check that needs no change and no SSH. `ours` names servers that an
/// interrupted run of this rollout took out of rotation (from its journal): their state is
/// expected, not someone else's doing.
pub fn preflight(plan: &Plan, observations: &[Observation], ours: &[&str]) -> Preflight {
    let mut result = Preflight {
        checks: Vec::new(),
        targets: Vec::new(),
        topology: Topology::resolve(plan, observations),
    };
    for (index, observation) in observations.iter().enumerate() {
        check_instance(plan, index, observation, ours, &mut result);
    }
    for (index, server) in plan.servers.iter().enumerate() {
        let target = target(plan, index, server, observations, &mut result);
        result.targets.push(target);
    }
    let in_rotation = InRotation::new(observations.iter().map(|observation| {
        observation
            .state
            .as_ref()
            .ok()
            .map(|snapshot| snapshot.servers.as_slice())
    }));
    batch_check(plan, observations, &mut result);
    for (index, server) in plan.servers.iter().enumerate() {
        let checks = capacity_checks(
            plan,
            index,
            server,
            observations,
            &in_rotation,
            &result.topology,
        );
        result.checks.extend(checks);
    }
    result
}

/// How many servers go at once, per backend: what `max_unavailable` means here.
fn batch_check(plan: &Plan, observations: &[Observation], result: &mut Preflight) {
    let max = plan.capacity.max_unavailable;
    if max == MaxUnavailable::Count(1) {
        result.push(
            Verdict::Pass,
            "batches: one server at a time (max_unavailable 1)".to_owned(),
        );
        return;
    }
    let limits = Limits::observed(plan, observations, &result.topology);
    let parts: Vec<String> = result
        .topology
        .touched()
        .into_iter()
        .map(|(instance, backend)| {
            format!(
                "{backend} on {} {}",
                plan.haproxy[instance].name,
                limits.of(instance, &backend)
            )
        })
        .collect();
    result.push(
        Verdict::Pass,
        format!(
            "batches: up to {} server(s) at once (max_unavailable {max} per backend: {})",
            limits.most_at_once(),
            parts.join(", ")
        ),
    );
}

fn check_instance(
    plan: &Plan,
    index: usize,
    observation: &Observation,
    ours: &[&str],
    result: &mut Preflight,
) {
    let instance = observation.instance;
    let name = &instance.name;
    let snapshot = match &observation.state {
        Ok(snapshot) => snapshot,
        Err(error) => {
            result.push(Verdict::Blocked, format!("{name}: {error}"));
            return;
        }
    };
    let version = &snapshot.info.version;
    match snapshot.level {
        Some(Level::Admin) => result.push(
            Verdict::Pass,
            format!("{name} ({}): HAProxy {version}, pid {}, socket at admin level", instance.socket, snapshot.info.pid),
        ),
        Some(level) => result.push(
            Verdict::Blocked,
            format!(
                "{name} ({}): the socket is at level {}; changing server states needs `level admin` on its `stats socket` line",
                instance.socket,
                level.as_str()
            ),
        ),
        None => result.push(
            Verdict::Warning,
            format!(
                "{name} ({}): HAProxy {version} cannot report its socket level (`show cli level` needs 2.2 or later); admin level is not proven",
                instance.socket
            ),
        ),
    }
    if let Some(warning) = snapshot.info.version_warning() {
        result.push(Verdict::Warning, format!("{name}: {warning}"));
    }
    if snapshot.info.stopping {
        result.push(
            Verdict::Blocked,
            format!("{name}: this HAProxy process is stopping (an old process after a reload?)"),
        );
    }
    let check_view = |view: &crate::haproxy::ServerView, result: &mut Preflight| {
        if ours.contains(&view.server.as_str()) {
            result.push(
                Verdict::Pass,
                format!(
                    "{name}: {}/{} is {} since the interrupted rollout; it is redone first",
                    view.backend,
                    view.server,
                    view.admin_text()
                ),
            );
        } else {
            check_server_state(name.as_str(), view, result);
        }
    };
    let listed = match &plan.backends {
        Backends::Listed(listed) => listed,
        Backends::Auto => {
            // Each server in every backend that holds its name.
            for (server_index, server) in plan.servers.iter().enumerate() {
                let backends = result.topology.backends(index, server_index).to_vec();
                if backends.is_empty() {
                    result.push(
                        Verdict::Blocked,
                        format!(
                            "{name}: no backend has a server named {} (backends: auto)",
                            server.name
                        ),
                    );
                    continue;
                }
                let names: Vec<&str> = backends.iter().map(BackendName::as_str).collect();
                result.push(
                    Verdict::Pass,
                    format!("{name}: {} is in {}", server.name, names.join(", ")),
                );
                for backend in &backends {
                    if let Some(view) = snapshot.server(backend.as_str(), server.name.as_str()) {
                        check_view(view, result);
                    }
                }
            }
            return;
        }
    };
    for backend in listed {
        if !snapshot.has_backend(backend.as_str()) {
            let backends = snapshot.servers.iter().map(|view| view.backend.as_str());
            result.push(
                Verdict::Blocked,
                format!(
                    "{name}: there is no backend `{backend}` (or it has no servers){}",
                    did_you_mean(backend.as_str(), backends)
                ),
            );
            continue;
        }
        let mut missing = Vec::new();
        for server in &plan.servers {
            match snapshot.server(backend.as_str(), server.name.as_str()) {
                None => missing.push(server.name.as_str()),
                Some(view) => check_view(view, result),
            }
        }
        if missing.is_empty() {
            result.push(
                Verdict::Pass,
                format!("{name}: backend {backend} has every server of the plan"),
            );
        } else {
            let servers = || {
                snapshot
                    .servers
                    .iter()
                    .filter(|view| view.backend == backend.as_str())
                    .map(|view| view.server.as_str())
            };
            let hints: String = missing
                .iter()
                .map(|server| did_you_mean(server, servers()))
                .collect();
            result.push(
                Verdict::Blocked,
                format!(
                    "{name}: backend {backend} has no server {}{hints}",
                    missing.join(", ")
                ),
            );
        }
    }
}

/// `; did you mean `be_app`?` when HAProxy has a name close to `wanted`, else nothing.
pub fn did_you_mean<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|name| (strsim::jaro_winkler(wanted, name), name))
        .filter(|(score, name)| *score > 0.8 && *name != wanted)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(String::new, |(_, name)| {
            format!("; did you mean `{name}` (for `{wanted}`)?")
        })
}

/// A plan server that someone else took out of rotation must not be put back silently.
fn check_server_state(instance: &str, view: &crate::haproxy::ServerView, result: &mut Preflight) {
    let id = format!("{instance}: {}/{}", view.backend, view.server);
    let restore = format!("set server {}/{} state ready", view.backend, view.server);
    if view.admin.0 & AdminState::CMAINT != 0 {
        result.push(
            Verdict::Blocked,
            format!("{id} is disabled in the HAProxy configuration; it cannot be rolled: leave it out of the plan"),
        );
    } else if view.admin.in_maintenance() || view.admin.draining() {
        result.push(
            Verdict::Blocked,
            format!(
                "{id} is out of rotation before the rollout ({}); the rollout would put it back into traffic. \
                 If it may take traffic, return it first (`{restore}`); otherwise leave it out of the plan",
                view.admin_text()
            ),
        );
    } else {
        for warning in view.warnings() {
            result.push(Verdict::Warning, format!("{id}: {warning}"));
        }
    }
}

fn target(
    plan: &Plan,
    server_index: usize,
    server: &Server,
    observations: &[Observation],
    result: &mut Preflight,
) -> Target {
    let mut seen: BTreeSet<(String, Option<u16>)> = BTreeSet::new();
    for (instance, observation) in observations.iter().enumerate() {
        let Ok(snapshot) = &observation.state else {
            continue;
        };
        for backend in result.topology.backends(instance, server_index) {
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
            Verdict::Blocked,
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
            Verdict::Blocked,
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
            previous: None,
        }),
    }
}

/// Property 2: draining this server must leave at least `min_up` other servers in rotation
/// in each of its backends on each HAProxy. Checked against the state read now.
fn capacity_checks(
    plan: &Plan,
    server_index: usize,
    server: &Server,
    observations: &[Observation],
    in_rotation: &InRotation,
    topology: &Topology,
) -> Vec<Check> {
    let min_up = plan.capacity.min_up as usize;
    let mut checks = Vec::new();
    for (index, observation) in observations.iter().enumerate() {
        if observation.state.is_err() {
            continue;
        }
        let instance = &observation.instance.name;
        for backend in topology.backends(index, server_index) {
            let others = in_rotation.others(index, backend.as_str(), server.name.as_str());
            let count = others.len();
            // Long lists help nobody: name a few.
            let mut listed: Vec<&str> = others.into_iter().take(5).collect();
            if count > listed.len() {
                listed.push("...");
            }
            let listed = if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            };
            let plural = if count == 1 { "" } else { "s" };
            checks.push(if leaves_enough(count, min_up) {
                Check {
                    verdict: Verdict::Pass,
                    text: format!(
                        "capacity: draining {} leaves {backend} on {instance} with {count} other server{plural} in rotation ({listed}); min_up {min_up}",
                        server.name
                    ),
                }
            } else {
                // Name what is out, so the operator knows what to bring back.
                let out: Vec<String> = observation
                    .state
                    .as_ref()
                    .map(|snapshot| {
                        snapshot
                            .servers
                            .iter()
                            .filter(|view| {
                                view.backend == backend.as_str()
                                    && view.server != server.name.as_str()
                                    && !view.in_rotation()
                            })
                            .take(5)
                            .map(|view| format!("{} {}", view.server, view.status))
                            .collect()
                    })
                    .unwrap_or_default();
                let out = if out.is_empty() {
                    String::new()
                } else {
                    format!("; out of rotation: {}", out.join(", "))
                };
                Check {
                    verdict: Verdict::Blocked,
                    text: format!(
                        "capacity: {backend} on {instance} has {count} other server{plural} in rotation besides {} ({listed}); min_up {min_up}{out}",
                        server.name
                    ),
                }
            });
        }
    }
    checks
}
