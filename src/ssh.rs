//! SSH side of a restart: running the rendered command line (`plan::template`) on its host
//! over a shared connection, and proving later whether it still runs (`Marker`).
//!
//! Dropping a command's future does not stop the remote process, so the remote side wraps
//! the command in coreutils `timeout`, which sends TERM at the deadline and KILL shortly after.

use std::time::Duration;

use crate::plan::REMOTE_KILL_AFTER;
use crate::plan::template::shell_quote;

/// How many SSH connections are opened at once during pre-flight.
const PARALLEL_CONNECTS: usize = 16;

/// Where a tracked command leaves its marker on the host it runs on: a file that holds the
/// process group of the command while it runs and is removed when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker(String);

impl Marker {
    /// A new marker for one run of a command for `server`; `rollout` tells rollouts apart.
    pub fn new(rollout: &str, server: &str) -> Marker {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let safe = |text: &str| -> String {
            text.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        Marker(format!(
            "/tmp/haproxy-rollout.{}.{}.{nanos}",
            safe(rollout),
            safe(server)
        ))
    }

    /// A marker the journal recorded.
    pub fn recorded(path: &str) -> Option<Marker> {
        let plain = path.starts_with("/tmp/haproxy-rollout.")
            && path
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"/_.-".contains(&byte));
        plain.then(|| Marker(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `line` (as built by `remote_command`) wrapped so that whether it still runs can be
/// proven later over another connection: the marker holds the process group of `timeout`
/// (which leads its own group) while the command runs, and is removed when it ends. Its
/// output goes to files beside the marker and is printed at the end, so a lost connection
/// (a closed pipe) cannot kill the command half-way.
pub fn tracked_command(line: &str, marker: &Marker) -> String {
    let script = format!(
        "m={m}; : > \"$m\" || {{ echo \"cannot write $m\" >&2; exit 125; }}; \
         {line} </dev/null >\"$m.out\" 2>\"$m.err\" & p=$!; echo \"$p\" > \"$m\"; \
         wait \"$p\"; s=$?; cat \"$m.out\"; cat \"$m.err\" >&2; rm -f \"$m\" \"$m.out\" \"$m.err\"; exit \"$s\"",
        m = marker.as_str()
    );
    format!("sh -c {}", shell_quote(&script))
}

/// The command line that tells whether the command behind `marker` still runs: it prints
/// `running` or `ended` (and then removes what the command left behind).
pub fn check_command(marker: &Marker) -> String {
    let script = format!(
        "m={m}; if [ ! -e \"$m\" ]; then echo ended; exit 0; fi; p=$(cat \"$m\"); \
         if [ -z \"$p\" ] || kill -0 -\"$p\" 2>/dev/null; then echo running; \
         else rm -f \"$m\" \"$m.out\" \"$m.err\"; echo ended; fi",
        m = marker.as_str()
    );
    format!("sh -c {}", shell_quote(&script))
}

/// Whether a tracked command still runs, as its host shows it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    Running,
    Ended,
}

pub(crate) fn tracked_state(output: &str) -> Result<Tracked, String> {
    match output.trim() {
        "running" => Ok(Tracked::Running),
        "ended" => Ok(Tracked::Ended),
        other => Err(format!("unexpected answer to the check: {other:?}")),
    }
}

/// What went wrong with a command on a host (over SSH), or on this machine (a local hook,
/// whose host reads "this machine"); each variant carries what an operator needs.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// SSH only: the host could not be reached.
    #[error("cannot open an SSH connection to {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("`{command}` on {host} exited with status {status}{}", output_tail(.stderr, .stdout))]
    Exit {
        host: String,
        command: String,
        status: i32,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` on {host} did not finish within {}s (the remote `timeout` stops it)", .timeout.as_secs())]
    Timeout {
        host: String,
        command: String,
        timeout: Duration,
    },
    #[error("running `{command}` on {host} failed: {detail}; its outcome is unknown")]
    Lost {
        host: String,
        command: String,
        detail: String,
    },
}

impl CommandError {
    /// The same error, naming the command as the plan wrote it (rendered) rather than the
    /// line sent, with its `timeout` and tracking wrappers.
    pub fn shown_as(self, shown: &str) -> Self {
        match self {
            CommandError::Exit {
                host,
                status,
                stdout,
                stderr,
                ..
            } => CommandError::Exit {
                host,
                command: shown.to_owned(),
                status,
                stdout,
                stderr,
            },
            CommandError::Timeout { host, timeout, .. } => CommandError::Timeout {
                host,
                command: shown.to_owned(),
                timeout,
            },
            CommandError::Lost { host, detail, .. } => CommandError::Lost {
                host,
                command: shown.to_owned(),
                detail,
            },
            connect @ CommandError::Connect { .. } => connect,
        }
    }
}

/// What the remote shell prints last on stderr, and exits 1 with, when the command exited
/// 127 (not found): ssh's status 127 reaches the openssh crate as an error without the
/// command's output, so `run` sends every command through `keeping_127` and turns this back.
const EXIT_127: &str = "haproxy-rollout: exit status 127";

fn keeping_127(command: &str) -> String {
    let script = format!(
        "{command}\ns=$?; if [ \"$s\" -eq 127 ]; then echo '{EXIT_127}' >&2; exit 1; fi; exit \"$s\""
    );
    format!("sh -c {}", shell_quote(&script))
}

/// The last lines of what a failed command printed, for the report.
fn output_tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(5)..];
    format!("; it printed:\n    {}", tail.join("\n    "))
}

/// One multiplexed SSH connection per host, opened up front (pre-flight) and reused for
/// every command. Host keys are checked strictly unless the plan says `accept-new`.
pub struct SshPool {
    sessions: std::collections::HashMap<String, openssh::Session>,
    /// For fresh connections: proving on a host that a command ended.
    builder: openssh::SessionBuilder,
    /// Holds the control sockets; a short path, since unix socket paths are limited.
    _control_directory: tempfile::TempDir,
}

impl SshPool {
    /// Connects to every host; fails on the first host that cannot be reached or whose key
    /// does not verify, naming it.
    pub async fn connect(
        ssh: &crate::plan::Ssh,
        hosts: &[String],
    ) -> Result<SshPool, CommandError> {
        let control_directory = control_directory().map_err(|error| CommandError::Connect {
            host: hosts.first().cloned().unwrap_or_default(),
            detail: format!("cannot create a control directory: {error}"),
        })?;
        let builder = session_builder(ssh, control_directory.path());
        // Every distinct host at once: with hundreds of hosts, one after the other is slow.
        let mut distinct: Vec<&String> = hosts.iter().collect();
        distinct.sort();
        distinct.dedup();
        let connections = distinct.into_iter().map(|host| {
            let builder = &builder;
            async move {
                connect(builder, host)
                    .await
                    .map(|session| (host.clone(), session))
            }
        });
        use futures::StreamExt;
        let sessions = futures::stream::iter(connections)
            .buffer_unordered(PARALLEL_CONNECTS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<std::collections::HashMap<_, _>, _>>()?;
        Ok(SshPool {
            sessions,
            builder,
            _control_directory: control_directory,
        })
    }

    /// Whether the command behind `marker` still runs on `host`, asked over a fresh
    /// connection (the one it was started on may be the one that was lost).
    pub async fn check(&self, host: &str, marker: &Marker) -> Result<Tracked, String> {
        let session = connect(&self.builder, host)
            .await
            .map_err(|error| error.to_string())?;
        let line = check_command(marker);
        let output =
            tokio::time::timeout(Duration::from_secs(10), session.raw_command(&line).output())
                .await;
        let _ = session.close().await;
        let output = output
            .map_err(|_| format!("checking {host} took more than 10s"))?
            .map_err(|error| crate::error::error_chain(&error))?;
        tracked_state(&String::from_utf8_lossy(&output.stdout))
    }

    /// Runs `command` (already quoted and wrapped in the remote `timeout`) on `host`, with
    /// output captured, within `deadline` locally.
    pub async fn run(
        &self,
        host: &str,
        command: &str,
        deadline: Duration,
    ) -> Result<String, CommandError> {
        let lost = |detail: String| CommandError::Lost {
            host: host.to_owned(),
            command: command.to_owned(),
            detail,
        };
        let session = self
            .sessions
            .get(host)
            .ok_or_else(|| lost("no connection was opened to this host".to_owned()))?;
        let output =
            tokio::time::timeout(deadline, session.raw_command(keeping_127(command)).output())
                .await
                .map_err(|_| CommandError::Timeout {
                    host: host.to_owned(),
                    command: command.to_owned(),
                    timeout: deadline,
                })?
                .map_err(|error| lost(crate::error::error_chain(&error)))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let mut status = output.status.code();
        if status == Some(1)
            && let Some(before) = stderr.trim_end().strip_suffix(EXIT_127)
        {
            stderr = before.to_owned();
            status = Some(127);
        }
        match status {
            Some(0) => Ok(stdout),
            // coreutils `timeout` exits 124 when it had to stop the command.
            Some(124) => Err(CommandError::Timeout {
                host: host.to_owned(),
                command: command.to_owned(),
                timeout: deadline.saturating_sub(REMOTE_KILL_AFTER),
            }),
            Some(status) => Err(CommandError::Exit {
                host: host.to_owned(),
                command: command.to_owned(),
                status,
                stdout,
                stderr,
            }),
            None => Err(lost("the remote command was killed by a signal".to_owned())),
        }
    }

    pub async fn close(self) {
        for (_, session) in self.sessions {
            let _ = session.close().await;
        }
    }
}

/// The plan's SSH settings as an openssh session builder: strict host keys unless the plan
/// says `accept-new`, a short control directory, and an idle limit on the master so that a
/// crash leaves none behind.
pub fn session_builder(
    ssh: &crate::plan::Ssh,
    control_directory: &std::path::Path,
) -> openssh::SessionBuilder {
    let mut builder = openssh::SessionBuilder::default();
    builder
        .known_hosts_check(match ssh.known_hosts {
            crate::plan::KnownHosts::Strict => openssh::KnownHosts::Strict,
            crate::plan::KnownHosts::AcceptNew => openssh::KnownHosts::Add,
        })
        .control_directory(control_directory)
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).expect("60 is not zero"),
        ))
        .connect_timeout(ssh.connect_timeout)
        .server_alive_interval(Duration::from_secs(15));
    if let Some(user) = &ssh.user {
        builder.user(user.clone());
    }
    if let Some(port) = ssh.port {
        builder.port(port);
    }
    if let Some(file) = &ssh.identity_file {
        builder.keyfile(expand_home(file));
    }
    if let Some(file) = &ssh.known_hosts_file {
        builder.user_known_hosts_file(expand_home(file));
    }
    if let Some(file) = &ssh.config_file {
        builder.config_file(expand_home(file));
    }
    builder
}

/// A short-lived control directory under /tmp (unix socket paths are limited to ~108 bytes),
/// named after this process. Those that killed runs left behind are removed first.
pub fn control_directory() -> std::io::Result<tempfile::TempDir> {
    sweep_control_directories(std::path::Path::new("/tmp"));
    tempfile::Builder::new()
        .prefix(&format!("hr-ssh-{}-", std::process::id()))
        .tempdir_in("/tmp")
}

/// Removes the control directories of processes that are gone (a run killed with SIGKILL
/// cannot remove its own), first ending the SSH masters still listening in them (they
/// would linger until their idle limit).
fn sweep_control_directories(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("hr-ssh-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            end_masters(&entry.path(), 2);
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Asks every SSH master whose control socket is in `dir` (or `depth` folders below) to
/// exit: `ssh -O exit` needs only the socket.
fn end_masters(dir: &std::path::Path, depth: u32) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_socket() {
            let _ = std::process::Command::new("ssh")
                .arg("-O")
                .arg("exit")
                .arg("-S")
                .arg(entry.path())
                .arg("control-master")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        } else if kind.is_dir() && depth > 0 {
            end_masters(&entry.path(), depth - 1);
        }
    }
}

/// Connects, with ssh's own reasons on one line when it fails.
pub async fn connect(
    builder: &openssh::SessionBuilder,
    host: &str,
) -> Result<openssh::Session, CommandError> {
    builder
        .connect_mux(host)
        .await
        .map_err(|error| CommandError::Connect {
            host: host.to_owned(),
            // ssh's own words span lines and end in periods; keep them on one line.
            detail: crate::error::error_chain(&error)
                .lines()
                .map(|line| line.trim().trim_end_matches('.'))
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })
}

/// `~/x` → `$HOME/x`; ssh expands `~` itself only in some places.
pub fn expand_home(path: &std::path::Path) -> std::path::PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => std::path::PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::template::parse_template;
    use crate::plan::template::{PlaceholderValues, remote_command};

    fn values(host: &str) -> PlaceholderValues {
        PlaceholderValues::fixture(host)
    }

    /// Real markers live in /tmp; the time in their name keeps parallel runs apart.
    fn marker() -> Marker {
        Marker::new("unit-test", &std::process::id().to_string())
    }

    fn sh(line: &str) -> std::process::Command {
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(line);
        command
    }

    #[test]
    fn a_tracked_command_keeps_its_output_and_exit_status_and_leaves_nothing_behind() {
        let marker = marker();
        let command = parse_template("echo out; echo err >&2; exit 3").unwrap();
        let line = remote_command(&command, &values("h"), Duration::from_secs(5));
        let output = sh(&tracked_command(&line, &marker)).output().unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
        assert!(!std::path::Path::new(marker.as_str()).exists());
        let check = sh(&check_command(&marker)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ended");
    }

    #[test]
    fn a_command_whose_wrapper_died_is_seen_running_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let marker = marker();
        let done = dir.path().join("done");
        let command = parse_template(&format!("sleep 1; touch {}", done.display())).unwrap();
        let line = remote_command(&command, &values("h"), Duration::from_secs(5));
        let mut wrapper = sh(&tracked_command(&line, &marker))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while std::fs::read_to_string(marker.as_str()).map_or(true, |pid| pid.trim().is_empty()) {
            assert!(start.elapsed() < Duration::from_secs(5), "no marker");
            std::thread::sleep(Duration::from_millis(10));
        }
        // As when the connection is lost and its session killed: the wrapper dies, the
        // command goes on.
        wrapper.kill().unwrap();
        wrapper.wait().unwrap();
        let check = sh(&check_command(&marker)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "running");
        while !done.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the command was cut"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let check = sh(&check_command(&marker)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ended");
        assert!(!std::path::Path::new(marker.as_str()).exists());
    }

    #[test]
    fn only_markers_of_this_tool_are_taken_from_a_journal() {
        assert!(Marker::recorded("/tmp/haproxy-rollout.abc.app1.123").is_some());
        assert!(Marker::recorded("/tmp/haproxy-rollout.x; rm -rf /").is_none());
        assert!(Marker::recorded("/etc/passwd").is_none());
    }

    #[test]
    fn exit_127_comes_back_as_1_with_a_last_line_and_other_statuses_unchanged() {
        let run = |line: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(keeping_127(line))
                .output()
                .unwrap()
        };
        let missing = run("/no/such/command --flag");
        assert_eq!(missing.status.code(), Some(1));
        let stderr = String::from_utf8(missing.stderr).unwrap();
        assert!(stderr.trim_end().ends_with(EXIT_127), "{stderr}");
        assert!(stderr.contains("/no/such/command"), "{stderr}");
        for status in [0, 1, 3, 124, 126] {
            assert_eq!(run(&format!("exit {status}")).status.code(), Some(status));
        }
        let quoted = run("printf '%s' \"it's\"");
        assert_eq!(String::from_utf8(quoted.stdout).unwrap(), "it's");
    }
}
