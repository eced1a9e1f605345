//! Which backends each server is in, on each HAProxy: the plan's list, or, with
//! `backends: auto`, every backend that holds the server's name there.

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
            .map(|observation| {
                plan.servers
                    .iter()
                    .map(|server| match &plan.backends {
                        Backends::Listed(names) => names.clone(),
                        Backends::Auto => match &observation.state {
                            Ok(snapshot) => {
                                let mut names: Vec<BackendName> = snapshot
                                    .servers
                                    .iter()
                                    .filter(|view| view.server == server.name.as_str())
                                    .filter_map(|view| BackendName::new(&view.backend).ok())
                                    .collect();
                                names.dedup();
                                names
                            }
                            Err(_) => Vec::new(),
                        },
                    })
                    .collect()
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
