//! `init --socket SOCKET`: a first plan, written from what a live HAProxy has: its backends
//! and servers in order, every default shown, and the restart command left for the operator
//! (the one thing HAProxy cannot know), so that `validate` refuses the plan until it is
//! filled in.

use std::fmt::Write as _;

use super::Stop;
use crate::cli::InitArgs;
use crate::exit::Exit;
use crate::haproxy::{ServerView, Snapshot};
use crate::plan::{BackendName, MaxUnavailable, Plan, ServerName};
use crate::report::Printer;

pub fn run(args: &InitArgs, printer: &Printer) -> Result<Exit, Stop> {
    let probe = probe_plan(args, printer)?;
    let runtime = super::live::runtime()?;
    let links = runtime.block_on(super::live::connect(&probe));
    let observations = runtime.block_on(super::live::observe(&probe, &links));
    let snapshot = match &observations[0].state {
        Ok(snapshot) => snapshot,
        Err(error) => {
            printer.failure(&anyhow::anyhow!(
                "cannot read HAProxy at {}: {error}",
                args.socket
            ));
            return Err(Stop::Reported(Exit::PreflightFailed));
        }
    };
    let backends = chosen_backends(snapshot, &args.backends, printer)?;
    if let Some(level) = snapshot
        .level
        .filter(|level| *level != crate::haproxy::Level::Admin)
    {
        printer.warning(&format!(
            "{} is at {} level: a rollout needs `stats socket ... level admin` in the HAProxy configuration",
            args.socket,
            level.as_str()
        ));
    }
    let text = render(args, &probe, snapshot, &backends);
    printer.document(text.as_bytes())?;
    printer.note(&format!(
        "wrote a plan for {} server(s) in {}: fill in restart.command, then `haproxy-rollout plan FILE`",
        servers_of(&backends).len(),
        backends
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Exit::Success)
}

/// The arguments as the smallest plan, validated like any plan (the socket's forms, the
/// names), with every default filled in: what `init` connects with and shows as defaults.
fn probe_plan(args: &InitArgs, printer: &Printer) -> Result<Plan, Stop> {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let mut text = format!(
        "version: 1\nhaproxy:\n  - name: {}\n    socket: {}\nbackends: auto\nservers:\n  - name: probe\n\
         restart:\n  command: \"true\"\n",
        quote(&args.name),
        quote(&args.socket)
    );
    if let Some(user) = &args.ssh_user {
        let _ = writeln!(text, "ssh:\n  user: {}", quote(user));
    }
    crate::plan::parse(&text).map_err(|errors| {
        for error in errors {
            let option = match error.key.as_str() {
                key if key.ends_with(".socket") => "--socket",
                key if key.ends_with(".name") => "--name",
                "ssh.user" => "--ssh-user",
                _ => "the arguments",
            };
            printer.failure(&anyhow::anyhow!(
                "{option}: {}{}",
                error.message,
                error
                    .help
                    .map(|help| format!(" ({help})"))
                    .unwrap_or_default()
            ));
        }
        Stop::Reported(Exit::Usage)
    })
}

/// Each backend that has servers, in HAProxy's order, with its servers in order; only the
/// ones asked for, when some were (each must exist).
fn chosen_backends<'s>(
    snapshot: &'s Snapshot,
    asked: &[String],
    printer: &Printer,
) -> Result<Vec<(String, Vec<&'s ServerView>)>, Stop> {
    let mut found: Vec<(String, Vec<&ServerView>)> = Vec::new();
    for view in &snapshot.servers {
        match found.iter_mut().find(|(name, _)| *name == view.backend) {
            Some((_, servers)) => servers.push(view),
            None => found.push((view.backend.clone(), vec![view])),
        }
    }
    if asked.is_empty() {
        if found.is_empty() {
            printer.failure(&anyhow::anyhow!(
                "this HAProxy has no backend with servers: nothing to write a plan for"
            ));
            return Err(Stop::Reported(Exit::PreflightFailed));
        }
        return Ok(found);
    }
    let mut chosen = Vec::new();
    for name in asked {
        match found.iter().position(|(candidate, _)| candidate == name) {
            Some(index) => chosen.push(found[index].clone()),
            None => {
                let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
                let hint = crate::engine::did_you_mean(name, names.iter().copied());
                printer.failure(&anyhow::anyhow!(
                    "--backend {name}: this HAProxy has no backend {name} with servers (it has: {}){hint}",
                    names.join(", ")
                ));
                return Err(Stop::Reported(Exit::Usage));
            }
        }
    }
    Ok(chosen)
}

/// Every server of the chosen backends, once, in the order HAProxy lists them.
fn servers_of<'s>(backends: &[(String, Vec<&'s ServerView>)]) -> Vec<&'s ServerView> {
    let mut servers: Vec<&ServerView> = Vec::new();
    for (_, views) in backends {
        for view in views {
            if !servers.iter().any(|seen| seen.server == view.server) {
                servers.push(view);
            }
        }
    }
    servers
}

fn render(
    args: &InitArgs,
    probe: &Plan,
    snapshot: &Snapshot,
    backends: &[(String, Vec<&ServerView>)],
) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let duration = |value: std::time::Duration| humantime::format_duration(value).to_string();
    let instance = &probe.haproxy[0];
    let servers = servers_of(backends);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# yaml-language-server: $schema=plan.schema.json\n#\n\
         # Written by `haproxy-rollout init` from HAProxy {} (pid {}) at {}.\n\
         # For editors, write the schema beside it: haproxy-rollout schema > plan.schema.json\n\
         # Keys left commented out take the default shown (docs/plan.md).\n\
         # Next: fill in restart.command, check the hosts, then: haproxy-rollout plan THIS_FILE",
        snapshot.info.version, snapshot.info.pid, args.socket
    );
    let _ = writeln!(out, "version: 1");
    let _ = writeln!(
        out,
        "haproxy:\n  - name: {}\n    socket: {}\n    # timeout: {}\n    # unreachable_timeout: {}",
        quote(&args.name),
        quote(&args.socket),
        duration(instance.timeout),
        duration(instance.unreachable_timeout)
    );
    let valid_backends: Vec<&str> = backends
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| BackendName::new(name).is_ok())
        .collect();
    let same_servers = backends.windows(2).all(|pair| {
        let names = |views: &[&ServerView]| {
            let mut names: Vec<String> = views.iter().map(|view| view.server.clone()).collect();
            names.sort();
            names
        };
        names(&pair[0].1) == names(&pair[1].1)
    });
    if same_servers {
        let _ = writeln!(
            out,
            "# Each server is drained in every one of these and returned to each.\nbackends: [{}]",
            valid_backends.join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "# These backends hold different servers: `auto` drains each server in every backend\n\
             # that has it ({}).\nbackends: auto",
            valid_backends.join(", ")
        );
    }
    for (name, _) in backends {
        if let Err(error) = BackendName::new(name) {
            let _ = writeln!(out, "# left out, backend {name}: {error}");
        }
    }
    let _ = writeln!(
        out,
        "# In the order they are restarted. Each is reached over SSH at its address as HAProxy\n\
         # has it; give `host:` where that is not how to reach its host.\nservers:"
    );
    for view in &servers {
        let place = format!(
            "{}, in {}, {} now",
            crate::report::live::address(view),
            backends
                .iter()
                .filter(|(_, views)| views.iter().any(|other| other.server == view.server))
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            view.status
        );
        match ServerName::new(&view.server) {
            Ok(_) => {
                let _ = writeln!(out, "  - name: {}    # {place}", view.server);
            }
            Err(error) => {
                let _ = writeln!(out, "  # left out, {place}: {error}");
            }
        }
    }
    let ssh = &probe.ssh;
    match &args.ssh_user {
        Some(user) => {
            let _ = writeln!(out, "ssh:\n  user: {}", quote(user));
        }
        None => {
            let _ = writeln!(
                out,
                "# ssh:\n#   user: deploy                    # default: ssh's own"
            );
        }
    }
    let _ = writeln!(
        out,
        "#   port: 22                        # default: ssh's own\n\
         #   identity_file: ~/.ssh/id_ed25519 # default: ssh's own (agent, ~/.ssh/id_*)\n\
         #   known_hosts: {}             # or accept-new; never anything looser\n\
         #   connect_timeout: {}",
        match ssh.known_hosts {
            crate::plan::KnownHosts::Strict => "strict",
            crate::plan::KnownHosts::AcceptNew => "accept-new",
        },
        duration(ssh.connect_timeout)
    );
    let _ = writeln!(
        out,
        "restart:\n  # Fill in: the shell command that restarts the application on its host, run over\n  \
         # SSH, e.g. sudo systemctl restart app (placeholders: {{server}} {{host}} {{addr}} {{port}})\n  \
         command: \"\"\n  # timeout: {}",
        duration(probe.restart.timeout)
    );
    let _ = writeln!(
        out,
        "# health:\n#   url: {}\n#   expect_status: {}\n#   timeout: {}\n#   within: {}",
        probe.health.url.as_str(),
        probe.health.expect_status,
        duration(probe.health.timeout),
        duration(probe.health.within)
    );
    let _ = writeln!(
        out,
        "# drain:\n#   timeout: {}\n#   on_timeout: {}              # or force\n\
         # ready:\n#   timeout: {}",
        duration(probe.drain.timeout),
        match probe.drain.on_timeout {
            crate::plan::OnDrainTimeout::Fail => "fail",
            crate::plan::OnDrainTimeout::Force => "force",
        },
        duration(probe.ready.timeout)
    );
    let max_unavailable = match probe.capacity.max_unavailable {
        MaxUnavailable::Count(count) => count.to_string(),
        other => format!("\"{other}\""),
    };
    let _ = writeln!(
        out,
        "# capacity:\n#   max_unavailable: {max_unavailable}              # a count, or \"10%\"\n\
         #   min_up: {}\n# poll_interval: {}",
        probe.capacity.min_up,
        duration(probe.poll_interval)
    );
    out
}
