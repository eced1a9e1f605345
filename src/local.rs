//! Commands run on this machine rather than over SSH: hooks with `local: true`. The same
//! command line, tracking wrapper and deadline rules as a remote command (`ssh.rs`), so a
//! local hook is reported, bounded and checked like any other.

use std::time::Duration;

use crate::plan::REMOTE_KILL_AFTER;
use crate::ssh::{CommandError, Marker, Tracked, check_command, tracked_state};

/// Runs a command line (as built by `remote_command`) on this machine, with output captured
/// and the same deadline rules as a remote one.
pub async fn run(command: &str, deadline: Duration) -> Result<String, CommandError> {
    let host = "this machine".to_owned();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| CommandError::Lost {
            host: host.clone(),
            command: command.to_owned(),
            detail: format!("cannot start sh: {error}"),
        })?;
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .map_err(|_| CommandError::Timeout {
            host: host.clone(),
            command: command.to_owned(),
            timeout: deadline,
        })?
        .map_err(|error| CommandError::Lost {
            host: host.clone(),
            command: command.to_owned(),
            detail: error.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(stdout),
        Some(124) => Err(CommandError::Timeout {
            host,
            command: command.to_owned(),
            timeout: deadline.saturating_sub(REMOTE_KILL_AFTER),
        }),
        Some(status) => Err(CommandError::Exit {
            host,
            command: command.to_owned(),
            status,
            stdout,
            stderr,
        }),
        None => Err(CommandError::Lost {
            host,
            command: command.to_owned(),
            detail: "it was killed by a signal".to_owned(),
        }),
    }
}

/// Whether the command behind `marker` still runs on this machine (a local hook).
pub async fn check(marker: &Marker) -> Result<Tracked, String> {
    let output = run(&check_command(marker), Duration::from_secs(10))
        .await
        .map_err(|error| error.to_string())?;
    tracked_state(&output)
}
