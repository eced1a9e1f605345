//! The exact sequence one server goes through, as data, for `plan` to print. The engine
//! (`rollout/server.rs`) runs it; `rollout/tests/preview.rs` runs the engine against a world
//! where every step succeeds and fails if the two differ for any shipped plan.
//!
//! The HAProxy state sequence, and why (docs/how-it-works.md has the long form):
//! drain (no new traffic; checks keep running) → zero sessions → maint (checks stop, so the
//! restart fires no "server DOWN" alert) → restart → the application's own health check
//! passes → drain (leaves maintenance, still no new traffic; HAProxy sets its health
//! counter to `rise`, so "up" means nothing yet) → HAProxy's checks pass until the status is
//! exactly DRAIN, without `n/m` → ready → status exactly UP.

use std::fmt;
use std::time::Duration;

use crate::haproxy::{AdminTarget, RuntimeCommand};
use crate::plan::duration::HumanDuration;
use crate::plan::template::health_url;
use crate::plan::template::{PlaceholderValues, remote_command};
use crate::plan::{
    BackendName, HookPoint, InstanceName, OnDrainTimeout, Plan, Server, ServerName, VerifyRead,
};

use super::topology::Topology;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Property 2, checked again at the moment of the drain.
    CheckCapacity { server: ServerName, min_up: u32 },
    /// One runtime-API command on one HAProxy.
    Runtime {
        instance: InstanceName,
        command: String,
        why: &'static str,
    },
    WaitNoSessions {
        server: ServerName,
        timeout: Duration,
        on_timeout: OnDrainTimeout,
        /// Commands run per instance when `on_timeout: force` cuts sessions off.
        force: Vec<(InstanceName, String)>,
    },
    Restart {
        host: String,
        command: String,
        timeout: Duration,
    },
    WaitHealthy {
        url: String,
        expect_status: u16,
        within: Duration,
    },
    /// `verify` answers what this rollout deploys: `read` is a URL or `ssh HOST: command`.
    Verify {
        read: String,
        expect: String,
        within: Duration,
    },
    /// HAProxy's own checks pass after the restart: status exactly DRAIN, check OK.
    WaitChecksPassed {
        server: ServerName,
        timeout: Duration,
    },
    /// Back in rotation: status exactly UP on every HAProxy.
    WaitUp {
        server: ServerName,
        timeout: Duration,
    },
    /// A hook of the plan; `target` is `ssh HOST` or `locally`.
    Hook {
        point: HookPoint,
        target: String,
        command: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CheckCapacity { server, min_up } => write!(
                formatter,
                "check capacity: draining {server} leaves at least {min_up} other server(s) in rotation in each backend on each HAProxy"
            ),
            Step::Runtime {
                instance,
                command,
                why,
            } => write!(formatter, "{instance}: {command}    # {why}"),
            Step::WaitNoSessions {
                server,
                timeout,
                on_timeout,
                force,
            } => {
                write!(
                    formatter,
                    "wait until every HAProxy reports 0 sessions on {server} (at most {}; ",
                    HumanDuration(*timeout)
                )?;
                match on_timeout {
                    OnDrainTimeout::Fail => {
                        formatter.write_str("then: return it to traffic unrestarted and stop)")
                    }
                    OnDrainTimeout::Force => {
                        let commands: Vec<String> = force
                            .iter()
                            .map(|(instance, command)| format!("{instance}: {command}"))
                            .collect();
                        write!(
                            formatter,
                            "then: {}, and report the sessions cut)",
                            commands.join("; ")
                        )
                    }
                }
            }
            Step::Restart {
                host,
                command,
                timeout,
            } => write!(
                formatter,
                "ssh {host}: {command}    # at most {}",
                HumanDuration(*timeout)
            ),
            Step::WaitHealthy {
                url,
                expect_status,
                within,
            } => write!(
                formatter,
                "wait until GET {url} answers {expect_status} (at most {})",
                HumanDuration(*within)
            ),
            Step::Verify {
                read,
                expect,
                within,
            } => write!(
                formatter,
                "verify: {read} answers {expect:?} (read until it does, at most {} after the restart)",
                HumanDuration(*within)
            ),
            Step::WaitChecksPassed { server, timeout } => write!(
                formatter,
                "wait until HAProxy's own checks pass on every HAProxy: {server} status exactly DRAIN, last check L4OK/L6OK/L7OK (at most {})",
                HumanDuration(*timeout)
            ),
            Step::Hook {
                point,
                target,
                command,
            } => write!(formatter, "{} hook, {target}: {command}", point.as_str()),
            Step::WaitUp { server, timeout } => write!(
                formatter,
                "wait until every HAProxy reports {server} exactly UP (at most {})",
                HumanDuration(*timeout)
            ),
        }
    }
}

/// Every step for one server. `values` is `None` when its address is not known (pre-flight
/// says why); the steps then show the placeholders unfilled.
pub fn server_steps(
    plan: &Plan,
    topology: &Topology,
    server: &Server,
    values: Option<&PlaceholderValues>,
) -> Vec<Step> {
    let server_index = plan
        .servers
        .iter()
        .position(|candidate| candidate.name == server.name)
        .expect("a server of the plan");
    let set = |state: AdminTarget, why: &'static str| -> Vec<Step> {
        runtime_commands(
            plan,
            topology,
            server_index,
            &server.name,
            |backend, name| {
                RuntimeCommand::SetState {
                    backend,
                    server: name,
                    state,
                }
                .to_string()
            },
        )
        .into_iter()
        .map(|(instance, command)| Step::Runtime {
            instance,
            command,
            why,
        })
        .collect()
    };
    let unknown = PlaceholderValues {
        server: server.name.to_string(),
        host: server
            .host
            .as_ref()
            .map_or_else(|| "{host}".to_owned(), |host| host.as_str().to_owned()),
        addr: "{addr}".to_owned(),
        port: None,
        previous: None,
    };
    let values = values.unwrap_or(&unknown);
    let mut force = runtime_commands(
        plan,
        topology,
        server_index,
        &server.name,
        |backend, name| {
            RuntimeCommand::SetState {
                backend,
                server: name,
                state: AdminTarget::Maint,
            }
            .to_string()
        },
    );
    force.extend(runtime_commands(
        plan,
        topology,
        server_index,
        &server.name,
        |backend, name| {
            RuntimeCommand::ShutdownSessions {
                backend,
                server: name,
            }
            .to_string()
        },
    ));

    let mut target = values.host.clone();
    if let Some(user) = &plan.ssh.user {
        target = format!("{user}@{target}");
    }
    if let Some(port) = plan.ssh.port {
        target = format!("{target} -p {port}");
    }
    let hook = |point: HookPoint| {
        plan.hooks.get(point).map(|hook| Step::Hook {
            point,
            target: if hook.local {
                "locally".to_owned()
            } else {
                format!("ssh {target}")
            },
            command: remote_command(&hook.command, values, hook.timeout),
        })
    };

    let mut steps = vec![Step::CheckCapacity {
        server: server.name.clone(),
        min_up: plan.capacity.min_up,
    }];
    steps.extend(hook(HookPoint::BeforeDrain));
    steps.extend(set(
        AdminTarget::Drain,
        "no new traffic; checks keep running",
    ));
    steps.push(Step::WaitNoSessions {
        server: server.name.clone(),
        timeout: plan.drain.timeout,
        on_timeout: plan.drain.on_timeout,
        force,
    });
    steps.extend(set(
        AdminTarget::Maint,
        "checks stop: the restart fires no DOWN alert",
    ));
    steps.push(Step::Restart {
        host: target.clone(),
        command: remote_command(&plan.restart.command, values, plan.restart.timeout),
        timeout: plan.restart.timeout,
    });
    steps.extend(hook(HookPoint::AfterRestart));
    steps.push(Step::WaitHealthy {
        url: health_url(server.health_url(plan), values),
        expect_status: plan.health.expect_status,
        within: plan.health.within,
    });
    if let Some(verify) = &plan.verify {
        steps.push(Step::Verify {
            read: match &verify.read {
                VerifyRead::Url(url) => format!("GET {}", health_url(url, values)),
                VerifyRead::Command(command) => format!(
                    "ssh {target}: {}",
                    remote_command(command, values, verify.timeout)
                ),
            },
            expect: verify.expected(&server.name),
            within: plan.health.within,
        });
    }
    steps.extend(set(
        AdminTarget::Drain,
        "leaves maintenance, still no new traffic",
    ));
    steps.push(Step::WaitChecksPassed {
        server: server.name.clone(),
        timeout: plan.ready.timeout,
    });
    steps.extend(set(AdminTarget::Ready, "back into traffic"));
    steps.push(Step::WaitUp {
        server: server.name.clone(),
        timeout: plan.ready.timeout,
    });
    steps.extend(hook(HookPoint::AfterReady));
    if let Some(Step::Hook {
        target, command, ..
    }) = hook(HookPoint::OnFailure)
    {
        steps.push(Step::Hook {
            point: HookPoint::OnFailure,
            target: format!("only if the rollout fails on this server, {target}"),
            command,
        });
    }
    steps
}

/// What happens around the servers' steps: the canary pause and analysis, and what a
/// failure does (a rollback), in words, for `plan` to print after the steps.
pub fn around_the_steps(plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(canary) = &plan.canary {
        let names: Vec<&str> = plan.servers[..canary.servers]
            .iter()
            .map(|server| server.name.as_str())
            .collect();
        if let Some(analysis) = &canary.analysis {
            notes.push(format!(
                "after the canaries ({}): judge them for {} by HAProxy's counters of their answers; at most {}% of at least {} request(s) may fail (5xx, failed responses and connections), else stop",
                names.join(", "),
                HumanDuration(analysis.window),
                analysis.max_error_ratio * 100.0,
                analysis.min_requests
            ));
        }
        notes.push(match canary.pause {
            crate::plan::CanaryPause::Manual => {
                "then pause until `haproxy-rollout resume` (or a yes on a terminal)".to_owned()
            }
            crate::plan::CanaryPause::For(pause) if pause.is_zero() => {
                "then check the canaries are still UP and healthy, and go on".to_owned()
            }
            crate::plan::CanaryPause::For(pause) => format!(
                "then wait {}, check the canaries are still UP and healthy, and go on",
                HumanDuration(pause)
            ),
        });
    }
    if let Some(rollback) = &plan.rollback {
        let when = match rollback.on_failure {
            crate::plan::OnFailure::Auto => "if a server fails, at once",
            crate::plan::OnFailure::Manual => "on `haproxy-rollout rollback`",
        };
        notes.push(format!(
            "{when}: every server this rollout changed goes back, newest first, through the same steps with `{}`",
            rollback.command.as_str()
        ));
    }
    notes
}

/// One command per HAProxy instance and backend, in plan order.
fn runtime_commands(
    plan: &Plan,
    topology: &Topology,
    server_index: usize,
    server: &ServerName,
    command: impl Fn(&BackendName, &ServerName) -> String,
) -> Vec<(InstanceName, String)> {
    let mut commands = Vec::new();
    for (index, instance) in plan.haproxy.iter().enumerate() {
        for backend in topology.backends(index, server_index) {
            commands.push((instance.name.clone(), command(backend, server)));
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n  - name: lb2\n    socket: tcp://10.0.0.3:9999\n\
        backends: [be_web, be_api]\nservers:\n  - name: app1\nrestart:\n  command: systemctl restart {server}\n";

    #[test]
    fn every_state_change_runs_on_every_haproxy_and_backend_in_order() {
        let plan = crate::plan::parse(PLAN).unwrap();
        let values = PlaceholderValues {
            server: "app1".into(),
            host: "10.0.0.1".into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
            previous: None,
        };
        let crate::plan::Backends::Listed(names) = &plan.backends else {
            panic!("listed backends")
        };
        let topology = Topology::uniform(2, 1, names);
        let steps = server_steps(&plan, &topology, &plan.servers[0], Some(&values));
        let runtime: Vec<String> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Runtime {
                    instance, command, ..
                } => Some(format!("{instance}: {command}")),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = ["drain", "maint", "drain", "ready"]
            .iter()
            .flat_map(|state| {
                ["lb1", "lb2"].into_iter().flat_map(move |instance| {
                    ["be_web", "be_api"].into_iter().map(move |backend| {
                        format!("{instance}: set server {backend}/app1 state {state}")
                    })
                })
            })
            .collect();
        assert_eq!(runtime, expected);
        assert!(steps.contains(&Step::Restart {
            host: "10.0.0.1".into(),
            command: "timeout -k 10s 120s sh -c 'systemctl restart app1'".into(),
            timeout: Duration::from_secs(120),
        }));
        assert!(steps.contains(&Step::WaitHealthy {
            url: "http://10.0.0.1:8080/health".into(),
            expect_status: 200,
            within: Duration::from_secs(60),
        }));
        assert!(matches!(steps.last(), Some(Step::WaitUp { .. })));
    }

    #[test]
    fn the_canary_analysis_and_the_rollback_are_said_around_the_steps() {
        assert_eq!(
            around_the_steps(&crate::plan::parse(PLAN).unwrap()),
            Vec::<String>::new()
        );
        let text = PLAN.replace("  - name: app1\n", "  - name: app1\n  - name: app2\n")
            + "vars:\n  version: \"2\"\nverify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n\
               rollback:\n  command: deploy {previous}\n  on_failure: auto\n\
               canary:\n  servers: 1\n  analysis:\n    window: 2m\n    max_error_ratio: 0.01\n";
        let notes = around_the_steps(&crate::plan::parse(&text).unwrap());
        assert_eq!(
            notes,
            [
                "after the canaries (app1): judge them for 2m by HAProxy's counters of their answers; at most 1% of at least 100 request(s) may fail (5xx, failed responses and connections), else stop",
                "then check the canaries are still UP and healthy, and go on",
                "if a server fails, at once: every server this rollout changed goes back, newest first, through the same steps with `deploy {previous}`",
            ]
        );
    }
}
