//! What the engine is given of the world before it decides: each HAProxy's state, read once.

use crate::haproxy::Snapshot;
use crate::plan::Haproxy;

/// What was read from one HAProxy instance.
pub struct Observation<'a> {
    pub instance: &'a Haproxy,
    /// The state, or why it could not be read.
    pub state: Result<Snapshot, String>,
}
