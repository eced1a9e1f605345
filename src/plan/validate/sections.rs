//! The plan's sections past the HAProxy instances and servers: vars, SSH, restart, health,
//! drain, ready, canary, hooks and capacity, each checked with every default filled in.

use super::*;
use crate::plan::raw::RawAnalysis;
use crate::plan::{Analysis, SharedState};

impl Checker<'_> {
    /// The plan's vars with their values: the command line's, else the plan's default.
    /// A var without either (unless `given.partial`), and a `--var` the plan does not
    /// declare, are errors.
    pub(super) fn vars(
        &mut self,
        raw: Option<Located<RawVars>>,
        given: &Given,
        document: Location,
    ) -> BTreeMap<String, Option<String>> {
        let (partial, given) = (given.partial, given.values);
        let at = raw.as_ref().map_or(document, |vars| vars.at);
        let declared = raw.map(|vars| vars.value.0).unwrap_or_default();
        let mut vars = BTreeMap::new();
        for (name, default) in &declared {
            let builtin = Placeholder::ALL
                .into_iter()
                .any(|placeholder| placeholder.name() == name.value);
            let valid = name
                .value
                .chars()
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if builtin {
                self.fail(
                    name,
                    format!("`{}` is a built-in placeholder", name.value),
                    "give the var another name; {server} {host} {addr} {port} {previous} are filled in by haproxy-rollout",
                );
                continue;
            }
            if !valid {
                self.fail(
                    name,
                    format!("invalid var name `{}`", name.value.escape_debug()),
                    "letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            let value = given
                .iter()
                .rev()
                .find(|(given, _)| *given == name.value)
                .map(|(_, value)| value.clone())
                .or_else(|| default.as_ref().map(|default| default.value.clone()))
                .or_else(|| partial.then(|| format!("{{{}}}", name.value)));
            if value.is_none() {
                self.fail(
                    name,
                    format!("var `{}` has no value", name.value),
                    format!("give it on the command line: --var {}=VALUE", name.value),
                );
            }
            vars.insert(name.value.clone(), value);
        }
        for (name, _) in given {
            if declared.iter().any(|(declared, _)| declared.value == *name) {
                continue;
            }
            let names: Vec<&str> = declared
                .iter()
                .map(|(name, _)| name.value.as_str())
                .collect();
            self.errors.push(
                PlanError::new(
                    at,
                    "vars",
                    format!("--var {name}: the plan declares no var `{name}`"),
                )
                .with_help(if names.is_empty() {
                    "declare it under `vars:` (e.g. `vars: {version: ~}`), or leave --var out"
                        .to_owned()
                } else {
                    format!("the plan's vars: {}", names.join(", "))
                }),
            );
        }
        vars
    }

    pub(super) fn ssh(&mut self, raw: RawSsh) -> Option<Ssh> {
        let user = match raw.user {
            None => Some(None),
            Some(user) => {
                let valid = !user.value.is_empty()
                    && !user.value.starts_with('-')
                    && user
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if valid {
                    Some(Some(user.value))
                } else {
                    self.fail(
                        &user,
                        format!("invalid user `{}`", user.value.escape_debug()),
                        "a user name: letters, digits and `_ . -`, not starting with `-`",
                    );
                    None
                }
            }
        };
        let port = match raw.port {
            None => Some(None),
            Some(port) => match u16::try_from(port.value) {
                Ok(number) if number > 0 => Some(Some(number)),
                _ => {
                    self.fail(
                        &port,
                        format!("port {} is out of range", port.value),
                        "a port from 1 to 65535",
                    );
                    None
                }
            },
        };
        let identity_file = self.path(raw.identity_file);
        let known_hosts_file = self.path(raw.known_hosts_file);
        let config_file = self.path(raw.config_file);
        let connect_timeout = self.positive(raw.connect_timeout, Duration::from_secs(10));
        Some(Ssh {
            user: user?,
            port: port?,
            identity_file: identity_file?,
            known_hosts: raw
                .known_hosts
                .map_or(KnownHosts::default(), |value| value.value),
            known_hosts_file: known_hosts_file?,
            config_file: config_file?,
            connect_timeout: connect_timeout?,
        })
    }

    pub(super) fn restart(&mut self, raw: RawRestart) -> Option<Restart> {
        let command = raw.command.and_then(|command| {
            if command.value.trim().is_empty() {
                self.fail(
                    &command,
                    "the restart command is empty",
                    "e.g. sudo systemctl restart app",
                );
                return None;
            }
            self.template(&command)
        });
        let timeout = self.positive(raw.timeout, Duration::from_secs(120));
        Some(Restart {
            command: command?,
            timeout: timeout?,
        })
    }

    pub(super) fn health(&mut self, raw: RawHealth) -> Option<Health> {
        let url = match raw.url {
            Some(url) => self.url(&url),
            None => Some(parse_template(DEFAULT_HEALTH_URL).expect("the default URL is valid")),
        };
        let expect_status = match raw.expect_status {
            None => Some(200),
            Some(status) if (100..=599).contains(&status.value) => Some(status.value as u16),
            Some(status) => {
                self.fail(
                    &status,
                    format!("{} is not an HTTP status", status.value),
                    "an HTTP status from 100 to 599, e.g. 200",
                );
                None
            }
        };
        let timeout = self.positive(raw.timeout, Duration::from_secs(2));
        let within = self.positive(raw.within, Duration::from_secs(60));
        Some(Health {
            url: url?,
            expect_status: expect_status?,
            timeout: timeout?,
            within: within?,
        })
    }

    pub(super) fn drain(&mut self, raw: RawDrain) -> Option<Drain> {
        let timeout = self.positive(raw.timeout, Duration::from_secs(300));
        Some(Drain {
            timeout: timeout?,
            on_timeout: raw
                .on_timeout
                .map_or(OnDrainTimeout::default(), |value| value.value),
        })
    }

    pub(super) fn ready(&mut self, raw: RawReady) -> Option<Ready> {
        let timeout = self.positive(raw.timeout, Duration::from_secs(60));
        Some(Ready { timeout: timeout? })
    }

    pub(super) fn canary(&mut self, raw: RawCanary, server_count: Option<usize>) -> Option<Canary> {
        let servers = raw.servers.and_then(|servers| match usize::try_from(servers.value) {
            Ok(count) if count >= 1 && server_count.is_none_or(|total| count < total) => Some(count),
            _ => {
                self.fail(
                    &servers,
                    format!("{} canary server(s) is out of range", servers.value),
                    "at least 1, and fewer than the servers of the plan (the rest come after the pause)",
                );
                None
            }
        });
        let analysis = raw.analysis.map(|analysis| self.analysis(analysis));
        let pause = match (raw.pause, &analysis) {
            (Some(pause), _) => self.pause(pause),
            // After an analysis that passed, a check that the canaries are still UP and
            // healthy, and on.
            (None, Some(_)) => Some(CanaryPause::For(Duration::ZERO)),
            // Reported while decoding.
            (None, None) => None,
        };
        Some(Canary {
            servers: servers?,
            pause: pause?,
            analysis: match analysis {
                None => None,
                Some(analysis) => Some(analysis?),
            },
        })
    }

    fn analysis(&mut self, raw: RawAnalysis) -> Option<Analysis> {
        let window = self.positive(raw.window, Duration::from_secs(120));
        let max_error_ratio = raw.max_error_ratio.and_then(|ratio| {
            if (0.0..=1.0).contains(&ratio.value) {
                Some(ratio.value)
            } else {
                self.fail(
                    &ratio,
                    format!("max_error_ratio {} is out of range", ratio.value),
                    "a share from 0 to 1: 0.01 lets 1 request in 100 fail",
                );
                None
            }
        });
        let min_requests = match raw.min_requests {
            None => Some(100),
            Some(count) if count.value >= 1 => Some(count.value),
            Some(count) => {
                self.fail(
                    &count,
                    "min_requests must be at least 1",
                    "the fewest requests the canaries must serve in the window for a verdict, e.g. 100",
                );
                None
            }
        };
        Some(Analysis {
            window: window?,
            max_error_ratio: max_error_ratio?,
            min_requests: min_requests?,
        })
    }

    fn pause(&mut self, pause: Located<String>) -> Option<CanaryPause> {
        {
            if pause.value == "manual" {
                return Some(CanaryPause::Manual);
            }
            match crate::plan::duration::parse_duration(&pause.value) {
                Ok(duration) if !duration.is_zero() => Some(CanaryPause::For(duration)),
                _ => {
                    self.fail(
                        &pause,
                        format!("invalid canary pause `{}`", pause.value),
                        "`manual`, or a duration greater than 0 such as 5m",
                    );
                    None
                }
            }
        }
    }

    pub(super) fn hooks(&mut self, raw: RawHooks) -> Option<Hooks> {
        let mut hook = |raw: Option<Located<RawHook>>| -> Option<Option<Hook>> {
            let Some(raw) = raw else { return Some(None) };
            let RawHook {
                command,
                timeout,
                local,
            } = raw.value;
            let command = command.and_then(|command| {
                if command.value.trim().is_empty() {
                    self.fail(
                        &command,
                        "the hook command is empty",
                        "a shell command, or leave the hook out",
                    );
                    return None;
                }
                self.template(&command)
            });
            let timeout = self.positive(timeout, Duration::from_secs(60));
            Some(Some(Hook {
                command: command?,
                timeout: timeout?,
                local: local.is_some_and(|local| local.value),
            }))
        };
        let before_drain = hook(raw.before_drain);
        let after_restart = hook(raw.after_restart);
        let after_ready = hook(raw.after_ready);
        let on_failure = hook(raw.on_failure);
        Some(Hooks {
            before_drain: before_drain?,
            after_restart: after_restart?,
            after_ready: after_ready?,
            on_failure: on_failure?,
        })
    }

    pub(super) fn capacity(&mut self, raw: RawCapacity) -> Option<Capacity> {
        let max_unavailable = match raw.max_unavailable {
            None => Some(MaxUnavailable::Count(1)),
            Some(value) => match value.value {
                RawMaxUnavailable::Count(count) => match u32::try_from(count) {
                    Ok(count) if count >= 1 => Some(MaxUnavailable::Count(count)),
                    _ => {
                        self.fail(
                            &value,
                            format!("max_unavailable {count} is out of range"),
                            "at least 1: the number of servers of one backend out of rotation at once, or a percentage such as 10%",
                        );
                        None
                    }
                },
                RawMaxUnavailable::Percent(percent) => match u32::try_from(percent) {
                    Ok(percent) if (1..=100).contains(&percent) => {
                        Some(MaxUnavailable::Percent(percent))
                    }
                    _ => {
                        self.fail(
                            &value,
                            format!("max_unavailable {percent}% is out of range"),
                            "a percentage from 1% to 100% of each backend's servers (rounded down, at least 1)",
                        );
                        None
                    }
                },
            },
        };
        let min_up = match raw.min_up {
            None => Some(1),
            Some(value) => match u32::try_from(value.value) {
                Ok(count) if count >= 1 => Some(count),
                _ => {
                    self.fail(
                        &value,
                        format!("min_up {} is out of range", value.value),
                        "at least 1: haproxy-rollout never takes the last UP server out of a backend",
                    );
                    None
                }
            },
        };
        Some(Capacity {
            max_unavailable: max_unavailable?,
            min_up: min_up?,
        })
    }
}

impl Checker<'_> {
    pub(super) fn verify(&mut self, raw: RawVerify) -> Option<Verify> {
        let read = match (raw.url, raw.command) {
            (Some(url), None) => self.url(&url).map(VerifyRead::Url),
            (None, Some(command)) if command.value.trim().is_empty() => {
                self.fail(
                    &command,
                    "the verify command is empty",
                    "a command that prints what the server runs, e.g. cat /opt/app/VERSION",
                );
                None
            }
            (None, Some(command)) => self.template(&command).map(VerifyRead::Command),
            (Some(_), Some(command)) => {
                self.fail(
                    &command,
                    "verify has both `url` and `command`",
                    "give one: `url` (its body is the answer) or `command` (its output is)",
                );
                None
            }
            (None, None) => {
                let at = raw.expect.as_ref().map(|expect| expect.at);
                self.errors.push(
                    PlanError::new(
                        at.unwrap_or(Location { line: 1, column: 1 }),
                        "verify",
                        "verify needs `url` or `command`",
                    )
                    .with_help("e.g. url: http://{addr}:{port}/version"),
                );
                None
            }
        };
        let expect = raw.expect.and_then(|expect| {
            let template = self.template(&expect)?;
            let per_server = [Placeholder::Host, Placeholder::Addr, Placeholder::Port];
            if per_server
                .into_iter()
                .any(|placeholder| template.uses(placeholder))
            {
                self.fail(
                    &expect,
                    "verify.expect may use only {server} and the plan's vars",
                    "the expected answer is known before any server is read, e.g. \"{version}\"",
                );
                return None;
            }
            Some(template)
        });
        let timeout = self.positive(raw.timeout, Duration::from_secs(2));
        Some(Verify {
            read: read?,
            expect: expect?,
            timeout: timeout?,
        })
    }
}

impl Checker<'_> {
    pub(super) fn rollback(
        &mut self,
        raw: RawRollback,
        restart_timeout: Duration,
        verify: bool,
    ) -> Option<Rollback> {
        let command = raw.command.and_then(|command| {
            if command.value.trim().is_empty() {
                self.fail(
                    &command,
                    "the rollback command is empty",
                    "e.g. sudo /opt/app/deploy {previous}",
                );
                return None;
            }
            let template = self.template_in(&command, true)?;
            if template.uses(Placeholder::Previous) && !verify {
                self.fail(
                    &command,
                    "`{previous}` needs `verify`",
                    "{previous} is what verify read on a server before this rollout: add `verify:` (url or command, and expect)",
                );
                return None;
            }
            Some(template)
        });
        let timeout = self.positive(raw.timeout, restart_timeout);
        Some(Rollback {
            command: command?,
            timeout: timeout?,
            on_failure: raw
                .on_failure
                .map_or(OnFailure::default(), |value| value.value),
        })
    }
}

impl Checker<'_> {
    /// `state.etcd`: client URLs, a key prefix and name that make safe keys, TLS files
    /// that go together, a lease etcd can keep.
    pub(super) fn etcd(&mut self, raw: crate::plan::raw::RawEtcd) -> Option<SharedState> {
        let tls = raw.ca_file.is_some() || raw.cert_file.is_some();
        let has_ca = raw.ca_file.is_some();
        let endpoints = raw.endpoints.and_then(|endpoints| {
            if endpoints.value.is_empty() {
                self.fail(
                    &endpoints,
                    "no etcd endpoint",
                    "give the client URL of at least one member, e.g. [https://10.0.0.5:2379]",
                );
                return None;
            }
            let mut valid = Vec::new();
            for endpoint in &endpoints.value {
                match etcd_endpoint(&endpoint.value) {
                    Ok(url) if tls && url.starts_with("http://") => self.fail(
                        endpoint,
                        "a plain http:// endpoint with TLS files",
                        "use https:// endpoints with ca_file, cert_file and key_file, or leave the TLS files out",
                    ),
                    Ok(url) if !has_ca && url.starts_with("https://") => self.fail(
                        endpoint,
                        "an https:// endpoint without ca_file",
                        "give ca_file: the CA certificate (PEM) that signed the members' certificates",
                    ),
                    Ok(url) => valid.push(url),
                    Err(problem) => self.fail(
                        endpoint,
                        format!("not an etcd client URL: {problem}"),
                        "e.g. https://10.0.0.5:2379 or http://127.0.0.1:2379",
                    ),
                }
            }
            (valid.len() == endpoints.value.len()).then_some(valid)
        });
        let prefix = match raw.prefix {
            None => Some(crate::plan::DEFAULT_ETCD_PREFIX.to_owned()),
            Some(prefix) => {
                let value = prefix.value.trim_end_matches('/');
                let parts_ok = value.split('/').skip(1).all(key_part_ok);
                if !value.starts_with('/') || !parts_ok {
                    self.fail(
                        &prefix,
                        "not a key prefix",
                        "a path of letters, digits, '.', '_' and '-' starting with '/', e.g. /haproxy-rollout",
                    );
                    None
                } else {
                    Some(value.to_owned())
                }
            }
        };
        let name = match raw.name {
            None => Some(None),
            Some(name) if key_part_ok(&name.value) => Some(Some(name.value)),
            Some(name) => {
                self.fail(
                    &name,
                    "not a rollout name",
                    "letters, digits, '.', '_' and '-', e.g. web-restart",
                );
                None
            }
        };
        let ca_file = self.path(raw.ca_file);
        let identity = match (raw.cert_file, raw.key_file) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => match (self.path(Some(cert)), self.path(Some(key))) {
                (Some(Some(cert)), Some(Some(key))) => Some(Some((cert, key))),
                _ => None,
            },
            (Some(cert), None) => {
                self.fail(
                    &cert,
                    "cert_file without key_file",
                    "give the client certificate's key in key_file",
                );
                None
            }
            (None, Some(key)) => {
                self.fail(
                    &key,
                    "key_file without cert_file",
                    "give the client certificate in cert_file",
                );
                None
            }
        };
        let lease_ttl = match raw.lease_ttl {
            Some(ttl)
                if ttl.value.0 < Duration::from_secs(2)
                    || ttl.value.0 > Duration::from_secs(3600) =>
            {
                self.fail(
                    &ttl,
                    "lease_ttl out of range",
                    "between 2s and 1h; 10s is the default",
                );
                None
            }
            Some(ttl) => Some(ttl.value.0),
            None => Some(crate::plan::DEFAULT_LEASE_TTL),
        };
        Some(SharedState {
            endpoints: endpoints?,
            prefix: prefix?,
            name: name?,
            ca_file: ca_file?,
            identity: identity?,
            lease_ttl: lease_ttl?,
        })
    }
}

/// An etcd client URL as the client takes it: http(s)://HOST:PORT, nothing after.
fn etcd_endpoint(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|error| error.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme is {}, not http or https", url.scheme()));
    }
    let host = url.host_str().ok_or("no host")?;
    let port = url
        .port()
        .ok_or("no port (etcd's client port is usually 2379)")?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err("only scheme, host and port: no path, query or user".to_owned());
    }
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

/// A part of an etcd key the rollout writes: letters, digits, '.', '_', '-', not `.` or `..`.
pub(crate) fn key_part_ok(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}
