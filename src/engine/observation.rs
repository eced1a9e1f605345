//! What the engine is given of the world before it decides: each HAProxy's state, read once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::haproxy::{ServerView, Snapshot};
use crate::plan::Haproxy;

/// What was read from one HAProxy instance.
pub struct Observation<'a> {
    pub instance: &'a Haproxy,
    /// The state, or why it could not be read.
    pub state: Result<Snapshot, String>,
}

/// One poll of every HAProxy during a rollout: each one's server views, or why it could not
/// be read. Shared by every server in flight that asked for it (cloning is a reference
/// count), with each HAProxy's views indexed by backend and server, so a server in flight
/// finds its own in constant time however large the fleet.
#[derive(Clone)]
pub struct Polled(Arc<PolledViews>);

#[derive(Clone)]
struct PolledViews {
    per_instance: Vec<Result<Vec<ServerView>, String>>,
    /// [instance]: backend → server → position in its views.
    index: Vec<HashMap<String, HashMap<String, usize>>>,
}

impl Polled {
    pub fn new(per_instance: Vec<Result<Vec<ServerView>, String>>) -> Polled {
        let index = per_instance
            .iter()
            .map(|result| {
                let mut backends: HashMap<String, HashMap<String, usize>> = HashMap::new();
                for (position, view) in result.iter().flatten().enumerate() {
                    backends
                        .entry(view.backend.clone())
                        .or_default()
                        .insert(view.server.clone(), position);
                }
                backends
            })
            .collect();
        Polled(Arc::new(PolledViews {
            per_instance,
            index,
        }))
    }

    /// `backend/server` as `instance` showed it; `None` when that HAProxy does not have it
    /// (or could not be read).
    pub fn server(&self, instance: usize, backend: &str, server: &str) -> Option<&ServerView> {
        let position = *self.0.index.get(instance)?.get(backend)?.get(server)?;
        self.0.per_instance[instance]
            .as_ref()
            .ok()
            .map(|views| &views[position])
    }

    /// Changes the views of this poll alone (copying them first if they are shared); the
    /// index stays valid, since no view is added, removed or renamed.
    pub fn edit_views(&mut self, edit: impl FnOnce(&mut [Result<Vec<ServerView>, String>])) {
        edit(&mut Arc::make_mut(&mut self.0).per_instance);
    }
}

impl std::ops::Deref for Polled {
    type Target = [Result<Vec<ServerView>, String>];

    fn deref(&self) -> &Self::Target {
        &self.0.per_instance
    }
}

impl PartialEq for Polled {
    fn eq(&self, other: &Self) -> bool {
        self.0.per_instance == other.0.per_instance
    }
}

impl Eq for Polled {}

impl std::fmt::Debug for Polled {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("Polled")
            .field(&self.0.per_instance)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_backend(backend: &str, server: &str) -> ServerView {
        ServerView {
            backend: backend.into(),
            ..ServerView::fixture(server)
        }
    }

    #[test]
    fn a_server_is_found_by_backend_and_name_on_its_haproxy() {
        let polled = Polled::new(vec![
            Ok(vec![in_backend("be_a", "app1"), in_backend("be_b", "app1")]),
            Err("connection refused".into()),
        ]);
        assert_eq!(polled.server(0, "be_b", "app1").unwrap().backend, "be_b");
        assert!(polled.server(0, "be_c", "app1").is_none());
        assert!(polled.server(1, "be_a", "app1").is_none());
        assert!(polled.server(2, "be_a", "app1").is_none());
    }

    #[test]
    fn an_edit_changes_one_copy_and_leaves_the_shared_poll_alone() {
        let shared = Polled::new(vec![Ok(vec![in_backend("be_a", "app1")])]);
        let mut edited = shared.clone();
        edited.edit_views(|views| views[0].as_mut().unwrap()[0].sessions = 7);
        assert_eq!(edited.server(0, "be_a", "app1").unwrap().sessions, 7);
        assert_eq!(shared.server(0, "be_a", "app1").unwrap().sessions, 0);
    }
}
