//! What `status` reports of live state, shared by both reporters.

use crate::haproxy::ServerView;

/// One plan server in one backend on one HAProxy; `view` is `None` when HAProxy lacks it.
pub struct StatusRow<'a> {
    pub instance: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
    pub view: Option<&'a ServerView>,
}

pub(crate) fn address(view: &ServerView) -> String {
    match view.port {
        Some(port) if view.address.contains(':') => format!("[{}]:{port}", view.address),
        Some(port) => format!("{}:{port}", view.address),
        None => view.address.clone(),
    }
}

pub(super) fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}
