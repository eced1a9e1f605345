//! Reports of a running rollout, in the format `--output` chose (`human.rs`: bars or
//! timestamped lines and a summary table; `json.rs`: one event per line), and what both
//! share: texts of states and outcomes, the summary as data, restore commands.

pub mod human;
pub mod json;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::Printer;
use crate::engine::rollout::{
    CanaryVerdict, Finish, MayRun, Outcome, Report, ServerState, Tallied, Timings,
};
use crate::plan::Plan;

/// One running rollout's reporter, in one format.
pub trait RolloutOutput {
    /// The hosts the servers' commands run on (as pre-flight resolved them), by plan index.
    fn set_hosts(&mut self, hosts: Vec<String>);
    fn report(&mut self, report: &Report);
    /// The final summary: every server, its state now, how long each phase took, and the
    /// commands that restore any server left out of rotation.
    fn finish(&mut self, finish: &Finish, elapsed: Duration);
}

/// How a running rollout is shown, in the format the printer was given, and drawn when
/// asked (`--timeline`).
pub struct RolloutReporter<'a> {
    output: Box<dyn RolloutOutput + 'a>,
    timeline: Option<Timeline<'a>>,
}

/// The events of the run, kept to draw its picture at the end (`--timeline FILE`).
struct Timeline<'a> {
    file: std::path::PathBuf,
    json: json::JsonRollout<'a>,
    events: Vec<serde_json::Value>,
}

impl<'a> RolloutReporter<'a> {
    pub fn new(printer: &Printer, plan: &'a Plan) -> Self {
        RolloutReporter {
            output: printer.rollout(plan),
            timeline: None,
        }
    }

    /// The hosts the servers' commands run on (as pre-flight resolved them), by plan index.
    pub fn with_hosts(mut self, hosts: Vec<String>) -> Self {
        if let Some(timeline) = &mut self.timeline {
            timeline.json.set_hosts(hosts.clone());
        }
        self.output.set_hosts(hosts);
        self
    }

    /// Draws the rollout into `file` (SVG) when it ends.
    pub fn with_timeline(mut self, file: Option<std::path::PathBuf>, plan: &'a Plan) -> Self {
        self.timeline = file.map(|file| Timeline {
            file,
            json: json::JsonRollout::new(plan),
            events: Vec::new(),
        });
        self
    }

    pub fn report(&mut self, report: &Report) {
        if let Some(timeline) = &mut self.timeline {
            let (name, fields) = timeline.json.event_of(report);
            timeline
                .events
                .push(crate::report::event_object(name, &fields));
        }
        self.output.report(report);
    }

    pub fn finish(mut self, finish: &Finish, elapsed: Duration) {
        self.output.finish(finish, elapsed);
        if let Some(mut timeline) = self.timeline.take() {
            let summary = timeline.json.summary_of(finish, elapsed);
            timeline
                .events
                .push(crate::report::event_object("summary", &summary));
            let written = crate::report::timeline::svg(&timeline.events)
                .map_err(std::io::Error::other)
                .and_then(|svg| std::fs::write(&timeline.file, svg));
            match written {
                Ok(()) => tracing::info!("timeline written to {}", timeline.file.display()),
                Err(error) => tracing::warn!(
                    "cannot write the timeline to {}: {error}",
                    timeline.file.display()
                ),
            }
        }
    }
}

/// The host of each server as the plan names it, before pre-flight resolved them.
fn plan_hosts(plan: &Plan) -> Vec<String> {
    plan.servers
        .iter()
        .map(|server| {
            server
                .host
                .as_ref()
                .map_or_else(|| server.name.to_string(), |host| host.as_str().to_owned())
        })
        .collect()
}

/// The wall-clock time of an engine instant.
fn wall(instant: Instant) -> SystemTime {
    let now = Instant::now();
    if instant >= now {
        SystemTime::now() + (instant - now)
    } else {
        SystemTime::now() - (now - instant)
    }
}

/// `HH:MM:SS UTC`, for people.
fn time_of_day(instant: Instant) -> String {
    let text = humantime::format_rfc3339_seconds(wall(instant)).to_string();
    format!("{} UTC", text.get(11..19).unwrap_or(&text))
}

/// `the restart may still be running on HOST until HH:MM:SS UTC`.
pub fn may_run_text(may_run: &MayRun, host: &str) -> String {
    format!(
        "the {} may still be running on {host} until {}",
        may_run.what.as_str(),
        time_of_day(may_run.until)
    )
}

pub(super) fn may_run_json(may_run: &MayRun, host: &str) -> serde_json::Value {
    json!({
        "command": may_run.what.key(),
        "host": host,
        "until": humantime::format_rfc3339_millis(wall(may_run.until)).to_string(),
    })
}

fn millis(duration: Option<Duration>) -> Option<u128> {
    duration.map(|duration| duration.as_millis())
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |duration| format!("{:.1}s", duration.as_secs_f64()),
    )
}

fn timings_json(timings: &Timings) -> serde_json::Value {
    json!({
        "draining_ms": millis(timings.draining),
        "restarting_ms": millis(timings.restarting),
        "health_ms": millis(timings.health),
        "haproxy_ms": millis(timings.haproxy),
    })
}

/// A server's state at the end, as pipelines read it (docs/events.md).
pub fn state_key(state: ServerState) -> &'static str {
    match state {
        ServerState::Untouched => "untouched",
        ServerState::Current => "current",
        ServerState::RolledBack => "rolled_back",
        ServerState::Done => "done",
        ServerState::DoneEarlier => "done_earlier",
        ServerState::BackRestartUnknown => "back_restart_unknown",
        ServerState::ReturnedUnrestarted => "returned_unrestarted",
        ServerState::OutOfRotation => "out_of_rotation",
        ServerState::Unknown => "unknown",
        ServerState::Skipped {
            out_of_rotation: false,
        } => "skipped",
        ServerState::Skipped {
            out_of_rotation: true,
        } => "skipped_out_of_rotation",
    }
}

fn state_text(state: ServerState) -> &'static str {
    match state {
        ServerState::Untouched => "untouched",
        ServerState::Current => "already current, not touched",
        ServerState::RolledBack => "rolled back to what it ran before, back in traffic (UP)",
        ServerState::Done => "restarted, back in traffic (UP)",
        ServerState::DoneEarlier => "restarted earlier in this rollout",
        ServerState::BackRestartUnknown => {
            "back in traffic (UP), healthy; whether the restart ran is UNKNOWN"
        }
        ServerState::ReturnedUnrestarted => "back in traffic, NOT restarted",
        ServerState::OutOfRotation => "OUT OF ROTATION (maintenance)",
        ServerState::Unknown => "UNKNOWN: check with `haproxy-rollout status`",
        ServerState::Skipped {
            out_of_rotation: false,
        } => "skipped (--skip), not touched",
        ServerState::Skipped {
            out_of_rotation: true,
        } => "skipped (--skip), not touched, OUT OF ROTATION",
    }
}

/// The summary as data: for `--output json` and for the journal's last record.
pub fn summary_json(
    plan: &Plan,
    hosts: &[String],
    finish: &Finish,
    elapsed: Duration,
) -> serde_json::Value {
    let servers: Vec<_> = finish
        .servers
        .iter()
        .map(|result| {
            json!({
                "server": result.server.as_str(),
                "state": state_key(result.state),
                "message": state_text(result.state),
                "timings": timings_json(&result.timings),
                "sessions_cut": result.sessions_cut,
                // What verify read before this run touched it: what a rollback restores.
                "previous": result.previous,
                "restore": restore_lines(plan, &result.restore),
                "may_still_run": result.may_run.map(|may_run| {
                    may_run_json(&may_run, host_of(plan, hosts, result.server.as_str()))
                }),
            })
        })
        .collect();
    json!({
        "outcome": outcome_text(finish.outcome),
        "reason": finish.reason,
        "elapsed_ms": elapsed.as_millis(),
        "servers": servers,
    })
}

pub fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "interrupted",
        Outcome::Paused => "paused",
    }
}

fn host_of<'h>(plan: &Plan, hosts: &'h [String], server: &str) -> &'h str {
    plan.servers
        .iter()
        .position(|candidate| candidate.name.as_str() == server)
        .and_then(|index| hosts.get(index))
        .map_or("its host", String::as_str)
}

/// Each restore command as a shell line an operator can paste, per HAProxy.
fn restore_lines(plan: &Plan, commands: &[String]) -> Vec<String> {
    plan.haproxy
        .iter()
        .flat_map(|instance| {
            commands
                .iter()
                .map(|command| runtime_api_line(&instance.socket, command))
        })
        .collect()
}

/// `command` sent to the runtime API at `socket` with nothing but `socat` (and `ssh`), as a
/// shell line an operator can paste.
pub fn runtime_api_line(socket: &crate::plan::SocketAddress, command: &str) -> String {
    match socket {
        crate::plan::SocketAddress::Unix(path) => {
            format!(
                "echo '{command}' | socat stdio unix-connect:{}",
                path.display()
            )
        }
        crate::plan::SocketAddress::Tcp { host, port } => {
            format!("echo '{command}' | socat stdio tcp:{host}:{port}")
        }
        crate::plan::SocketAddress::Ssh {
            user,
            host,
            port,
            path,
        } => {
            let target = user
                .as_ref()
                .map_or_else(|| host.clone(), |user| format!("{user}@{host}"));
            let port = port.map_or_else(String::new, |port| format!(" -p {port}"));
            format!(
                "echo '{command}' | ssh{port} {target} socat stdio unix-connect:{}",
                path.display()
            )
        }
    }
}
