//! The plan file's shape: every key it may hold, typed and located, nothing checked beyond
//! types. Decoding walks the located YAML tree and reports every unknown key, missing key and
//! wrong type it finds; `validate` then checks values and builds the model.
//!
//! These structs are also the source of the JSON Schema (`haproxy-rollout schema`), so the
//! doc comments below are what an editor shows for each key.

use std::time::Duration;

use schemars::JsonSchema;

use super::duration::DURATION_PATTERN;
use super::model::{KnownHosts, NAME_PATTERN, OnDrainTimeout, OnFailure};
use super::node::Location;

/// A value from the plan file and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub at: Location,
    /// The key path, e.g. `servers[1].name`.
    pub path: String,
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A duration written as `500ms`, `30s`, `5m`, `1h` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanDuration(pub Duration);

impl JsonSchema for PlanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number with a unit, ms, s, m or h (500ms, 30s, 5m, 1m30s).",
        })
    }
}

/// A rolling restart of servers behind HAProxy, format version 1.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "haproxy-rollout plan")]
pub struct RawPlan {
    /// Plan format version. Must be 1.
    #[schemars(required, range(min = 1, max = 1))]
    pub version: Option<Located<u64>>,
    /// Values for placeholders, by name: a default, or `~` for a value that `--var
    /// NAME=VALUE` must give. Used as `{NAME}` in commands, URLs and `verify.expect`.
    pub vars: Option<Located<RawVars>>,
    /// The HAProxy instances in front of the servers; all are changed in lockstep.
    #[schemars(required, length(min = 1))]
    pub haproxy: Option<Located<Vec<Located<RawHaproxy>>>>,
    /// The backends each server is drained in: a list, or `auto` (every backend that holds
    /// the server's name, on each HAProxy).
    #[schemars(required)]
    pub backends: Option<Located<RawBackends>>,
    /// The servers to restart, in this order.
    #[schemars(required, length(min = 1))]
    pub servers: Option<Located<Vec<Located<RawServer>>>>,
    /// How to reach the servers' hosts over SSH.
    pub ssh: Option<RawSsh>,
    /// How to restart a server.
    #[schemars(required)]
    pub restart: Option<RawRestart>,
    /// The application's own health check, run from where the tool runs.
    pub health: Option<RawHealth>,
    /// Taking a server out of traffic before its restart.
    pub drain: Option<RawDrain>,
    /// Waiting for HAProxy's own checks after the restart.
    pub ready: Option<RawReady>,
    /// How many servers may be out of rotation at once.
    pub capacity: Option<RawCapacity>,
    /// How often live state is polled. Default: 200ms.
    pub poll_interval: Option<Located<PlanDuration>>,
    /// Commands run at points of each server's rollout.
    pub hooks: Option<RawHooks>,
    /// Roll the first servers, then pause before the rest.
    pub canary: Option<RawCanary>,
    /// What a server runs: read before it is touched, and after its restart, before it
    /// goes back into traffic.
    pub verify: Option<RawVerify>,
    /// A server whose `verify` already answers `expect` before it is touched is left as it
    /// is (reported "already current"). Default: true when the plan has `verify`.
    pub skip_current: Option<Located<bool>>,
    /// Undoing this rollout on the servers it changed: the same safe sequence with
    /// `rollback.command` instead of the restart, newest first.
    pub rollback: Option<RawRollback>,
    /// Where the rollout's locks, journal and abort requests live. Default: a folder on
    /// this machine (`--state-dir`).
    pub state: Option<RawState>,
}

/// Where the rollout's state lives.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "State")]
pub struct RawState {
    /// Shared by every machine that runs this plan: locks on a lease, the journal, abort
    /// requests, in etcd (v3 API).
    #[schemars(required)]
    pub etcd: Option<RawEtcd>,
}

/// An etcd cluster holding the rollout's state. User name and password, where etcd's auth
/// is on, come from `ETCD_USERNAME` and `ETCD_PASSWORD`, never from the plan.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Etcd")]
pub struct RawEtcd {
    /// The members' client URLs, e.g. https://10.0.0.5:2379 (`--state-etcd` overrides).
    #[schemars(required)]
    pub endpoints: Option<Located<Vec<Located<String>>>>,
    /// The key prefix everything is kept under. Default: /haproxy-rollout.
    pub prefix: Option<Located<String>>,
    /// The rollout's name under the prefix: machines that run plans of one name share
    /// their lock and journal. Default: the plan file's name without `.yaml`.
    pub name: Option<Located<String>>,
    /// CA certificate (PEM) that signed the members' certificates; needs https endpoints.
    pub ca_file: Option<Located<String>>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<Located<String>>,
    /// The client certificate's private key (PEM), with `cert_file`.
    pub key_file: Option<Located<String>>,
    /// How long the locks outlive a process that stopped keeping them alive. Default: 10s.
    pub lease_ttl: Option<Located<PlanDuration>>,
}

/// How a server is rolled back.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rollback")]
pub struct RawRollback {
    /// Shell command run over SSH on the server's host instead of the restart; placeholders
    /// as in restart.command, and {previous}: what `verify` read on the server before this
    /// rollout (needs `verify`).
    #[schemars(required)]
    pub command: Option<Located<String>>,
    /// Deadline for the command, enforced on the remote side too. Default: restart.timeout.
    pub timeout: Option<Located<PlanDuration>>,
    /// `manual` (default): report, and `haproxy-rollout rollback PLAN` rolls back. `auto`:
    /// when any server fails, roll back every server this rollout changed at once.
    pub on_failure: Option<Located<OnFailure>>,
}

/// Reading what a server runs: an HTTP URL (its body) or a command over SSH on its host
/// (its standard output), compared with `expect`, whitespace trimmed.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Verify")]
pub struct RawVerify {
    /// http(s) URL with placeholders; it must answer 2xx. Give `url` or `command`.
    pub url: Option<Located<String>>,
    /// Shell command run over SSH on the server's host; it must exit 0. Give `url` or `command`.
    pub command: Option<Located<String>>,
    /// The answer that means the server runs what this rollout deploys, e.g. "{version}";
    /// placeholders: {server} and the plan's vars.
    #[schemars(required)]
    pub expect: Option<Located<String>>,
    /// Deadline for one read. Default: 2s.
    pub timeout: Option<Located<PlanDuration>>,
}

/// `vars:` as written: each name (located at its key) and its default, `None` for `~`.
#[derive(Debug, Default)]
pub struct RawVars(pub Vec<(Located<String>, Option<Located<String>>)>);

/// A var's name: it stands in templates as `{name}`.
pub const VAR_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

impl JsonSchema for RawVars {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Vars".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "propertyNames": {"pattern": VAR_PATTERN},
            "additionalProperties": {
                "type": ["string", "integer", "null"],
                "description": "The default value; null (~): `--var NAME=VALUE` must give it."
            }
        })
    }
}

/// `backends:` as written: a list of names, or `auto`.
#[derive(Debug)]
pub enum RawBackends {
    List(Vec<Located<String>>),
    Auto,
}

impl JsonSchema for RawBackends {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Backends".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": NAME_PATTERN}},
                {"const": "auto", "description": "Every backend that holds the server's name, on each HAProxy."}
            ]
        })
    }
}

/// One HAProxy instance and its runtime API socket (admin level).
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Haproxy")]
pub struct RawHaproxy {
    /// A name for this instance in reports, e.g. `lb1`.
    #[schemars(required, pattern(NAME_PATTERN))]
    pub name: Option<Located<String>>,
    /// The runtime API: an absolute unix socket path, or `tcp://HOST:PORT`.
    #[schemars(required)]
    pub socket: Option<Located<String>>,
    /// Deadline for one runtime-API command: connect, send, read the reply. Default: 5s.
    pub timeout: Option<Located<PlanDuration>>,
    /// How long this HAProxy may stay unreachable mid-rollout (commands retried with
    /// backoff) before the rollout stops safely. Default: 30s.
    pub unreachable_timeout: Option<Located<PlanDuration>>,
}

/// One server, as named in the backends.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Server")]
pub struct RawServer {
    /// The server's name in HAProxy's backends.
    #[schemars(required, pattern(NAME_PATTERN))]
    pub name: Option<Located<String>>,
    /// SSH target: host name, address or ssh_config alias. Default: the server's address as HAProxy has it.
    pub host: Option<Located<String>>,
    /// Overrides `health.url` for this server.
    pub health_url: Option<Located<String>>,
}

/// SSH settings. Only key or agent authentication is used.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ssh")]
pub struct RawSsh {
    /// Remote user. Default: what ssh would use (ssh_config, else the local user).
    pub user: Option<Located<String>>,
    /// Remote port. Default: what ssh would use (ssh_config, else 22).
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<Located<u64>>,
    /// Private key file. Default: ssh's own choice (agent, ~/.ssh/id_*).
    pub identity_file: Option<Located<String>>,
    /// Host key policy: `strict` (default) or `accept-new`.
    pub known_hosts: Option<Located<KnownHosts>>,
    /// known_hosts file. Default: ssh's own (~/.ssh/known_hosts).
    pub known_hosts_file: Option<Located<String>>,
    /// An ssh_config file (aliases, ProxyJump, ...), as `ssh -F`.
    pub config_file: Option<Located<String>>,
    /// Deadline for opening an SSH connection. Default: 10s.
    pub connect_timeout: Option<Located<PlanDuration>>,
}

/// The restart, run over SSH on the server's host.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Restart")]
pub struct RawRestart {
    /// Shell command; placeholders {server} {host} {addr} {port} are filled in, shell-quoted.
    #[schemars(required)]
    pub command: Option<Located<String>>,
    /// Deadline for the command, enforced on the remote side too. Default: 120s.
    pub timeout: Option<Located<PlanDuration>>,
}

/// The application's health endpoint, checked after the restart.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub struct RawHealth {
    /// http(s) URL with placeholders. Default: http://{addr}:{port}/health
    pub url: Option<Located<String>>,
    /// HTTP status that means healthy. Default: 200.
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<Located<u64>>,
    /// Deadline for one request. Default: 2s.
    pub timeout: Option<Located<PlanDuration>>,
    /// Deadline for the application to answer healthy after the restart. Default: 60s.
    pub within: Option<Located<PlanDuration>>,
}

/// Draining a server before its restart.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Drain")]
pub struct RawDrain {
    /// Deadline for HAProxy to report zero sessions. Default: 5m.
    pub timeout: Option<Located<PlanDuration>>,
    /// `fail` (default): return the server unrestarted and stop. `force`: shut the sessions down (reported) and go on.
    pub on_timeout: Option<Located<OnDrainTimeout>>,
}

/// Waiting for HAProxy to report the server UP after the restart.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ready")]
pub struct RawReady {
    /// Deadline for HAProxy's checks to pass (status exactly UP). Default: 60s.
    pub timeout: Option<Located<PlanDuration>>,
}

/// Capacity rules, checked in each backend on each HAProxy.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Capacity")]
pub struct RawCapacity {
    /// Servers of one backend out of rotation at once: a count, or a percentage of each
    /// backend's servers such as `10%` (rounded down, at least 1). Default: 1 (one server
    /// at a time).
    pub max_unavailable: Option<Located<RawMaxUnavailable>>,
    /// Never drain a server if fewer other servers than this would stay UP. Default: 1.
    pub min_up: Option<Located<u64>>,
}

/// `max_unavailable:` as written: a whole number, or a percentage such as `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMaxUnavailable {
    Count(u64),
    Percent(u64),
}

impl JsonSchema for RawMaxUnavailable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxUnavailable".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^[0-9]+%$", "description": "A percentage of each backend's servers, from 1% to 100%."}
            ]
        })
    }
}

/// Canary servers: the first `servers` of the plan are rolled, then the rollout pauses.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Canary")]
pub struct RawCanary {
    /// How many servers, from the start of the plan, are canaries.
    #[schemars(required, range(min = 1))]
    pub servers: Option<Located<u64>>,
    /// `manual`: stop until `haproxy-rollout resume PLAN` (or a yes on a terminal); or a
    /// duration: wait, check the canaries are still UP and healthy, then go on. Required
    /// without `analysis`; with it, the default is to go on once the analysis passed.
    pub pause: Option<Located<String>>,
    /// Judge the canaries by what HAProxy counted of their answers, before the pause.
    pub analysis: Option<RawAnalysis>,
}

/// The canaries serve traffic for `window`; the rollout goes on only if the share of their
/// requests that failed stays within `max_error_ratio`.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Analysis")]
pub struct RawAnalysis {
    /// How long the canaries serve traffic before the verdict, e.g. 2m.
    #[schemars(required)]
    pub window: Option<Located<PlanDuration>>,
    /// The most (hrsp_5xx + eresp + econ) / requests of the canaries, on every HAProxy,
    /// that passes, from 0 to 1, e.g. 0.01.
    #[schemars(required, range(min = 0, max = 1))]
    pub max_error_ratio: Option<Located<f64>>,
    /// Fewer requests in the window is inconclusive, and the rollout stops. Default: 100.
    pub min_requests: Option<Located<u64>>,
}

/// Commands run at points of each server's rollout; a failing hook stops the rollout like a
/// failed restart.
#[derive(Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hooks")]
pub struct RawHooks {
    /// Before the server is drained (it is still in traffic).
    pub before_drain: Option<Located<RawHook>>,
    /// After the restart command succeeded, before the health check.
    pub after_restart: Option<Located<RawHook>>,
    /// After HAProxy reports the server UP again, before the next server.
    pub after_ready: Option<Located<RawHook>>,
    /// Once, when the rollout fails, for the first server it failed on.
    pub on_failure: Option<Located<RawHook>>,
}

/// One hook.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hook")]
pub struct RawHook {
    /// Shell command; placeholders {server} {host} {addr} {port} are filled in, shell-quoted.
    #[schemars(required)]
    pub command: Option<Located<String>>,
    /// Deadline for the command (enforced on the remote side too). Default: 60s.
    pub timeout: Option<Located<PlanDuration>>,
    /// Run where haproxy-rollout runs instead of over SSH on the server's host. Default: false.
    pub local: Option<Located<bool>>,
}
