//! The reporter for pipelines: one JSON object per line on stdout, each with its `event`.

use std::path::Path;

use serde_json::json;

use super::live::{StatusRow, address};
use super::rollout::{RolloutOutput, json::JsonRollout};
use super::{Reporter, Terminal, event_line};
use crate::engine::{Preflight, Step, Verdict};
use crate::plan::{Plan, PlanErrors, Server};

pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn failure(&self, message: &str) {
        event_line("error", &json!({"message": message}));
    }

    fn error(&self, _message: &str) {}

    fn plan_valid(&self, file: &Path, plan: &Plan) {
        event_line(
            "plan_valid",
            &json!({
                "file": file,
                "haproxy": plan.haproxy.iter().map(|instance| instance.name.as_str()).collect::<Vec<_>>(),
                "backends": plan.backends.names(),
                "servers": plan.servers.len(),
            }),
        )
    }

    fn plan_errors(&self, report: &PlanErrors) {
        let errors: Vec<_> = report
            .errors
            .iter()
            .map(|error| {
                json!({
                    "line": error.at.line,
                    "column": error.at.column,
                    "key": error.key,
                    "message": error.message,
                    "help": error.help,
                })
            })
            .collect();
        event_line(
            "plan_invalid",
            &json!({"file": report.file, "errors": errors}),
        );
    }

    fn status(&self, rows: &[StatusRow]) {
        for row in rows {
            let mut event = json!({
                "haproxy": row.instance,
                "backend": row.backend,
                "server": row.server,
                "present": row.view.is_some(),
            });
            if let Some(view) = row.view {
                event["admin"] = view.admin_text().into();
                event["admin_state"] = view.admin.0.into();
                event["operational"] = view.operational.as_str().into();
                event["status"] = view.status.clone().into();
                event["check_status"] = view.check_status.clone().into();
                event["sessions"] = view.sessions.into();
                event["weight"] = view.weight.into();
                event["address"] = address(view).into();
                event["in_rotation"] = view.in_rotation().into();
                event["warnings"] = view.warnings().into();
            }
            event_line("server_state", &event);
        }
    }

    fn plan_preview(
        &self,
        file: &Path,
        plan: &Plan,
        preflight: &Preflight,
        steps: &[(&Server, Vec<Step>)],
    ) {
        self.preflight(preflight);
        let would_run = !preflight.blocked();
        let checks = checks_json(preflight);
        let servers: Vec<_> = steps
            .iter()
            .map(|(server, steps)| {
                json!({
                    "server": server.name.as_str(),
                    "steps": steps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        event_line(
            "plan",
            &json!({
                "file": file,
                "would_run": would_run,
                "checks": checks,
                "servers": servers,
                "around": crate::engine::around_the_steps(plan),
            }),
        );
    }

    fn preflight(&self, preflight: &Preflight) {
        let reasons: Vec<&str> = preflight
            .with(Verdict::Blocked)
            .map(|check| check.text.as_str())
            .collect();
        event_line(
            "preflight",
            &json!({
                "outcome": if reasons.is_empty() { "passed" } else { "blocked" },
                "reasons": reasons,
                "checks": checks_json(preflight),
            }),
        );
    }

    fn preflight_failed(&self, reason: &str) {
        event_line(
            "preflight",
            &json!({"outcome": "blocked", "reasons": [reason], "checks": []}),
        );
    }

    fn event(&self, name: &str, fields: &serde_json::Value) {
        event_line(name, fields);
    }

    fn journal_summary(&self, _outcome: &str, summary: &serde_json::Value) {
        event_line("summary", summary);
    }

    fn rollout<'a>(&self, _terminal: Terminal, plan: &'a Plan) -> Box<dyn RolloutOutput + 'a> {
        Box::new(JsonRollout::new(plan))
    }
}

/// Each check of a pre-flight: `{"outcome": "pass" | "warning" | "blocked", "text"}`.
fn checks_json(preflight: &Preflight) -> Vec<serde_json::Value> {
    preflight
        .checks
        .iter()
        .map(|check| {
            let outcome = match check.verdict {
                Verdict::Pass => "pass",
                Verdict::Warning => "warning",
                Verdict::Blocked => "blocked",
            };
            json!({"outcome": outcome, "text": check.text})
        })
        .collect()
}
