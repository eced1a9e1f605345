//! Reports of live state: the `status` table and the `plan` preview.

use std::path::Path;

use serde_json::json;

use super::OutputFormat;
use super::{EMPHASIS, ERROR, OK, Printer, WARNING};
use crate::engine::{Preflight, Step, Verdict};
use crate::haproxy::ServerView;
use crate::plan::{Plan, Server};

/// One plan server in one backend on one HAProxy; `view` is `None` when HAProxy lacks it.
pub struct StatusRow<'a> {
    pub instance: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
    pub view: Option<&'a ServerView>,
}

fn address(view: &ServerView) -> String {
    match view.port {
        Some(port) if view.address.contains(':') => format!("[{}]:{port}", view.address),
        Some(port) => format!("{}:{port}", view.address),
        None => view.address.clone(),
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

impl Printer {
    pub fn status(&self, rows: &[StatusRow]) {
        if self.format == OutputFormat::Json {
            for row in rows {
                let mut event = json!({
                    "event": "server_state",
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
                self.json(&event);
            }
            return;
        }
        let header = [
            "HAPROXY", "BACKEND", "SERVER", "ADMIN", "OP", "STATUS", "CHECK", "SESSIONS", "WEIGHT",
            "ADDRESS",
        ];
        let mut table: Vec<[String; 10]> = vec![header.map(str::to_owned)];
        for row in rows {
            let cells = match row.view {
                Some(view) => [
                    row.instance.to_owned(),
                    row.backend.to_owned(),
                    row.server.to_owned(),
                    view.admin_text(),
                    view.operational.as_str().to_owned(),
                    view.status.clone(),
                    or_dash(&view.check_status).to_owned(),
                    view.sessions.to_string(),
                    view.weight.to_string(),
                    address(view),
                ],
                None => [
                    row.instance.to_owned(),
                    row.backend.to_owned(),
                    row.server.to_owned(),
                    "MISSING".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                ],
            };
            table.push(cells);
        }
        let widths: Vec<usize> = (0..10)
            .map(|column| {
                table
                    .iter()
                    .map(|cells| cells[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (index, cells) in table.iter().enumerate() {
            let line: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let line = line.join("  ").trim_end().to_owned();
            self.out(&if index == 0 {
                self.paint(EMPHASIS, &line)
            } else {
                line
            });
        }
        for row in rows {
            let id = format!("{}: {}/{}", row.instance, row.backend, row.server);
            match row.view {
                None => self.warning(&format!("{id}: HAProxy has no such server in this backend")),
                Some(view) => {
                    for warning in view.warnings() {
                        self.warning(&format!("{id}: {warning}"));
                    }
                }
            }
        }
    }

    pub fn plan_preview(
        &self,
        file: &Path,
        plan: &Plan,
        preflight: &Preflight,
        steps: &[(&Server, Vec<Step>)],
    ) {
        let would_run = !preflight.blocked();
        if self.format == OutputFormat::Json {
            let checks: Vec<_> = preflight
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
                .collect();
            let servers: Vec<_> = steps
                .iter()
                .map(|(server, steps)| {
                    json!({
                        "server": server.name.as_str(),
                        "steps": steps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                })
                .collect();
            self.json(&json!({
                "event": "plan",
                "file": file,
                "would_run": would_run,
                "checks": checks,
                "servers": servers,
            }));
            return;
        }
        self.out(&self.paint(
            EMPHASIS,
            &format!(
                "plan {}: {} server(s), {} HAProxy instance(s), backend(s) {}",
                file.display(),
                plan.servers.len(),
                plan.haproxy.len(),
                plan.backends.names().join(", ")
            ),
        ));
        self.out("");
        self.out(&self.paint(EMPHASIS, "pre-flight (read-only)"));
        for check in &preflight.checks {
            let mark = match check.verdict {
                Verdict::Pass => self.paint(OK, "ok     "),
                Verdict::Warning => self.paint(WARNING, "warning"),
                Verdict::Blocked => self.paint(ERROR, "BLOCKED"),
            };
            self.out(&format!("  {mark} {}", check.text));
        }
        self.out(&format!(
            "  {} ssh: host keys and reachability are not checked by this version (apply is not built yet)",
            self.paint(WARNING, "note   ")
        ));
        self.out("");
        self.out(&self.paint(EMPHASIS, "what apply would run, server by server"));
        for (server, steps) in steps {
            self.out(&format!("  {}", self.paint(EMPHASIS, server.name.as_str())));
            for (number, step) in steps.iter().enumerate() {
                self.out(&format!("    {:>2}. {step}", number + 1));
            }
        }
        self.out("");
        if would_run {
            self.out(&self.paint(OK, "pre-flight passed: apply could start now"));
        } else {
            let blockers = preflight.with(Verdict::Blocked).count();
            self.out(&self.paint(
                ERROR,
                &format!("pre-flight failed: {blockers} problem(s) block the rollout now (marked BLOCKED); nothing was changed"),
            ));
        }
    }
}
