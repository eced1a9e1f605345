//! A running rollout for people: progress bars on a terminal (tracing-indicatif), plain
//! timestamped lines otherwise, and the summary table.

use std::time::{Duration, Instant, SystemTime};

use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::*;
use crate::engine::rollout::Stage;
use crate::report::{EMPHASIS, ERROR, OK, Terminal, WARNING};

/// How a running rollout is shown to people.
pub struct HumanRollout<'a> {
    terminal: Terminal,
    plan: &'a Plan,
    /// Progress bars, when stderr is a terminal.
    bars: Option<Bars>,
    /// The host each server's commands run on, by plan index.
    hosts: Vec<String>,
    /// Each server in flight: its stage.
    stages: std::collections::HashMap<String, InStage>,
}

struct Bars {
    overall: tracing::Span,
    /// One line per server in flight, below the overall bar in the order they started.
    servers: std::collections::BTreeMap<String, tracing::Span>,
}

/// The stage a server in flight is in: since when, for how long at most, and why its wait
/// still goes on.
struct InStage {
    stage: Stage,
    since: Instant,
    within: Option<Duration>,
    last: Option<String>,
}

impl InStage {
    /// ` of 10s, last: connection refused`: what a bar shows after the stage's own timer.
    fn bar_message(&self) -> String {
        let mut text = String::new();
        if let Some(within) = self.within {
            text.push_str(&format!(" of {}", humantime::format_duration(within)));
        }
        if let Some(last) = &self.last {
            text.push_str(&format!(", last: {last}"));
        }
        text
    }

    /// ` (at most 10s)`, after the stage's name when it starts.
    fn limit(&self) -> String {
        self.within.map_or_else(String::new, |within| {
            format!(" (at most {})", humantime::format_duration(within))
        })
    }

    /// `2.1s of 10s`: how far into its limit the stage is.
    fn elapsed(&self) -> String {
        let elapsed = format!("{:.1}s", self.since.elapsed().as_secs_f64());
        match self.within {
            Some(within) => format!("{elapsed} of {}", humantime::format_duration(within)),
            None => elapsed,
        }
    }
}

impl<'a> HumanRollout<'a> {
    pub fn new(terminal: Terminal, plan: &'a Plan) -> Self {
        let bars = (terminal.terminal && terminal.quiet == 0).then(|| {
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
        HumanRollout {
            terminal,
            plan,
            bars,
            hosts: plan_hosts(plan),
            stages: std::collections::HashMap::new(),
        }
    }

    fn host_of(&self, server: &str) -> &str {
        host_of(self.plan, &self.hosts, server)
    }

    /// A line for people: above the bars on a terminal, timestamped otherwise.
    fn say(&self, text: &str) {
        if self.terminal.quiet > 0 {
            return;
        }
        if self.bars.is_some() {
            tracing_indicatif::suspend_tracing_indicatif(|| self.terminal.line(text));
        } else {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            self.terminal.line(&format!("{now} {text}"));
        }
    }

    fn report_one(&mut self, report: &Report) {
        match report {
            Report::Stage {
                server,
                stage,
                within,
            } => {
                let in_stage = InStage {
                    stage: *stage,
                    since: Instant::now(),
                    within: *within,
                    last: None,
                };
                if let Some(bars) = &mut self.bars {
                    let span = bars.servers.entry(server.to_string()).or_insert_with(|| {
                        // A root span: its bar goes below the others (a child's would go
                        // right under the overall bar, above the servers started before).
                        let span = tracing::info_span!(parent: None, "server", indicatif.pb_show = tracing::field::Empty);
                        span.pb_start();
                        span
                    });
                    span.pb_set_style(&server_style(&format!("{server}: {}", stage.as_str())));
                    span.pb_reset_elapsed();
                    span.pb_set_message(&in_stage.bar_message());
                } else {
                    self.say(&format!(
                        "{server}: {}{}",
                        stage.as_str(),
                        in_stage.limit()
                    ));
                }
                self.stages.insert(server.to_string(), in_stage);
            }
            Report::Stopping { kind, from, now } => {
                let asked = match *kind {
                    "abort" => format!("abort requested by {from}"),
                    "signal" => format!("{from} received"),
                    // Another rollout took a backend: its warning already said so.
                    _ => return,
                };
                let how = if *now {
                    "stopping now; a server in flight is left out of rotation"
                } else {
                    "stopping at the next safe point (the step in progress finishes first; a second request stops now)"
                };
                self.say(&format!(
                    "{} {asked}: {how}",
                    self.terminal.paint(WARNING, "warning:")
                ));
            }
            Report::Waiting {
                server,
                stage,
                last,
            } => {
                let Some(in_stage) = self
                    .stages
                    .get_mut(server.as_str())
                    .filter(|in_stage| in_stage.stage == *stage)
                else {
                    return;
                };
                in_stage.last = Some(last.clone());
                match &self.bars {
                    Some(bars) => {
                        if let Some(span) = bars.servers.get(server.as_str()) {
                            span.pb_set_message(&in_stage.bar_message());
                        }
                    }
                    None => {
                        let text = format!(
                            "{server}: still {} ({}): {last}",
                            stage.as_str(),
                            in_stage.elapsed()
                        );
                        self.say(&text);
                    }
                }
            }
            Report::SessionsLeft { server, sessions } => match (
                &self.bars,
                self.stages.get_mut(server.as_str()),
            ) {
                (Some(bars), Some(in_stage)) => {
                    in_stage.last = Some(format!("{sessions} session(s) open"));
                    if let Some(span) = bars.servers.get(server.as_str()) {
                        span.pb_set_message(&in_stage.bar_message());
                    }
                }
                (Some(_), None) => {}
                (None, _) => self.say(&format!("{server}: {sessions} session(s) still open")),
            },
            Report::SessionsCut { server, sessions } => {
                self.say(&format!(
                    "{} {server}: drain.timeout passed; shut down {sessions} session(s) (on_timeout: force)",
                    self.terminal.paint(WARNING, "warning:")
                ));
            }
            Report::Verified { server, answer } => {
                self.say(&format!("{server}: verify answers {answer:?}, as expected"));
            }
            Report::Analysis { tallied } => {
                self.say(&format!("canary analysis: {}", tallied_text(tallied)));
            }
            Report::AnalysisVerdict { verdict, tallied } => {
                let verdict = match verdict {
                    CanaryVerdict::Passed => self.terminal.paint(OK, "passed"),
                    CanaryVerdict::Failed | CanaryVerdict::Inconclusive => {
                        self.terminal.paint(ERROR, verdict.as_str())
                    }
                };
                self.say(&format!(
                    "canary analysis {verdict}: {}",
                    tallied_text(tallied)
                ));
            }
            Report::AlreadyCurrent { server, answer } => {
                self.say(&format!(
                    "{server}: already current (verify answers {answer:?}); not touched"
                ));
            }
            Report::Running {
                server,
                answer,
                error,
            } => match (answer, error) {
                (Some(answer), _) => self.say(&format!("{server}: runs {answer:?} now")),
                (None, error) => self.say(&format!(
                    "{} {server}: what it runs could not be read ({}); it is deployed, and a rollback has no previous version for it",
                    self.terminal.paint(WARNING, "warning:"),
                    error.as_deref().unwrap_or("no answer")
                )),
            },
            Report::WaitingForCapacity { server, reason } => {
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
                self.say(&format!(
                    "{} {server}: its {}'s outcome is unknown; {}, and {server} stays out of rotation until then or until {host} shows it ended",
                    self.terminal.paint(WARNING, "warning:"),
                    what.as_str(),
                    may_run_text(&may_run, &host)
                ));
            }
            Report::CommandEnded {
                server,
                what,
                proven,
            } => {
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
                self.say(&format!(
                    "{} {text}",
                    self.terminal.paint(WARNING, "warning:")
                ));
            }
            Report::Found {
                server,
                live,
                decision,
            } => {
                self.say(&format!("{server}: found {live}; {decision}"));
            }
            Report::Unreachable {
                haproxy,
                error,
                timeout,
            } => {
                self.say(&format!(
                    "{} HAProxy {haproxy} is unreachable ({error}); trying again for up to its unreachable_timeout ({}) before the rollout stops",
                    self.terminal.paint(WARNING, "warning:"),
                    humantime::format_duration(*timeout)
                ));
            }
            Report::Reachable { haproxy, after } => {
                self.say(&format!(
                    "HAProxy {haproxy} answers again, after {:.1}s unreachable",
                    after.as_secs_f64()
                ));
            }
            Report::ServerDone { server, timings } => {
                self.stages.remove(server.as_str());
                if let Some(bars) = &mut self.bars {
                    bars.servers.remove(server.as_str());
                    bars.overall.pb_inc(1);
                }
                self.say(&format!(
                    "{} {server} is back: drain {}, restart {}, health {}, HAProxy checks {}",
                    self.terminal.paint(OK, "ok"),
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
                let what = reapplied.as_deref().map_or_else(
                    || "nothing to put back".to_owned(),
                    |text| format!("put back: {text}"),
                );
                self.say(&format!(
                    "{} HAProxy {haproxy} reloaded (new pid {pid}); {what}",
                    self.terminal.paint(WARNING, "warning:")
                ));
            }
            Report::ServerFailed {
                server,
                stage,
                reason,
            } => {
                self.stages.remove(server.as_str());
                if let Some(bars) = &mut self.bars {
                    bars.servers.remove(server.as_str());
                }
                self.say(&format!(
                    "{} {server} ({}): {reason}",
                    self.terminal.paint(ERROR, "failed:"),
                    stage.as_str()
                ));
            }
        }
    }

    /// The final summary: every server, its state now, how long each phase took, and the
    /// commands that restore any server left out of rotation.
    fn finish_with(&mut self, finish: &Finish, elapsed: Duration) {
        self.bars = None;
        let outcome = outcome_text(finish.outcome);
        let printer = self.terminal;
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
                ServerState::Done
                | ServerState::DoneEarlier
                | ServerState::Current
                | ServerState::RolledBack => printer.paint(OK, state),
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
            Outcome::Success => printer.line(&printer.paint(OK, &complete_text(finish, &total))),
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

impl RolloutOutput for HumanRollout<'_> {
    fn set_hosts(&mut self, hosts: Vec<String>) {
        self.hosts = hosts;
    }

    fn report(&mut self, report: &Report) {
        self.report_one(report);
    }

    fn finish(&mut self, finish: &Finish, elapsed: Duration) {
        self.finish_with(finish, elapsed);
    }
}

/// `180 request(s), 3 failed (1.67%), 12s of the 120s window`.
fn tallied_text(tallied: &Tallied) -> String {
    format!(
        "{} request(s), {} failed ({:.2}%), {}s of the {}s window",
        tallied.requests,
        tallied.errors,
        tallied.ratio() * 100.0,
        tallied.elapsed.as_secs(),
        tallied.window.as_secs()
    )
}

/// `rollout complete: 2 server(s) restarted, 1 already current in 4.1s`.
fn complete_text(finish: &Finish, total: &str) -> String {
    let count = |states: &[ServerState]| {
        finish
            .servers
            .iter()
            .filter(|result| states.contains(&result.state))
            .count()
    };
    let rolled_back = count(&[ServerState::RolledBack]);
    if rolled_back > 0 {
        return format!(
            "rollback complete: {rolled_back} server(s) back on what they ran before in {total}"
        );
    }
    let restarted = count(&[ServerState::Done, ServerState::DoneEarlier]);
    let current = count(&[ServerState::Current]);
    let current = if current > 0 {
        format!(", {current} already current")
    } else {
        String::new()
    };
    format!("rollout complete: {restarted} server(s) restarted{current} in {total}")
}

/// A server's bar: `what` (its stage), the stage's own timer, then (in the message) its
/// limit and why it still waits. Server names and stage names hold no braces.
fn server_style(what: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(&format!("  {{spinner}} {what} {{phase}}{{msg}}"))
        .expect("a valid template")
        .with_key(
            "phase",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.1}s", state.elapsed().as_secs_f64());
            },
        )
}
