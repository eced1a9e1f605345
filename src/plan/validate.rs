//! Checks every value of a decoded plan and builds the model, collecting every error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::error::PlanError;
use super::model::{
    BackendName, Backends, Canary, CanaryPause, Capacity, Drain, Haproxy, Health, Hook, Hooks,
    InstanceName, InvalidName, KnownHosts, MaxUnavailable, NAME_CHARSET, OnDrainTimeout, OnFailure,
    Plan, Ready, Restart, Rollback, Server, ServerName, SocketAddress, Ssh, SshTarget, Verify,
    VerifyRead,
};
use super::node::Location;
use super::raw::{
    Located, PlanDuration, RawBackends, RawCanary, RawCapacity, RawDrain, RawHaproxy, RawHealth,
    RawHook, RawHooks, RawMaxUnavailable, RawPlan, RawReady, RawRestart, RawRollback, RawServer,
    RawSsh, RawVars, RawVerify,
};
use super::syntax::{MAX_UNIX_SOCKET_PATH, parse_host_port, parse_ssh_socket};
use super::template::{Placeholder, Scope, Template, parse_template, parse_template_in};

/// Values for the plan's vars from outside the file (`--var NAME=VALUE`, a journal).
#[derive(Debug, Clone, Copy, Default)]
pub struct Given<'a> {
    /// The last value of a name wins.
    pub values: &'a [(String, String)],
    /// A var without a value is left as `{name}` instead of being an error: for commands
    /// that only read live state and run nothing (`status`).
    pub partial: bool,
}

impl<'a> Given<'a> {
    pub fn values(values: &'a [(String, String)]) -> Self {
        Given {
            values,
            partial: false,
        }
    }
}

pub const DEFAULT_HEALTH_URL: &str = "http://{addr}:{port}/health";
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Polling faster than this only loads the HAProxy socket.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Builds the model from a decoded plan, or returns every problem found.
pub fn validate(
    raw: RawPlan,
    mut errors: Vec<PlanError>,
    given: &Given,
) -> Result<Plan, Vec<PlanError>> {
    let document = Location { line: 1, column: 1 };
    let mut check = Checker {
        errors: &mut errors,
        vars: BTreeMap::new(),
    };
    check.vars = check.vars(raw.vars, given, document);

    if let Some(version) = &raw.version
        && version.value != 1
    {
        check.fail(
            version,
            format!("unsupported plan format version {}", version.value),
            "this haproxy-rollout reads `version: 1`",
        );
    }
    let instance_names = raw.haproxy.iter().flat_map(|list| &list.value);
    check.unique(
        instance_names.filter_map(|item| item.value.name.as_ref()),
        "HAProxy instance",
    );
    let haproxy = check.list(raw.haproxy, "haproxy", |check, item| check.haproxy(item));
    let backends = match raw.backends {
        None => None,
        Some(Located {
            value: RawBackends::Auto,
            ..
        }) => Some(Backends::Auto),
        Some(Located {
            value: RawBackends::List(names),
            at,
            path,
        }) => {
            check.unique(names.iter(), "backend");
            let list = Located {
                value: names,
                at,
                path,
            };
            check
                .list(Some(list), "backends", |check, name| {
                    check.name(&name, BackendName::new)
                })
                .into_values()
                .map(Backends::Listed)
        }
    };
    let server_names = raw.servers.iter().flat_map(|list| &list.value);
    check.unique(
        server_names.filter_map(|item| item.value.name.as_ref()),
        "server",
    );
    let server_count = raw.servers.as_ref().map(|servers| servers.value.len());
    let servers = check.list(raw.servers, "servers", |check, item| check.server(item));
    let ssh = check.ssh(raw.ssh.unwrap_or_default());
    let restart = raw.restart.map(|restart| check.restart(restart));
    let health = check.health(raw.health.unwrap_or_default());
    let drain = check.drain(raw.drain.unwrap_or_default());
    let ready = check.ready(raw.ready.unwrap_or_default());
    let capacity = check.capacity(raw.capacity.unwrap_or_default());
    let hooks = check.hooks(raw.hooks.unwrap_or_default());
    let restart_timeout = restart
        .as_ref()
        .and_then(|restart| restart.as_ref().map(|restart| restart.timeout))
        .unwrap_or(Duration::from_secs(120));
    let verify_present = raw.verify.is_some();
    let canary = match raw.canary {
        None => Some(None),
        Some(canary) => check.canary(canary, server_count).map(Some),
    };
    let verify = match raw.verify {
        None => Some(None),
        Some(verify) => check.verify(verify).map(Some),
    };
    let skip_current = match (raw.skip_current, verify_present) {
        (Some(skip), false) if skip.value => {
            check.fail(
                &skip,
                "skip_current needs `verify`",
                "add `verify:` (url or command, and expect) to read what each server runs",
            );
            None
        }
        (Some(skip), _) => Some(skip.value),
        (None, present) => Some(present),
    };
    let rollback = match raw.rollback {
        None => Some(None),
        Some(rollback) => check
            .rollback(rollback, restart_timeout, verify_present)
            .map(Some),
    };
    let shared_state = match raw.state.and_then(|state| state.etcd) {
        None => Some(None),
        Some(etcd) => check.etcd(etcd).map(Some),
    };
    let poll_interval = match raw.poll_interval {
        Some(interval) if interval.value.0 < MIN_POLL_INTERVAL => {
            check.fail(
                &interval,
                "poll_interval is too short",
                "use 10ms or more; 200ms is the default",
            );
            None
        }
        Some(interval) => Some(interval.value.0),
        None => Some(DEFAULT_POLL_INTERVAL),
    };

    // A missing required key was reported while decoding; here it only stops the build.
    let built = (|| {
        raw.version?;
        Some(Plan {
            vars: check
                .vars
                .iter()
                .map(|(name, value)| Some((name.clone(), value.clone()?)))
                .collect::<Option<_>>()?,
            haproxy: haproxy.into_values()?,
            backends: backends?,
            servers: servers.into_values()?,
            ssh: ssh?,
            restart: restart??,
            health: health?,
            drain: drain?,
            ready: ready?,
            capacity: capacity?,
            poll_interval: poll_interval?,
            hooks: hooks?,
            canary: canary?,
            verify: verify?,
            skip_current: skip_current?,
            rollback: rollback?,
            shared_state: shared_state?,
        })
    })();
    match built {
        Some(plan) if errors.is_empty() => Ok(plan),
        _ => {
            if errors.is_empty() {
                // Unreachable by construction; never let an incomplete plan through silently.
                errors.push(PlanError::new(document, "", "the plan is incomplete"));
            }
            Err(errors)
        }
    }
}

struct Checker<'e> {
    errors: &'e mut Vec<PlanError>,
    /// The plan's vars and their values (`None`: no value, reported where declared).
    vars: BTreeMap<String, Option<String>>,
}

/// The items of a list that passed their checks, and whether all did.
struct Items<T> {
    good: Vec<T>,
    complete: bool,
}

impl<T> Items<T> {
    fn into_values(self) -> Option<Vec<T>> {
        self.complete.then_some(self.good)
    }
}

impl Checker<'_> {
    fn fail<T>(&mut self, value: &Located<T>, message: impl Into<String>, help: impl Into<String>) {
        self.errors
            .push(PlanError::new(value.at, &value.path, message).with_help(help));
    }

    /// A required, non-empty list whose items are each checked.
    fn list<R, T>(
        &mut self,
        list: Option<Located<Vec<Located<R>>>>,
        key: &str,
        mut check_item: impl FnMut(&mut Self, Located<R>) -> Option<T>,
    ) -> Items<T> {
        let Some(list) = list else {
            return Items {
                good: Vec::new(),
                complete: false,
            };
        };
        if list.value.is_empty() {
            self.errors.push(
                PlanError::new(list.at, &list.path, format!("`{key}` is empty"))
                    .with_help(format!("list at least one entry under `{key}`")),
            );
        }
        let mut complete = !list.value.is_empty();
        let mut good = Vec::with_capacity(list.value.len());
        for item in list.value {
            match check_item(self, item) {
                Some(value) => good.push(value),
                None => complete = false,
            }
        }
        Items { good, complete }
    }

    /// Reports every name that an earlier item already has.
    fn unique<'a>(&mut self, names: impl Iterator<Item = &'a Located<String>>, what: &str) {
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for name in names {
            if let Some(first) = seen.get(name.value.as_str()) {
                self.fail(
                    name,
                    format!("duplicate {what} `{}`", name.value),
                    format!(
                        "it is already listed at line {}; list each {what} once",
                        first.line
                    ),
                );
            } else {
                seen.insert(&name.value, name.at);
            }
        }
    }

    fn name<T>(
        &mut self,
        name: &Located<String>,
        make: impl Fn(&str) -> Result<T, InvalidName>,
    ) -> Option<T> {
        match make(&name.value) {
            Ok(name) => Some(name),
            Err(invalid) => {
                self.fail(
                    name,
                    invalid.to_string(),
                    format!(
                        "HAProxy names use only {NAME_CHARSET}; anything else could inject a runtime-API command"
                    ),
                );
                None
            }
        }
    }

    fn haproxy(&mut self, item: Located<RawHaproxy>) -> Option<Haproxy> {
        let RawHaproxy {
            name,
            socket,
            timeout,
            unreachable_timeout,
        } = item.value;
        let name = name.and_then(|name| self.name(&name, InstanceName::new));
        let socket = socket.and_then(|socket| self.socket(&socket));
        let timeout = self.positive(timeout, DEFAULT_SOCKET_TIMEOUT);
        let unreachable_timeout = self.positive(unreachable_timeout, DEFAULT_UNREACHABLE_TIMEOUT);
        Some(Haproxy {
            name: name?,
            socket: socket?,
            timeout: timeout?,
            unreachable_timeout: unreachable_timeout?,
        })
    }

    fn socket(&mut self, socket: &Located<String>) -> Option<SocketAddress> {
        const FORMS: &str = "an absolute unix socket path (/run/haproxy/admin.sock), tcp://HOST:PORT, \
             or ssh://[USER@]HOST[:PORT]/path/to/admin.sock";
        let text = socket.value.as_str();
        if let Some(rest) = text.strip_prefix("ssh://") {
            return match parse_ssh_socket(rest) {
                Ok(address) => Some(address),
                Err(problem) => {
                    self.fail(socket, format!("invalid socket `{text}`: {problem}"), FORMS);
                    None
                }
            };
        }
        if let Some(address) = text.strip_prefix("tcp://") {
            return match parse_host_port(address) {
                Ok((host, port)) => Some(SocketAddress::Tcp { host, port }),
                Err(problem) => {
                    self.fail(socket, format!("invalid socket `{text}`: {problem}"), FORMS);
                    None
                }
            };
        }
        if text.starts_with('/') {
            if text.len() > MAX_UNIX_SOCKET_PATH {
                self.fail(
                    socket,
                    format!("unix socket path is {} bytes long", text.len()),
                    format!("unix socket paths can be at most {MAX_UNIX_SOCKET_PATH} bytes"),
                );
                return None;
            }
            return Some(SocketAddress::Unix(PathBuf::from(text)));
        }
        let help = if text.starts_with("unix://") || text.starts_with("unix@") {
            format!("write the path alone: {FORMS}")
        } else {
            format!("expected {FORMS}")
        };
        self.fail(socket, format!("invalid socket `{text}`"), help);
        None
    }

    fn server(&mut self, item: Located<RawServer>) -> Option<Server> {
        let RawServer {
            name,
            host,
            health_url,
        } = item.value;
        let name = name.and_then(|name| self.name(&name, ServerName::new));
        let host = match host {
            Some(host) => Some(self.ssh_target(&host)?),
            None => None,
        };
        let health_url = match health_url {
            Some(url) => Some(self.url(&url)?),
            None => None,
        };
        Some(Server {
            name: name?,
            host,
            health_url,
        })
    }

    fn ssh_target(&mut self, host: &Located<String>) -> Option<SshTarget> {
        let text = host.value.as_str();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:%[]-".contains(c);
        let problem = if text.is_empty() {
            Some("is empty")
        } else if text.starts_with('-') {
            Some("starts with `-`, which ssh would read as an option")
        } else if text.contains('@') {
            Some("contains `@`; set the user in ssh.user")
        } else if !text.chars().all(allowed) {
            Some("contains characters a host name, address or alias cannot hold")
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.fail(
                    host,
                    format!("invalid host `{}`: {problem}", text.escape_debug()),
                    "a host name, IP address or ssh_config alias: letters, digits and `_ . : % [ ] -`",
                );
                None
            }
            None => Some(SshTarget(text.to_owned())),
        }
    }

    fn template(&mut self, text: &Located<String>) -> Option<Template> {
        self.template_in(text, false)
    }

    /// A template; `previous`: `{previous}` is known in it.
    fn template_in(&mut self, text: &Located<String>, previous: bool) -> Option<Template> {
        let scope = Scope {
            vars: Some(&self.vars),
            previous,
        };
        match parse_template_in(&text.value, scope) {
            Ok(template) => Some(template),
            Err(problem) => {
                let help = format!(
                    "placeholders here are {}; declare others under `vars:`; write {{{{ and }}}} for literal braces",
                    scope.names()
                );
                self.fail(text, problem, help);
                None
            }
        }
    }

    fn url(&mut self, url: &Located<String>) -> Option<Template> {
        let template = self.template(url)?;
        // Placeholders stand for an address and a port; check the URL with sample values.
        let sample = template.render(
            |placeholder| match placeholder {
                Placeholder::Server => "app1".to_owned(),
                Placeholder::Host => "app1.example".to_owned(),
                Placeholder::Addr => "192.0.2.10".to_owned(),
                Placeholder::Port => "8080".to_owned(),
                Placeholder::Previous => "1.0".to_owned(),
            },
            str::to_owned,
        );
        let problem = match url::Url::parse(&sample) {
            Err(error) => Some(format!("invalid URL `{}`: {error}", url.value)),
            Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => Some(format!(
                "invalid URL `{}`: scheme `{}` is not http or https",
                url.value,
                parsed.scheme()
            )),
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                Some(format!("invalid URL `{}`: it has no host", url.value))
            }
            Ok(_) => None,
        };
        match problem {
            Some(problem) => {
                self.fail(
                    url,
                    problem,
                    format!("e.g. {DEFAULT_HEALTH_URL}, with {{server}} {{host}} {{addr}} {{port}} filled in per server"),
                );
                None
            }
            None => Some(template),
        }
    }

    fn positive(
        &mut self,
        duration: Option<Located<PlanDuration>>,
        default: Duration,
    ) -> Option<Duration> {
        match duration {
            None => Some(default),
            Some(duration) if duration.value.0.is_zero() => {
                self.fail(
                    &duration,
                    "a zero duration is not allowed here",
                    "give a duration greater than 0",
                );
                None
            }
            Some(duration) => Some(duration.value.0),
        }
    }

    fn path(&mut self, path: Option<Located<String>>) -> Option<Option<PathBuf>> {
        match path {
            None => Some(None),
            Some(path) if path.value.is_empty() => {
                self.fail(
                    &path,
                    "empty path",
                    "give a file path, or leave the key out",
                );
                None
            }
            Some(path) => Some(Some(PathBuf::from(path.value))),
        }
    }
}

mod sections;
#[cfg(test)]
mod tests;
