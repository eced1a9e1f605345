//! SSH side of a restart: the exact remote command line, with every placeholder value
//! shell-quoted and the plan's timeout enforced on the remote host as well.
//!
//! Dropping a command's future does not stop the remote process, so the remote side wraps
//! the command in coreutils `timeout`, which sends TERM at the deadline and KILL shortly after.

use std::time::Duration;

use crate::plan::{Placeholder, Template};

/// How many SSH connections are opened at once during pre-flight.
const PARALLEL_CONNECTS: usize = 16;

/// Extra time after TERM before the remote `timeout` sends KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

/// Quotes `value` for a POSIX shell. Plain words stay as they are for readability.
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&byte))
        && !value.starts_with('-');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The values placeholders stand for, for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderValues {
    pub server: String,
    pub host: String,
    pub addr: String,
    pub port: Option<u16>,
}

impl PlaceholderValues {
    pub fn get(&self, placeholder: Placeholder) -> String {
        match placeholder {
            Placeholder::Server => self.server.clone(),
            Placeholder::Host => self.host.clone(),
            Placeholder::Addr => self.addr.clone(),
            Placeholder::Port => self.port.map(|port| port.to_string()).unwrap_or_default(),
        }
    }
}

/// The command as the remote shell receives it: `timeout -k 10s 120s sh -c '...'`.
pub fn remote_command(command: &Template, values: &PlaceholderValues, timeout: Duration) -> String {
    let script = command.render(|placeholder| values.get(placeholder), shell_quote);
    format!(
        "timeout -k {}s {}s sh -c {}",
        KILL_AFTER.as_secs(),
        timeout.as_secs().max(1),
        shell_quote(&script)
    )
}

/// What went wrong on the SSH side; each variant carries what an operator needs.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
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
    /// Holds the control sockets; a short path, since unix socket paths are limited.
    _control_directory: tempfile::TempDir,
}

impl SshPool {
    /// Connects to every host; fails on the first host that cannot be reached or whose key
    /// does not verify, naming it.
    pub async fn connect(ssh: &crate::plan::Ssh, hosts: &[String]) -> Result<SshPool, SshError> {
        let control_directory = control_directory().map_err(|error| SshError::Connect {
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
            _control_directory: control_directory,
        })
    }

    /// Runs `command` (already quoted and wrapped in the remote `timeout`) on `host`, with
    /// output captured, within `deadline` locally.
    pub async fn run(
        &self,
        host: &str,
        command: &str,
        deadline: Duration,
    ) -> Result<String, SshError> {
        let lost = |detail: String| SshError::Lost {
            host: host.to_owned(),
            command: command.to_owned(),
            detail,
        };
        let session = self
            .sessions
            .get(host)
            .ok_or_else(|| lost("no connection was opened to this host".to_owned()))?;
        let output = tokio::time::timeout(deadline, session.raw_command(command).output())
            .await
            .map_err(|_| SshError::Timeout {
                host: host.to_owned(),
                command: command.to_owned(),
                timeout: deadline,
            })?
            .map_err(|error| lost(crate::commands::error_chain(&error)))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        match output.status.code() {
            Some(0) => Ok(stdout),
            // coreutils `timeout` exits 124 when it had to stop the command.
            Some(124) => Err(SshError::Timeout {
                host: host.to_owned(),
                command: command.to_owned(),
                timeout: deadline.saturating_sub(KILL_AFTER),
            }),
            Some(status) => Err(SshError::Exit {
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

/// A short-lived control directory under /tmp (unix socket paths are limited to ~108 bytes).
pub fn control_directory() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("hr-ssh").tempdir_in("/tmp")
}

/// Connects, with ssh's own reasons on one line when it fails.
pub async fn connect(
    builder: &openssh::SessionBuilder,
    host: &str,
) -> Result<openssh::Session, SshError> {
    builder
        .connect_mux(host)
        .await
        .map_err(|error| SshError::Connect {
            host: host.to_owned(),
            // ssh's own words span lines and end in periods; keep them on one line.
            detail: crate::commands::error_chain(&error)
                .lines()
                .map(|line| line.trim().trim_end_matches('.'))
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })
}

/// Runs a command line (as built by `remote_command`) on this machine, with output captured
/// and the same deadline rules as a remote one.
pub async fn run_local(command: &str, deadline: Duration) -> Result<String, SshError> {
    let host = "this machine".to_owned();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| SshError::Lost {
            host: host.clone(),
            command: command.to_owned(),
            detail: format!("cannot start sh: {error}"),
        })?;
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .map_err(|_| SshError::Timeout {
            host: host.clone(),
            command: command.to_owned(),
            timeout: deadline,
        })?
        .map_err(|error| SshError::Lost {
            host: host.clone(),
            command: command.to_owned(),
            detail: error.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(stdout),
        Some(124) => Err(SshError::Timeout {
            host,
            command: command.to_owned(),
            timeout: deadline.saturating_sub(KILL_AFTER),
        }),
        Some(status) => Err(SshError::Exit {
            host,
            command: command.to_owned(),
            status,
            stdout,
            stderr,
        }),
        None => Err(SshError::Lost {
            host,
            command: command.to_owned(),
            detail: "it was killed by a signal".to_owned(),
        }),
    }
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
    use crate::plan::validate::parse_template;

    fn values(host: &str) -> PlaceholderValues {
        PlaceholderValues {
            server: "app1".into(),
            host: host.into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
        }
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("app1"), "app1");
        assert_eq!(shell_quote("10.0.0.1:8080"), "10.0.0.1:8080");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("-rf"), "'-rf'");
    }

    #[test]
    fn the_remote_command_enforces_the_timeout_and_quotes_values() {
        let command = parse_template("sudo systemctl restart app@{server} && echo {host}").unwrap();
        let line = remote_command(
            &command,
            &values("$(touch /tmp/pwned)"),
            Duration::from_secs(120),
        );
        assert_eq!(
            line,
            r#"timeout -k 10s 120s sh -c 'sudo systemctl restart app@app1 && echo '\''$(touch /tmp/pwned)'\'''"#
        );
    }

    #[test]
    fn hostile_values_reach_the_inner_shell_as_one_word() {
        // Run the command line through a real shell: the value must come out unchanged and
        // nothing it names may run.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let hostile = format!(
            "$(touch {m}); touch {m}; `touch {m}` '\"",
            m = marker.display()
        );
        let command = parse_template("printf %s {host}").unwrap();
        let line = remote_command(&command, &values(&hostile), Duration::from_secs(5));
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8(output.stdout).unwrap(), hostile);
        assert!(!marker.exists(), "a placeholder value ran as a command");
    }
}
