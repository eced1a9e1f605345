//! SSH side of a restart: the exact remote command line, with every placeholder value
//! shell-quoted and the plan's timeout enforced on the remote host as well.
//!
//! Dropping a command's future does not stop the remote process, so the remote side wraps
//! the command in coreutils `timeout`, which sends TERM at the deadline and KILL shortly after.

use std::time::Duration;

use crate::plan::{Placeholder, Template};

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
