//! A running rollout for pipelines: one event per line on stdout, each with its time, and
//! the summary as the last.

use std::time::Duration;

use super::*;
use crate::report::event_line;

pub struct JsonRollout<'a> {
    plan: &'a Plan,
    /// The host each server's commands run on, by plan index.
    hosts: Vec<String>,
}

impl<'a> JsonRollout<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        JsonRollout {
            plan,
            hosts: plan_hosts(plan),
        }
    }

    fn event(&self, event: &str, fields: serde_json::Value) {
        event_line(event, &fields);
    }
}

impl RolloutOutput for JsonRollout<'_> {
    fn set_hosts(&mut self, hosts: Vec<String>) {
        self.hosts = hosts;
    }

    fn report(&mut self, report: &Report) {
        match report {
            Report::Stage {
                server,
                stage,
                within,
            } => self.event(
                "stage",
                json!({
                    "server": server.as_str(),
                    "stage": stage.key(),
                    "within_ms": within.map(|within| within.as_millis()),
                    "message": stage.as_str(),
                }),
            ),
            Report::Stopping { kind, from, now } => self.event(
                "stopping",
                json!({"cause": kind, "from": from, "now": now}),
            ),
            Report::Waiting {
                server,
                stage,
                last,
            } => self.event(
                "waiting",
                json!({"server": server.as_str(), "stage": stage.key(), "last": last}),
            ),
            Report::SessionsLeft { server, sessions } => self.event(
                "sessions_left",
                json!({"server": server.as_str(), "sessions": sessions}),
            ),
            Report::SessionsCut { server, sessions } => self.event(
                "sessions_cut",
                json!({"server": server.as_str(), "sessions": sessions}),
            ),
            Report::Verified { server, answer } => self.event(
                "verified",
                json!({"server": server.as_str(), "answer": answer}),
            ),
            Report::Analysis { tallied } => self.event("analysis", tallied_json(tallied)),
            Report::AnalysisVerdict { verdict, tallied } => {
                let mut fields = tallied_json(tallied);
                fields["verdict"] = verdict.as_str().into();
                self.event("analysis_verdict", fields);
            }
            Report::AlreadyCurrent { server, answer } => self.event(
                "already_current",
                json!({"server": server.as_str(), "answer": answer}),
            ),
            Report::Running {
                server,
                answer,
                error,
            } => self.event(
                "running",
                json!({"server": server.as_str(), "answer": answer, "error": error}),
            ),
            Report::WaitingForCapacity { server, reason } => self.event(
                "waiting_for_capacity",
                json!({"server": server.as_str(), "reason": reason}),
            ),
            Report::CommandMayRun {
                server,
                what,
                until,
            } => {
                let host = host_of(self.plan, &self.hosts, server.as_str());
                let may_run = MayRun {
                    what: *what,
                    until: *until,
                };
                let mut fields = may_run_json(&may_run, host);
                fields["server"] = server.as_str().into();
                self.event("command_may_run", fields);
            }
            Report::CommandEnded {
                server,
                what,
                proven,
            } => self.event(
                "command_ended",
                json!({"server": server.as_str(), "command": what.key(), "proven": proven}),
            ),
            Report::Warning { text } => self.event("warning", json!({"text": text})),
            Report::Found {
                server,
                live,
                decision,
            } => self.event(
                "found",
                json!({"server": server.as_str(), "live": live, "decision": decision}),
            ),
            Report::Unreachable {
                haproxy,
                error,
                timeout,
            } => self.event(
                "haproxy_unreachable",
                json!({"haproxy": haproxy, "error": error, "unreachable_timeout_ms": timeout.as_millis()}),
            ),
            Report::Reachable { haproxy, after } => self.event(
                "haproxy_reachable",
                json!({"haproxy": haproxy, "after_ms": after.as_millis()}),
            ),
            Report::ServerDone { server, timings } => self.event(
                "server_done",
                json!({"server": server.as_str(), "timings": timings_json(timings)}),
            ),
            Report::Reloaded {
                haproxy,
                pid,
                reapplied,
            } => self.event(
                "reloaded",
                json!({"haproxy": haproxy, "pid": pid, "reapplied": reapplied}),
            ),
            Report::ServerFailed {
                server,
                stage,
                reason,
            } => self.event(
                "server_failed",
                json!({"server": server.as_str(), "stage": stage.key(), "reason": reason}),
            ),
        }
    }

    fn finish(&mut self, finish: &Finish, elapsed: Duration) {
        self.event(
            "summary",
            summary_json(self.plan, &self.hosts, finish, elapsed),
        );
    }
}

fn tallied_json(tallied: &Tallied) -> serde_json::Value {
    json!({
        "requests": tallied.requests,
        "errors": tallied.errors,
        "ratio": tallied.ratio(),
        "elapsed_ms": tallied.elapsed.as_millis(),
        "window_ms": tallied.window.as_millis(),
    })
}
