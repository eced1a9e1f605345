//! Exit statuses: one meaning each, as documented in docs/exit-codes.md.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// The rollout failed; the report says where and what state each server is in.
    RolloutFailed = 1,
    /// Usage error or invalid plan; nothing was touched.
    Usage = 2,
    /// A pre-flight check failed; nothing was touched.
    PreflightFailed = 3,
    /// The operator aborted the rollout.
    Aborted = 4,
    /// Another rollout of this plan holds the lock.
    Locked = 5,
    /// `status`: a plan server is out of rotation, or a rollout of the plan is running or
    /// did not finish; not at rest, so a pipeline gate stops.
    NotAtRest = 6,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
