//! The capacity rules (docs/safety.md, property 2), in one place for pre-flight and the
//! rollout: which servers count as in rotation (`ServerView::in_rotation`: ready, running, exactly UP,
//! weight above zero), `capacity.min_up` (other servers that must stay in rotation in each
//! backend on each HAProxy) and `capacity.max_unavailable` (`Limits`: servers of one backend
//! this rollout may have out at once).

use std::collections::HashMap;

use super::Topology;
use super::observation::Observation;
use crate::haproxy::ServerView;
use crate::plan::{BackendName, MaxUnavailable, Plan};

/// How many servers of each backend may be out at once (`capacity.max_unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_unavailable: 1`: one server at a time, whatever backends they share.
    one_at_a_time: bool,
    /// Per (HAProxy instance, backend).
    per_backend: HashMap<(usize, BackendName), usize>,
    /// For a backend whose size is not known.
    default: usize,
}

impl Limits {
    /// The limits for backends of the given sizes (`size(instance, backend)`: how many
    /// servers that backend has on that HAProxy, counting servers not in the plan).
    pub fn new(
        max_unavailable: MaxUnavailable,
        topology: &Topology,
        size: impl Fn(usize, &BackendName) -> usize,
    ) -> Limits {
        Limits {
            one_at_a_time: max_unavailable == MaxUnavailable::Count(1),
            per_backend: topology
                .touched()
                .into_iter()
                .map(|(instance, backend)| {
                    let limit = max_unavailable.of(size(instance, &backend));
                    ((instance, backend), limit)
                })
                .collect(),
            default: max_unavailable.of(0),
        }
    }

    /// The limit of one backend on one HAProxy.
    pub fn of(&self, instance: usize, backend: &BackendName) -> usize {
        self.per_backend
            .get(&(instance, backend.clone()))
            .copied()
            .unwrap_or(self.default)
    }

    /// How many servers may ever be in flight at once: one, or up to the largest limit.
    pub fn most_at_once(&self) -> usize {
        if self.one_at_a_time {
            return 1;
        }
        self.per_backend
            .values()
            .copied()
            .max()
            .unwrap_or(self.default)
    }
}

impl Limits {
    /// Property 2's second half: with the servers `out` already out, this rollout has fewer
    /// than `max_unavailable` servers out in each backend of `server`, on each of the
    /// `instances` HAProxy (and with `max_unavailable: 1`, none at all).
    pub fn fits(
        &self,
        topology: &Topology,
        instances: usize,
        server: usize,
        out: &[usize],
    ) -> bool {
        if self.one_at_a_time && !out.is_empty() {
            return false;
        }
        (0..instances).all(|instance| {
            topology.backends(instance, server).iter().all(|backend| {
                let taken = out
                    .iter()
                    .filter(|other| topology.backends(instance, **other).contains(backend))
                    .count();
                taken < self.of(instance, backend)
            })
        })
    }

    /// The limits from each backend's size on each HAProxy now (counting servers not in
    /// the plan).
    pub fn observed(plan: &Plan, observations: &[Observation], topology: &Topology) -> Limits {
        Limits::new(
            plan.capacity.max_unavailable,
            topology,
            |instance, backend| {
                observations
                    .get(instance)
                    .and_then(|observation| observation.state.as_ref().ok())
                    .map_or(0, |snapshot| {
                        snapshot
                            .servers
                            .iter()
                            .filter(|view| view.backend == backend.as_str())
                            .count()
                    })
            },
        )
    }
}

/// Who is in rotation, per HAProxy and backend, read once for every server's check.
#[derive(Debug, Default)]
pub struct InRotation<'v> {
    servers: HashMap<(usize, &'v str), Vec<&'v str>>,
    /// The others: out of rotation, with HAProxy's status (`DOWN`, `MAINT`, ...).
    out: HashMap<(usize, &'v str), Vec<(&'v str, &'v str)>>,
}

impl<'v> InRotation<'v> {
    /// From the server views of each HAProxy, in plan order (`None`: not readable).
    pub fn new(views: impl IntoIterator<Item = Option<&'v [ServerView]>>) -> Self {
        let mut servers: HashMap<(usize, &str), Vec<&str>> = HashMap::new();
        let mut out: HashMap<(usize, &str), Vec<(&str, &str)>> = HashMap::new();
        for (instance, views) in views.into_iter().enumerate() {
            for view in views.into_iter().flatten() {
                let key = (instance, view.backend.as_str());
                if view.in_rotation() {
                    servers.entry(key).or_default().push(view.server.as_str());
                } else {
                    out.entry(key)
                        .or_default()
                        .push((view.server.as_str(), view.status.as_str()));
                }
            }
        }
        InRotation { servers, out }
    }

    /// `app2 (DOWN), app3 (MAINT)`: the servers of `backend` on HAProxy `instance` that are
    /// out of rotation, with their status; `none` when there are none.
    pub fn out_text(&self, instance: usize, backend: &str) -> String {
        let out: Vec<String> = self
            .out
            .get(&(instance, backend))
            .into_iter()
            .flatten()
            .map(|(server, status)| format!("{server} ({status})"))
            .collect();
        if out.is_empty() {
            "none".to_owned()
        } else {
            out.join(", ")
        }
    }

    /// The servers in rotation in `backend` on HAProxy `instance`, other than `server`.
    pub fn others(&self, instance: usize, backend: &str, server: &str) -> Vec<&'v str> {
        self.servers
            .get(&(instance, backend))
            .into_iter()
            .flatten()
            .filter(|name| **name != server)
            .copied()
            .collect()
    }
}

/// Property 2's first half: taking a server out leaves `others` servers in rotation in one
/// backend; enough when at least `min_up`.
pub fn leaves_enough(others: usize, min_up: usize) -> bool {
    others >= min_up
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::AdminState;

    fn view(server: &str, admin: u32, status: &str) -> ServerView {
        ServerView {
            admin: AdminState(admin),
            status: status.into(),
            ..ServerView::fixture(server)
        }
    }

    #[test]
    fn only_servers_that_take_traffic_now_count_for_min_up() {
        let views = vec![
            view("app1", 0, "UP"),
            view("app2", AdminState::FDRAIN, "DRAIN"),
            view("app3", 0, "UP 1/3"),
            view("app4", 0, "UP"),
            view("app5", AdminState::FMAINT, "MAINT"),
        ];
        let in_rotation = InRotation::new([Some(views.as_slice())]);
        assert_eq!(in_rotation.others(0, "be_app", "app1"), ["app4"]);
        assert!(leaves_enough(1, 1));
        assert!(!leaves_enough(1, 2));
        assert_eq!(in_rotation.others(1, "be_app", "app1"), Vec::<&str>::new());
    }

    #[test]
    fn max_unavailable_bounds_the_servers_out_per_backend() {
        let backends = [BackendName::new("be_app").unwrap()];
        let topology = Topology::uniform(1, 10, &backends);
        let one = Limits::new(MaxUnavailable::Count(1), &topology, |_, _| 10);
        assert!(one.fits(&topology, 1, 0, &[]));
        assert!(!one.fits(&topology, 1, 1, &[0]), "one at a time");
        let three = Limits::new(MaxUnavailable::Count(3), &topology, |_, _| 10);
        assert!(three.fits(&topology, 1, 2, &[0, 1]));
        assert!(!three.fits(&topology, 1, 3, &[0, 1, 2]));
        assert_eq!(three.most_at_once(), 3);
    }
}
