//! Reports of a running rollout: progress bars on a terminal (tracing-indicatif), plain
//! timestamped lines otherwise, JSON lines on stdout with `--output json`, and the summary.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::OutputFormat;
use super::{EMPHASIS, ERROR, OK, Printer, WARNING};
use crate::engine::rollout::{Finish, MayRun, Outcome, Report, ServerState, Timings};
use crate::plan::Plan;

/// How a running rollout is shown.
pub struct RolloutReporter<'a> {
    printer: &'a Printer,
    plan: &'a Plan,
    /// Progress bars, when stderr is a terminal and the output is for people.
    bars: Option<Bars>,
    /// The host each server's commands run on, by plan index.
    hosts: Vec<String>,
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

fn may_run_json(may_run: &MayRun, host: &str) -> serde_json::Value {
    json!({
        "command": may_run.what.as_str(),
        "host": host,
        "until": humantime::format_rfc3339_millis(wall(may_run.until)).to_string(),
    })
}

struct Bars {
    overall: tracing::Span,
    /// One line per server in flight.
    servers: std::collections::BTreeMap<String, tracing::Span>,
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

fn state_text(state: ServerState) -> &'static str {
    match state {
        ServerState::Untouched => "untouched",
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

impl<'a> RolloutReporter<'a> {
    pub fn new(printer: &'a Printer, plan: &'a Plan) -> Self {
        let bars = printer.progress_bars().then(|| {
            let overall = tracing::info_span!("rollout", indicatif.pb_show = tracing::field::Empty);
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30}] {pos}/{len} servers back {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            overall.pb_set_style(&style);
            overall.pb_set_length(plan.servers.len() as u64);
            overall.pb_start();
            Bars {
                overall,
                servers: std::collections::BTreeMap::new(),
            }
        });
        RolloutReporter {
            printer,
            plan,
            bars,
            hosts: plan
                .servers
                .iter()
                .map(|server| {
                    server
                        .host
                        .as_ref()
                        .map_or_else(|| server.name.to_string(), |host| host.as_str().to_owned())
                })
                .collect(),
        }
    }

    /// The hosts the servers' commands run on (as pre-flight resolved them), by plan index.
    pub fn with_hosts(mut self, hosts: Vec<String>) -> Self {
        self.hosts = hosts;
        self
    }

    fn host_of(&self, server: &str) -> &str {
        host_of(self.plan, &self.hosts, server)
    }

    /// A line for people: above the bars on a terminal, timestamped otherwise.
    fn say(&self, text: &str) {
        if self.printer.format == OutputFormat::Json || self.printer.quiet > 0 {
            return;
        }
        if self.bars.is_some() {
            tracing_indicatif::suspend_tracing_indicatif(|| self.printer.line(text));
        } else {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            self.printer.line(&format!("{now} {text}"));
        }
    }

    fn event(&self, event: &str, fields: serde_json::Value) {
        let mut fields = fields;
        fields["time"] = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .into();
        self.printer.json_event(event, &fields);
    }

    pub fn report(&mut self, report: &Report) {
        match report {
            Report::Stage { server, stage } => {
                self.event(
                    "stage",
                    json!({"server": server.as_str(), "stage": stage.as_str()}),
                );
                if let Some(bars) = &mut self.bars {
                    let span = bars.servers.entry(server.to_string()).or_insert_with(|| {
                        let span = tracing::info_span!(parent: &bars.overall, "server", indicatif.pb_show = tracing::field::Empty);
                        span.pb_set_style(
                            &indicatif::ProgressStyle::with_template("  {spinner} {msg} ({elapsed})").expect("a valid template"),
                        );
                        span.pb_start();
                        span
                    });
                    span.pb_set_message(&format!("{server}: {}", stage.as_str()));
                } else {
                    self.say(&format!("{server}: {}", stage.as_str()));
                }
            }
            Report::SessionsLeft { server, sessions } => {
                self.event(
                    "sessions_left",
                    json!({"server": server.as_str(), "sessions": sessions}),
                );
                match &self.bars {
                    Some(bars) => {
                        if let Some(span) = bars.servers.get(server.as_str()) {
                            span.pb_set_message(&format!(
                                "{server}: waiting for {sessions} session(s) to finish"
                            ));
                        }
                    }
                    None => self.say(&format!("{server}: {sessions} session(s) still open")),
                }
            }
            Report::SessionsCut { server, sessions } => {
                self.event(
                    "sessions_cut",
                    json!({"server": server.as_str(), "sessions": sessions}),
                );
                self.say(&format!(
                    "{} {server}: drain.timeout passed; shut down {sessions} session(s) (on_timeout: force)",
                    self.printer.paint(WARNING, "warning:")
                ));
            }
            Report::WaitingForCapacity { server, reason } => {
                self.event(
                    "waiting_for_capacity",
                    json!({"server": server.as_str(), "reason": reason}),
                );
                self.say(&format!(
                    "{server}: waits for a server in flight to come back ({reason})"
                ));
            }
            Report::CommandMayRun {
                server,
                what,
                until,
            } => {
                let host = self.host_of(server.as_str()).to_owned();
                let may_run = MayRun {
                    what: *what,
                    until: *until,
                };
                let mut fields = may_run_json(&may_run, &host);
                fields["server"] = server.as_str().into();
                self.event("command_may_run", fields);
                self.say(&format!(
                    "{} {server}: its {}'s outcome is unknown; {}, and {server} stays out of rotation until then or until {host} shows it ended",
                    self.printer.paint(WARNING, "warning:"),
                    what.as_str(),
                    may_run_text(&may_run, &host)
                ));
            }
            Report::CommandEnded {
                server,
                what,
                proven,
            } => {
                self.event(
                    "command_ended",
                    json!({"server": server.as_str(), "command": what.as_str(), "proven": proven}),
                );
                let how = if *proven {
                    format!("{} shows it ended", self.host_of(server.as_str()))
                } else {
                    "its remote bound passed".to_owned()
                };
                self.say(&format!(
                    "{server}: its {} can no longer run ({how}); settling it by its health and HAProxy's checks",
                    what.as_str()
                ));
            }
            Report::Warning { text } => {
                self.event("warning", json!({"text": text}));
                self.say(&format!(
                    "{} {text}",
                    self.printer.paint(WARNING, "warning:")
                ));
            }
            Report::Found {
                server,
                live,
                decision,
            } => {
                self.event(
                    "found",
                    json!({"server": server.as_str(), "live": live, "decision": decision}),
                );
                self.say(&format!("{server}: found {live}; {decision}"));
            }
            Report::Unreachable {
                haproxy,
                error,
                timeout,
            } => {
                self.event(
                    "haproxy_unreachable",
                    json!({"haproxy": haproxy, "error": error, "unreachable_timeout_ms": timeout.as_millis()}),
                );
                self.say(&format!(
                    "{} HAProxy {haproxy} is unreachable ({error}); trying again for up to its unreachable_timeout ({}) before the rollout stops",
                    self.printer.paint(WARNING, "warning:"),
                    humantime::format_duration(*timeout)
                ));
            }
            Report::Reachable { haproxy, after } => {
                self.event(
                    "haproxy_reachable",
                    json!({"haproxy": haproxy, "after_ms": after.as_millis()}),
                );
                self.say(&format!(
                    "HAProxy {haproxy} answers again, after {:.1}s unreachable",
                    after.as_secs_f64()
                ));
            }
            Report::ServerDone { server, timings } => {
                self.event(
                    "server_done",
                    json!({"server": server.as_str(), "timings": timings_json(timings)}),
                );
                if let Some(bars) = &mut self.bars {
                    bars.servers.remove(server.as_str());
                    bars.overall.pb_inc(1);
                }
                self.say(&format!(
                    "{} {server} is back: drain {}, restart {}, health {}, HAProxy checks {}",
                    self.printer.paint(OK, "ok"),
                    seconds(timings.draining),
                    seconds(timings.restarting),
                    seconds(timings.health),
                    seconds(timings.haproxy)
                ));
            }
            Report::Reloaded {
                haproxy,
                pid,
                reapplied,
            } => {
                self.event(
                    "reloaded",
                    json!({"haproxy": haproxy, "pid": pid, "reapplied": reapplied}),
                );
                let what = reapplied.as_deref().map_or_else(
                    || "nothing to put back".to_owned(),
                    |text| format!("put back: {text}"),
                );
                self.say(&format!(
                    "{} HAProxy {haproxy} reloaded (new pid {pid}); {what}",
                    self.printer.paint(WARNING, "warning:")
                ));
            }
            Report::ServerFailed {
                server,
                stage,
                reason,
            } => {
                self.event(
                    "server_failed",
                    json!({"server": server.as_str(), "stage": stage.as_str(), "reason": reason}),
                );
                if let Some(bars) = &mut self.bars {
                    bars.servers.remove(server.as_str());
                }
                self.say(&format!(
                    "{} {server} ({}): {reason}",
                    self.printer.paint(ERROR, "failed:"),
                    stage.as_str()
                ));
            }
        }
    }

    /// The final summary: every server, its state now, how long each phase took, and the
    /// commands that restore any server left out of rotation.
    pub fn finish(mut self, finish: &Finish, elapsed: Duration) {
        self.bars = None;
        let outcome = outcome_text(finish.outcome);
        if self.printer.format == OutputFormat::Json {
            self.event(
                "summary",
                summary_json(self.plan, &self.hosts, finish, elapsed),
            );
            return;
        }
        let printer = self.printer;
        printer.line("");
        printer.line(&printer.paint(EMPHASIS, "summary"));
        let width = finish
            .servers
            .iter()
            .map(|result| result.server.as_str().len())
            .max()
            .unwrap_or(0)
            .max("server".len());
        printer.line(&format!(
            "  {:<width$}  {:>7}  {:>7}  {:>7}  {:>7}  state",
            "server", "drain", "restart", "health", "haproxy"
        ));
        for result in &finish.servers {
            let state = state_text(result.state);
            let state = match result.state {
                ServerState::Done | ServerState::DoneEarlier => printer.paint(OK, state),
                ServerState::Untouched => state.to_owned(),
                _ => printer.paint(ERROR, state),
            };
            printer.line(&format!(
                "  {:<width$}  {:>7}  {:>7}  {:>7}  {:>7}  {state}",
                result.server.as_str(),
                seconds(result.timings.draining),
                seconds(result.timings.restarting),
                seconds(result.timings.health),
                seconds(result.timings.haproxy),
            ));
            if let Some(may_run) = &result.may_run {
                printer.line(&format!(
                    "  {:<width$}  {}",
                    "",
                    printer.paint(
                        WARNING,
                        &may_run_text(may_run, self.host_of(result.server.as_str()))
                    )
                ));
            }
            if let Some(cut) = result.sessions_cut {
                printer.line(&format!(
                    "  {:<width$}  {cut} session(s) were shut down at drain.timeout",
                    ""
                ));
            }
            for line in self.restore_lines(&result.restore) {
                printer.line(&format!("  {:<width$}  to return it: {line}", ""));
            }
        }
        let total = format!("{:.1}s", elapsed.as_secs_f64());
        match finish.outcome {
            Outcome::Success => printer.line(&printer.paint(
                OK,
                &format!(
                    "rollout complete: {} server(s) restarted in {total}",
                    finish.servers.len()
                ),
            )),
            Outcome::Failed | Outcome::Interrupted => printer.line(&format!(
                "{} rollout {outcome} after {total}: {}; no further server was touched",
                printer.paint(ERROR, "error:"),
                finish.reason.as_deref().unwrap_or("see above")
            )),
            Outcome::Paused => printer.line(&printer.paint(
                WARNING,
                &format!(
                    "rollout {}, after {total}: check the canaries, then continue with `haproxy-rollout resume PLAN`",
                    finish.reason.as_deref().unwrap_or("paused")
                ),
            )),
        }
    }

    fn restore_lines(&self, commands: &[String]) -> Vec<String> {
        restore_lines(self.plan, commands)
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
                "state": state_text(result.state),
                "timings": timings_json(&result.timings),
                "sessions_cut": result.sessions_cut,
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
