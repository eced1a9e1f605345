//! HAProxy's runtime API: pure protocol code (`proto`), server views (`view`), and the
//! socket client (`client`).

pub mod client;
pub mod proto;
pub mod view;

pub use client::{Client, ClientError};
pub use proto::{AdminState, AdminTarget, Counters, Info, Level, OpState, RuntimeCommand};
pub use view::{ServerView, Snapshot};
