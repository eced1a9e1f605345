//! The validated plan: types that cannot hold a wrong value, with every default filled in.
//!
//! A `ServerName` can only hold `[A-Za-z0-9_.:-]+`, so code that builds runtime-API commands
//! from it never has to check it again.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;

use super::template::{REMOTE_KILL_AFTER, Template};

/// HAProxy's own rule for proxy and server names.
pub const NAME_CHARSET: &str = "letters, digits and `_ . : -`";
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]+$";

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a valid name: use only {NAME_CHARSET}", .0.escape_debug())]
pub struct InvalidName(pub String);

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: &str) -> Result<Self, InvalidName> {
                if is_name(text) {
                    Ok($name(text.to_owned()))
                } else {
                    Err(InvalidName(text.to_owned()))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A server name as HAProxy knows it in a backend; safe to put in a runtime-API command.
    ServerName
);
name_type!(
    /// A backend (proxy) name; safe to put in a runtime-API command.
    BackendName
);
name_type!(
    /// The plan's own name for one HAProxy instance, used in reports.
    InstanceName
);

/// Where an HAProxy runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    /// A unix socket on another host, reached by running `socat` there over SSH.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: PathBuf,
    },
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Unix(path) => write!(formatter, "{}", path.display()),
            SocketAddress::Tcp { host, port } if host.contains(':') => {
                write!(formatter, "tcp://[{host}]:{port}")
            }
            SocketAddress::Tcp { host, port } => write!(formatter, "tcp://{host}:{port}"),
            SocketAddress::Ssh {
                user,
                host,
                port,
                path,
            } => {
                formatter.write_str("ssh://")?;
                if let Some(user) = user {
                    write!(formatter, "{user}@")?;
                }
                if host.contains(':') {
                    write!(formatter, "[{host}]")?;
                } else {
                    formatter.write_str(host)?;
                }
                if let Some(port) = port {
                    write!(formatter, ":{port}")?;
                }
                write!(formatter, "{}", path.display())
            }
        }
    }
}

/// An SSH target: a host name, an address, or an ssh_config alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget(pub(super) String);

impl SshTarget {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// How SSH treats host keys. There is deliberately no "accept anything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// Only hosts whose key is already in known_hosts.
    #[default]
    Strict,
    /// Record the key of a host never seen before; still refuse a changed key.
    AcceptNew,
}

impl KnownHosts {
    pub const VALUES: &[(&str, KnownHosts)] = &[
        ("strict", KnownHosts::Strict),
        ("accept-new", KnownHosts::AcceptNew),
    ];
}

/// What a failed rollout does with the servers it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Report; `haproxy-rollout rollback PLAN` rolls back.
    #[default]
    Manual,
    /// Roll back every server this rollout changed, at once.
    Auto,
}

impl OnFailure {
    pub const VALUES: &[(&str, OnFailure)] =
        &[("manual", OnFailure::Manual), ("auto", OnFailure::Auto)];
}

/// What to do when sessions remain on a server after `drain.timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnDrainTimeout {
    /// Return the server to traffic unrestarted and stop the rollout.
    #[default]
    Fail,
    /// Put the server in maintenance, shut its sessions down (reported), and go on.
    Force,
}

impl OnDrainTimeout {
    pub const VALUES: &[(&str, OnDrainTimeout)] = &[
        ("fail", OnDrainTimeout::Fail),
        ("force", OnDrainTimeout::Force),
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every var the plan declares, with the value it has in this run (already filled in
    /// wherever a template names it).
    pub vars: std::collections::BTreeMap<String, String>,
    pub haproxy: Vec<Haproxy>,
    pub backends: Backends,
    pub servers: Vec<Server>,
    pub ssh: Ssh,
    pub restart: Restart,
    pub health: Health,
    pub drain: Drain,
    pub ready: Ready,
    pub capacity: Capacity,
    pub poll_interval: Duration,
    pub hooks: Hooks,
    pub canary: Option<Canary>,
    pub verify: Option<Verify>,
    /// A server whose `verify` already answers `expect` is not touched.
    pub skip_current: bool,
    pub rollback: Option<Rollback>,
    /// Where the rollout's state lives when it is shared (`state.etcd`); `None`: a folder
    /// on this machine.
    pub shared_state: Option<SharedState>,
}

/// An etcd cluster holding the rollout's locks, journal and abort requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    /// Client URLs, http:// or https://.
    pub endpoints: Vec<String>,
    /// Key prefix, starting with `/`, without a trailing one.
    pub prefix: String,
    /// The rollout's name under the prefix; `None`: the plan file's name.
    pub name: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and its key.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub lease_ttl: Duration,
}

impl SharedState {
    /// Every default, with no endpoint (`--state-etcd` gives them).
    pub fn defaults() -> SharedState {
        SharedState {
            endpoints: Vec::new(),
            prefix: DEFAULT_ETCD_PREFIX.to_owned(),
            name: None,
            ca_file: None,
            identity: None,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

pub const DEFAULT_ETCD_PREFIX: &str = "/haproxy-rollout";
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How a server this rollout changed is put back.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    /// May use `{previous}`.
    pub command: Template,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// Reading what a server runs, and the answer this rollout must see.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub read: VerifyRead,
    /// Uses only `{server}` and the plan's vars, so it is known before any server is read.
    pub expect: Template,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VerifyRead {
    /// GET, 2xx, the body.
    Url(Template),
    /// Over SSH on the server's host, exit 0, standard output.
    Command(Template),
}

impl Verify {
    /// The answer `server` must give.
    pub fn expected(&self, server: &ServerName) -> String {
        self.expect.render(
            |placeholder| match placeholder {
                super::Placeholder::Server => server.to_string(),
                _ => String::new(),
            },
            str::to_owned,
        )
    }
}

/// The first `servers` of the plan are canaries; the rollout pauses after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub servers: usize,
    pub pause: CanaryPause,
    /// Judged by what HAProxy counted of their answers, before the pause.
    pub analysis: Option<Analysis>,
}

/// The canaries serve traffic for `window`; the share of their requests that failed must
/// stay within `max_error_ratio`, over at least `min_requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analysis {
    pub window: Duration,
    pub max_error_ratio: f64,
    pub min_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryPause {
    /// Stop until `resume` (or a yes on a terminal).
    Manual,
    /// Wait, check the canaries are still UP and healthy, then go on.
    For(Duration),
}

/// Where in a server's rollout a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    BeforeDrain,
    AfterRestart,
    AfterReady,
    OnFailure,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeDrain => "before_drain",
            HookPoint::AfterRestart => "after_restart",
            HookPoint::AfterReady => "after_ready",
            HookPoint::OnFailure => "on_failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hooks {
    pub before_drain: Option<Hook>,
    pub after_restart: Option<Hook>,
    pub after_ready: Option<Hook>,
    pub on_failure: Option<Hook>,
}

impl Hooks {
    pub fn get(&self, point: HookPoint) -> Option<&Hook> {
        match point {
            HookPoint::BeforeDrain => self.before_drain.as_ref(),
            HookPoint::AfterRestart => self.after_restart.as_ref(),
            HookPoint::AfterReady => self.after_ready.as_ref(),
            HookPoint::OnFailure => self.on_failure.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub command: Template,
    pub timeout: Duration,
    /// Run where haproxy-rollout runs, not over SSH.
    pub local: bool,
}

/// Which backends a server is drained in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backends {
    /// These, for every server on every HAProxy.
    Listed(Vec<BackendName>),
    /// Every backend that holds the server's name, found on each HAProxy at pre-flight.
    Auto,
}

impl Backends {
    /// For reports: the names, or `auto`.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Backends::Listed(names) => names.iter().map(BackendName::as_str).collect(),
            Backends::Auto => vec!["auto"],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Haproxy {
    pub name: InstanceName,
    pub socket: SocketAddress,
    /// Deadline for one runtime-API command.
    pub timeout: Duration,
    /// How long it may stay unreachable mid-rollout before the rollout stops safely.
    pub unreachable_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: ServerName,
    /// `None`: SSH to the server's address as HAProxy has it.
    pub host: Option<SshTarget>,
    /// Overrides `health.url` for this server.
    pub health_url: Option<Template>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    /// `None`: what ssh itself would use (ssh_config, else the local user).
    pub user: Option<String>,
    /// `None`: what ssh itself would use (ssh_config, else 22).
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: KnownHosts,
    pub known_hosts_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub command: Template,
    pub timeout: Duration,
}

impl Plan {
    /// The plan a rollback runs: the same servers, HAProxy and limits, with the rollback
    /// command as the restart, no canary, and every server that already answers what it
    /// ran before left as it is. `None` without `rollback`.
    pub fn for_rollback(&self) -> Option<Plan> {
        let rollback = self.rollback.as_ref()?;
        Some(Plan {
            restart: Restart {
                command: rollback.command.clone(),
                timeout: rollback.timeout,
            },
            canary: None,
            skip_current: self.verify.is_some(),
            rollback: None,
            ..self.clone()
        })
    }

    /// How long after it was sent a remote command with this `timeout` may still run on its
    /// host, whatever happened to the connection or to this tool: the remote `timeout`
    /// stops it after `timeout` plus its kill grace, counted from when it started there,
    /// which is at most one connection set-up after it was sent (plus a second of slack).
    pub fn remote_bound(&self, timeout: Duration) -> Duration {
        timeout + REMOTE_KILL_AFTER + self.ssh.connect_timeout + Duration::from_secs(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub url: Template,
    pub expect_status: u16,
    pub timeout: Duration,
    pub within: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub timeout: Duration,
    pub on_timeout: OnDrainTimeout,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub max_unavailable: MaxUnavailable,
    pub min_up: u32,
}

/// How many servers of one backend this rollout may have out of rotation at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many; `1` also means one server at a time overall.
    Count(u32),
    /// This percentage of each backend's servers (rounded down, at least one).
    Percent(u32),
}

impl MaxUnavailable {
    /// The limit in a backend of `size` servers.
    pub fn of(self, size: usize) -> usize {
        match self {
            MaxUnavailable::Count(count) => count as usize,
            MaxUnavailable::Percent(percent) => (size * percent as usize / 100).max(1),
        }
    }
}

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnavailable::Count(count) => write!(f, "{count}"),
            MaxUnavailable::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl Server {
    /// The health URL that applies to this server.
    pub fn health_url<'a>(&'a self, plan: &'a Plan) -> &'a Template {
        self.health_url.as_ref().unwrap_or(&plan.health.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_haproxy_names() {
        for name in [
            "app1",
            "be_app",
            "web-01.example.com",
            "srv:8080",
            "A.B_C-D:E",
        ] {
            assert!(ServerName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_command_injection_in_names() {
        for name in [
            "",
            "a;b",
            "a b",
            "a\nb",
            "a/b",
            "a\\b",
            "a\tb",
            "é",
            "a;shutdown sessions",
        ] {
            assert!(ServerName::new(name).is_err(), "{name:?}");
            assert!(BackendName::new(name).is_err(), "{name:?}");
        }
    }

    proptest! {
        #[test]
        fn any_name_with_a_character_outside_the_charset_is_rejected(
            prefix in "[A-Za-z0-9_.:-]{0,8}",
            bad in any::<char>().prop_filter("outside the charset", |c| {
                !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
            }),
            suffix in "[A-Za-z0-9_.:-]{0,8}",
        ) {
            let name = format!("{prefix}{bad}{suffix}");
            prop_assert!(ServerName::new(&name).is_err());
            prop_assert!(BackendName::new(&name).is_err());
        }

        #[test]
        fn any_name_inside_the_charset_is_accepted(name in "[A-Za-z0-9_.:-]{1,64}") {
            prop_assert!(ServerName::new(&name).is_ok());
            prop_assert!(BackendName::new(&name).is_ok());
        }
    }
}
