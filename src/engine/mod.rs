//! Decisions, without I/O and without reading the clock: what pre-flight concludes from live
//! state, and the exact sequence of steps a server goes through.

pub mod capacity;
pub mod observation;
pub mod preflight;
pub mod rollout;
pub mod steps;
pub mod topology;

pub use capacity::Limits;
pub use observation::{Observation, Polled};
pub use preflight::{Preflight, Target, Verdict, did_you_mean};
pub use steps::{Step, around_the_steps, server_steps};
pub use topology::Topology;
