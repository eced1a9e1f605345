//! Commands and URLs with placeholders: how the plan writes them (`Template`), the values a
//! server gives them (`PlaceholderValues`), and how they are rendered: shell-quoted for the
//! remote shell, bracketed for a URL. The plan's own `vars` are bound when the plan is
//! loaded, so a template holds their values. Pure code, so the engine and the preview render
//! exactly what the I/O side sends.

use std::collections::BTreeMap;
use std::time::Duration;

/// Extra time after TERM before the remote `timeout` sends KILL to a command it stops.
pub const REMOTE_KILL_AFTER: Duration = Duration::from_secs(10);

/// A value a command or URL template may refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{server}`: the server's name.
    Server,
    /// `{host}`: the SSH target.
    Host,
    /// `{addr}`: the server's address as HAProxy has it.
    Addr,
    /// `{port}`: the server's port as HAProxy has it.
    Port,
    /// `{previous}`: what `verify` read on the server before this rollout touched it
    /// (`rollback.command` only).
    Previous,
}

impl Placeholder {
    pub const ALL: [Placeholder; 5] = [
        Placeholder::Server,
        Placeholder::Host,
        Placeholder::Addr,
        Placeholder::Port,
        Placeholder::Previous,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Server => "server",
            Placeholder::Host => "host",
            Placeholder::Addr => "addr",
            Placeholder::Port => "port",
            Placeholder::Previous => "previous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Placeholder(Placeholder),
    /// One of the plan's `vars`, with the value it was given.
    Var {
        name: String,
        value: String,
    },
}

/// What a template may name besides `{server}`, `{host}`, `{addr}` and `{port}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The plan's vars: each with its value, `None` while it has none (which the plan
    /// reports where the var is declared).
    pub vars: Option<&'a BTreeMap<String, Option<String>>>,
    /// `{previous}` is known here.
    pub previous: bool,
}

impl Scope<'_> {
    /// Every placeholder this scope knows, as written: `{server}, {host}, ...`.
    pub fn names(&self) -> String {
        let builtins = Placeholder::ALL
            .into_iter()
            .filter(|placeholder| *placeholder != Placeholder::Previous || self.previous)
            .map(|placeholder| format!("{{{}}}", placeholder.name()));
        let vars = self
            .vars
            .into_iter()
            .flat_map(|vars| vars.keys().map(|name| format!("{{{name}}}")));
        builtins.chain(vars).collect::<Vec<_>>().join(", ")
    }
}

/// A command or URL with `{server}`, `{host}`, `{addr}`, `{port}` placeholders, and the
/// plan's vars. `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    /// The text as written in the plan.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.segments.contains(&Segment::Placeholder(placeholder))
    }

    /// Fills in the placeholders; `escape` turns each value into what may stand in the
    /// output (shell quoting for commands, nothing for URLs).
    pub fn render(
        &self,
        value_of: impl Fn(Placeholder) -> String,
        escape: impl Fn(&str) -> String,
    ) -> String {
        let mut out = String::with_capacity(self.text.len());
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder(placeholder) => out.push_str(&escape(&value_of(*placeholder))),
                Segment::Var { value, .. } => out.push_str(&escape(value)),
            }
        }
        out
    }
}

/// Parses a template that names only the built-in placeholders (no vars, no `{previous}`).
pub fn parse_template(text: &str) -> Result<Template, String> {
    parse_template_in(text, Scope::default())
}

/// Parses `{placeholder}` templates; `{{` and `}}` are literal braces.
pub fn parse_template_in(text: &str, scope: Scope) -> Result<Template, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let rest = &text[index + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!("unclosed `{{` at character {}", index + 1));
                };
                let name = &rest[..end];
                let builtin = Placeholder::ALL
                    .into_iter()
                    .filter(|placeholder| *placeholder != Placeholder::Previous || scope.previous)
                    .find(|placeholder| placeholder.name() == name);
                let segment = match (builtin, scope.vars.and_then(|vars| vars.get(name))) {
                    (Some(placeholder), _) => Segment::Placeholder(placeholder),
                    (None, Some(value)) => Segment::Var {
                        name: name.to_owned(),
                        value: value.clone().unwrap_or_default(),
                    },
                    (None, None) if name == Placeholder::Previous.name() => {
                        return Err("`{previous}` is known only in rollback.command".to_owned());
                    }
                    (None, None) => return Err(format!("unknown placeholder `{{{name}}}`")),
                };
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(segment);
                for _ in 0..=end {
                    chars.next();
                }
            }
            '}' => return Err(format!("unmatched `}}` at character {}", index + 1)),
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(Template {
        text: text.to_owned(),
        segments,
    })
}

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
    /// What `verify` read on the server before this rollout touched it, where known.
    pub previous: Option<String>,
}

impl PlaceholderValues {
    pub fn get(&self, placeholder: Placeholder) -> String {
        match placeholder {
            Placeholder::Server => self.server.clone(),
            Placeholder::Host => self.host.clone(),
            Placeholder::Addr => self.addr.clone(),
            Placeholder::Port => self.port.map(|port| port.to_string()).unwrap_or_default(),
            Placeholder::Previous => self.previous.clone().unwrap_or_default(),
        }
    }
}

/// The command as the plan wrote it, filled in for one server (values shell-quoted): what
/// reports name.
pub fn command_line(command: &Template, values: &PlaceholderValues) -> String {
    command.render(|placeholder| values.get(placeholder), shell_quote)
}

/// The command as the remote shell receives it: `timeout -k 10s 120s sh -c '...'`.
pub fn remote_command(command: &Template, values: &PlaceholderValues, timeout: Duration) -> String {
    let script = command_line(command, values);
    format!(
        "timeout -k {}s {}s sh -c {}",
        REMOTE_KILL_AFTER.as_secs(),
        timeout.as_secs().max(1),
        shell_quote(&script)
    )
}

/// The health URL for one server. `{addr}` is bracketed when it is an IPv6 address, so
/// `http://{addr}:{port}/` stays a valid URL.
pub fn health_url(template: &Template, values: &PlaceholderValues) -> String {
    template.render(
        |placeholder| {
            let value = values.get(placeholder);
            if placeholder == Placeholder::Addr && value.contains(':') {
                format!("[{value}]")
            } else {
                value
            }
        },
        str::to_owned,
    )
}

/// A server's values as the unit tests use them: app1 at 10.0.0.1:8080, reached at `host`.
#[cfg(test)]
impl PlaceholderValues {
    pub(crate) fn fixture(host: &str) -> PlaceholderValues {
        PlaceholderValues {
            server: "app1".into(),
            host: host.into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
            previous: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(host: &str) -> PlaceholderValues {
        PlaceholderValues::fixture(host)
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

    #[test]
    fn fills_in_address_and_port_as_haproxy_has_them() {
        let template = parse_template("http://{addr}:{port}/health?server={server}").unwrap();
        let mut values = PlaceholderValues {
            server: "app1".into(),
            host: "app1.internal".into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
            previous: None,
        };
        assert_eq!(
            health_url(&template, &values),
            "http://10.0.0.1:8080/health?server=app1"
        );
        values.addr = "fd00::1".into();
        assert_eq!(
            health_url(&template, &values),
            "http://[fd00::1]:8080/health?server=app1"
        );
    }
}
