//! The reporter for people: results on stdout, problems on stderr, in color when wanted.

use std::path::Path;

use super::live::{StatusRow, address, or_dash};
use super::rollout::{RolloutOutput, human::HumanRollout};
use super::{EMPHASIS, ERROR, GUTTER, OK, Reporter, Terminal, WARNING};
use crate::engine::{Preflight, Step, Verdict};
use crate::plan::{Plan, PlanErrors, Server};

pub struct HumanReporter {
    pub terminal: Terminal,
}

impl std::ops::Deref for HumanReporter {
    type Target = Terminal;

    fn deref(&self) -> &Terminal {
        &self.terminal
    }
}

impl Reporter for HumanReporter {
    fn failure(&self, message: &str) {
        self.error(message);
    }

    fn error(&self, message: &str) {
        self.line(&format!("{} {message}", self.paint(ERROR, "error:")));
    }

    fn plan_valid(&self, file: &Path, plan: &Plan) {
        if self.quiet > 0 {
            return;
        }
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let names = |names: Vec<&str>| names.join(", ");
        self.line(&format!(
            "{} {}: {} ({}), {} ({}), {}",
            self.paint(OK, "valid:"),
            file.display(),
            count(plan.haproxy.len(), "HAProxy", "HAProxy instances"),
            names(
                plan.haproxy
                    .iter()
                    .map(|instance| instance.name.as_str())
                    .collect()
            ),
            count(plan.backends.names().len(), "backend", "backends"),
            names(plan.backends.names()),
            count(plan.servers.len(), "server", "servers"),
        ));
    }

    fn plan_errors(&self, report: &PlanErrors) {
        self.line(&render_plan_errors(&self.terminal, report));
    }

    fn status(&self, rows: &[StatusRow]) {
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

    fn plan_preview(
        &self,
        file: &Path,
        plan: &Plan,
        preflight: &Preflight,
        steps: &[(&Server, Vec<Step>)],
    ) {
        let would_run = !preflight.blocked();
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
        // What blocks first, then warnings, then what passed.
        let mut checks: Vec<_> = preflight.checks.iter().collect();
        checks.sort_by_key(|check| std::cmp::Reverse(check.verdict));
        for check in checks {
            let mark = match check.verdict {
                Verdict::Pass => self.paint(OK, "ok     "),
                Verdict::Warning => self.paint(WARNING, "warning"),
                Verdict::Blocked => self.paint(ERROR, "BLOCKED"),
            };
            self.out(&format!("  {mark} {}", check.text));
        }
        self.out("");
        if !would_run && self.verbose == 0 {
            // What blocks matters first; the steps would bury it (hundreds of lines).
            self.out("  (what apply would run, server by server, is listed with -v)");
            return self.blocked_summary(preflight);
        }
        self.out(&self.paint(EMPHASIS, "what apply would run, server by server"));
        for (server, steps) in steps {
            self.out(&format!("  {}", self.paint(EMPHASIS, server.name.as_str())));
            for (number, step) in steps.iter().enumerate() {
                self.out(&format!("    {:>2}. {step}", number + 1));
            }
        }
        for note in crate::engine::around_the_steps(plan) {
            self.out(&format!("  {note}"));
        }
        self.out("");
        if would_run {
            self.out(&self.paint(OK, "pre-flight passed: apply could start now"));
        } else {
            self.blocked_summary(preflight);
        }
    }

    fn event(&self, _name: &str, _fields: &serde_json::Value) {}

    fn preflight(&self, _preflight: &Preflight) {}

    fn preflight_failed(&self, _reason: &str) {}

    fn journal_summary(&self, outcome: &str, summary: &serde_json::Value) {
        self.note(&format!("the rollout ended: {outcome}"));
        for server in summary["servers"].as_array().into_iter().flatten() {
            self.note(&format!(
                "  {}: {}",
                server["server"].as_str().unwrap_or("?"),
                // Older journals have only the prose, as `state`.
                server["message"]
                    .as_str()
                    .or(server["state"].as_str())
                    .unwrap_or("?")
            ));
            for line in server["restore"].as_array().into_iter().flatten() {
                self.note(&format!(
                    "      to return it: {}",
                    line.as_str().unwrap_or("")
                ));
            }
        }
    }

    fn rollout<'a>(&self, terminal: Terminal, plan: &'a Plan) -> Box<dyn RolloutOutput + 'a> {
        Box::new(HumanRollout::new(terminal, plan))
    }
}

/// Each error with its location, the line it points at, and what would be valid.
pub fn render_plan_errors(terminal: &Terminal, report: &PlanErrors) -> String {
    let mut out = String::new();
    let file = report.file.display();
    let width = report
        .errors
        .iter()
        .map(|error| error.at.line.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    for error in &report.errors {
        let key = if error.key.is_empty() {
            String::new()
        } else {
            format!("{}: ", terminal.paint(EMPHASIS, &error.key))
        };
        out.push_str(&format!(
            "{} {file}:{}:{}: {key}{}\n",
            terminal.paint(ERROR, "error:"),
            error.at.line,
            error.at.column,
            error.message
        ));
        if let Some(source) = report.source_line(error) {
            let caret_at = usize::try_from(error.at.column.saturating_sub(1)).unwrap_or(0);
            let indent: String = source
                .chars()
                .take(caret_at)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let bar = terminal.paint(GUTTER, "|");
            out.push_str(&format!("{pad} {bar}\n"));
            out.push_str(&format!(
                "{} {bar} {source}\n",
                terminal.paint(GUTTER, &format!("{:>width$}", error.at.line))
            ));
            out.push_str(&format!(
                "{pad} {bar} {indent}{}\n",
                terminal.paint(ERROR, "^")
            ));
        }
        if let Some(help) = &error.help {
            out.push_str(&format!(
                "{pad} {} help: {help}\n",
                terminal.paint(GUTTER, "=")
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!("{}: {report}", terminal.paint(ERROR, "error")));
    out
}

impl HumanReporter {
    /// The closing lines of a blocked preview: every reason again, where the eye lands.
    fn blocked_summary(&self, preflight: &Preflight) {
        let blockers: Vec<&str> = preflight
            .with(Verdict::Blocked)
            .map(|check| check.text.as_str())
            .collect();
        self.out(&self.paint(
            ERROR,
            &format!(
                "pre-flight failed: {} problem(s) block the rollout now; nothing was changed:",
                blockers.len()
            ),
        ));
        for text in blockers {
            self.out(&format!("  - {text}"));
        }
    }
}
