//! Which backends each server is in, on each HAProxy: the plan's list, or, with
//! `backends: auto`, every backend that holds the server's name there.

use std::collections::HashMap;

use crate::plan::{BackendName, Backends, Plan};

use super::observation::Observation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// [HAProxy instance][server index] → backends.
    per_instance: Vec<Vec<Vec<BackendName>>>,
}

impl Topology {
    /// The backends of every server on every HAProxy, from the plan and what each HAProxy
    /// reported. A server `auto` finds in no backend (or an HAProxy that could not be read)
    /// gets none; pre-flight blocks on that.
    pub fn resolve(plan: &Plan, observations: &[Observation]) -> Topology {
        let per_instance = observations
            .iter()
            .map(|observation| match (&plan.backends, &observation.state) {
                (Backends::Listed(names), _) => vec![names.clone(); plan.servers.len()],
                (Backends::Auto, Ok(snapshot)) => {
                    // Each server's backends in the order HAProxy lists them, read in one
                    // pass, so a fleet of thousands resolves in linear time.
                    let mut by_server: HashMap<&str, Vec<BackendName>> = HashMap::new();
                    for view in &snapshot.servers {
                        if let Ok(backend) = BackendName::new(&view.backend) {
                            let names = by_server.entry(view.server.as_str()).or_default();
                            if names.last() != Some(&backend) {
                                names.push(backend);
                            }
                        }
                    }
                    plan.servers
                        .iter()
                        .map(|server| by_server.remove(server.name.as_str()).unwrap_or_default())
                        .collect()
                }
                (Backends::Auto, Err(_)) => vec![Vec::new(); plan.servers.len()],
            })
            .collect();
        Topology { per_instance }
    }

    /// The same backends for every server on every HAProxy (tests, and listed backends).
    pub fn uniform(instances: usize, servers: usize, backends: &[BackendName]) -> Topology {
        Topology {
            per_instance: vec![vec![backends.to_vec(); servers]; instances],
        }
    }

    pub fn backends(&self, instance: usize, server: usize) -> &[BackendName] {
        self.per_instance
            .get(instance)
            .and_then(|servers| servers.get(server))
            .map_or(&[], Vec::as_slice)
    }

    /// Every backend the server is in on any HAProxy, in first-seen order.
    pub fn all_backends_of(&self, server: usize) -> Vec<BackendName> {
        let mut all: Vec<BackendName> = Vec::new();
        for servers in &self.per_instance {
            for backend in servers.get(server).into_iter().flatten() {
                if !all.contains(backend) {
                    all.push(backend.clone());
                }
            }
        }
        all
    }

    /// Every (HAProxy instance, backend) the rollout may change, for the locks.
    pub fn touched(&self) -> Vec<(usize, BackendName)> {
        let mut touched = Vec::new();
        for (instance, servers) in self.per_instance.iter().enumerate() {
            for backend in servers.iter().flatten() {
                if !touched.contains(&(instance, backend.clone())) {
                    touched.push((instance, backend.clone()));
                }
            }
        }
        touched
    }
}
