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

impl JsonRollout<'_> {
    /// The event for `report`: its name and fields.
    pub fn event_of(&self, report: &Report) -> (&'static str, serde_json::Value) {
        match report {
            Report::Stage {
                server,
                stage,
                within,
            } => (
                "stage",
                json!({
                    "server": server.as_str(),
                    "stage": stage.key(),
                    "within_ms": within.map(|within| within.as_millis()),
                    "message": stage.as_str(),
                }),
            ),
            Report::Stopping { kind, from, now } => {
                ("stopping", json!({"cause": kind, "from": from, "now": now}))
            }
            Report::Waiting {
                server,
                stage,
                last,
            } => (
                "waiting",
                json!({"server": server.as_str(), "stage": stage.key(), "last": last}),
            ),
            Report::SessionsLeft { server, sessions } => (
                "sessions_left",
                json!({"server": server.as_str(), "sessions": sessions}),
            ),
            Report::SessionsCut { server, sessions } => (
                "sessions_cut",
                json!({"server": server.as_str(), "sessions": sessions}),
            ),
            Report::Verified { server, answer } => (
                "verified",
                json!({"server": server.as_str(), "answer": answer}),
            ),
            Report::Analysis { tallied } => ("analysis", tallied_json(tallied)),
            Report::AnalysisVerdict { verdict, tallied } => {
                let mut fields = tallied_json(tallied);
                fields["verdict"] = verdict.as_str().into();
                ("analysis_verdict", fields)
            }
            Report::AlreadyCurrent { server, answer } => (
                "already_current",
                json!({"server": server.as_str(), "answer": answer}),
            ),
            Report::Running {
                server,
                answer,
                error,
            } => (
                "running",
                json!({"server": server.as_str(), "answer": answer, "error": error}),
            ),
            Report::WaitingForCapacity { server, reason } => (
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
                ("command_may_run", fields)
            }
            Report::CommandEnded {
                server,
                what,
                proven,
            } => (
                "command_ended",
                json!({"server": server.as_str(), "command": what.key(), "proven": proven}),
            ),
            Report::Warning { text } => ("warning", json!({"text": text})),
            Report::Found {
                server,
                live,
                decision,
            } => (
                "found",
                json!({"server": server.as_str(), "live": live, "decision": decision}),
            ),
            Report::Unreachable {
                haproxy,
                error,
                timeout,
            } => (
                "haproxy_unreachable",
                json!({"haproxy": haproxy, "error": error, "unreachable_timeout_ms": timeout.as_millis()}),
            ),
            Report::Reachable { haproxy, after } => (
                "haproxy_reachable",
                json!({"haproxy": haproxy, "after_ms": after.as_millis()}),
            ),
            Report::ServerDone { server, timings } => (
                "server_done",
                json!({"server": server.as_str(), "timings": timings_json(timings)}),
            ),
            Report::Reloaded {
                haproxy,
                pid,
                reapplied,
            } => (
                "reloaded",
                json!({"haproxy": haproxy, "pid": pid, "reapplied": reapplied}),
            ),
            Report::ServerFailed {
                server,
                stage,
                reason,
            } => (
                "server_failed",
                json!({"server": server.as_str(), "stage": stage.key(), "reason": reason}),
            ),
        }
    }

    /// The last event: the summary.
    pub fn summary_of(&self, finish: &Finish, elapsed: Duration) -> serde_json::Value {
        summary_json(self.plan, &self.hosts, finish, elapsed)
    }
}

impl RolloutOutput for JsonRollout<'_> {
    fn set_hosts(&mut self, hosts: Vec<String>) {
        self.hosts = hosts;
    }

    fn report(&mut self, report: &Report) {
        let (name, fields) = self.event_of(report);
        self.event(name, fields);
    }

    fn finish(&mut self, finish: &Finish, elapsed: Duration) {
        self.event("summary", self.summary_of(finish, elapsed));
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
