//! Output: text for people on stderr, JSON objects (one per line) on stdout.
//!
//! Commands never print directly; they hand what happened to the `Printer`, which knows the
//! output format and whether color is wanted.

pub mod live;
pub mod rollout;

use std::io::{IsTerminal, Write};
use std::path::Path;

use anstyle::{AnsiColor, Style};
use serde_json::json;

use crate::plan::{Plan, PlanErrors};

pub(crate) const ERROR: Style = AnsiColor::Red.on_default().bold();
pub(crate) const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub(crate) const OK: Style = AnsiColor::Green.on_default().bold();
pub(crate) const EMPHASIS: Style = Style::new().bold();
const GUTTER: Style = AnsiColor::Blue.on_default().bold();

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
/// `--output`: text for people, or one JSON object per line on stdout.
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
/// `--color`.
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub struct Printer {
    pub format: OutputFormat,
    pub color: bool,
    /// 0 normal, 1 warnings and errors, 2 errors only.
    pub quiet: u8,
    /// stderr is a terminal.
    pub terminal: bool,
}

/// Whether to color stderr: `--color` first, then NO_COLOR, then whether it is a terminal.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            !no_color && std::io::stderr().is_terminal()
        }
    }
}

impl Printer {
    pub fn new(format: OutputFormat, color: ColorChoice, quiet: u8) -> Self {
        Printer {
            format,
            color: use_color(color),
            quiet,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Progress bars only for people watching a terminal.
    pub fn progress_bars(&self) -> bool {
        self.terminal && self.format == OutputFormat::Human && self.quiet == 0
    }

    pub(crate) fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    /// One JSON object on its own line on stdout.
    pub fn json(&self, value: &serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) is not worth a panic.
        let _ = writeln!(stdout, "{value}");
    }

    /// An event as one JSON line, in JSON mode only.
    pub fn json_event(&self, event: &str, fields: &serde_json::Value) {
        if self.format == OutputFormat::Json {
            let mut object = serde_json::Map::new();
            object.insert("event".to_owned(), event.into());
            if let serde_json::Value::Object(fields) = fields {
                object.extend(fields.clone());
            }
            self.json(&serde_json::Value::Object(object));
        }
    }

    /// A line for people on stdout: the result a command was asked for.
    pub(crate) fn out(&self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// A question for the operator on stderr, the answer to follow on the same line.
    pub fn question(&self, text: &str) -> std::io::Result<()> {
        let mut stderr = std::io::stderr().lock();
        write!(stderr, "{text}")?;
        stderr.flush()
    }

    /// A line for people on stderr.
    pub(crate) fn line(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    pub fn error(&self, message: &str) {
        if self.format == OutputFormat::Json {
            return;
        }
        self.line(&format!("{} {message}", self.paint(ERROR, "error:")));
    }

    /// Something worth knowing that is not a problem.
    pub fn note(&self, message: &str) {
        if self.quiet == 0 {
            self.line(message);
        }
    }

    pub fn warning(&self, message: &str) {
        if self.quiet < 2 {
            self.line(&format!("{} {message}", self.paint(WARNING, "warning:")));
        }
    }

    /// An error and its chain of causes.
    pub fn failure(&self, error: &anyhow::Error) {
        let mut message = error.to_string();
        for cause in error.chain().skip(1) {
            message.push_str(&format!(": {cause}"));
        }
        match self.format {
            OutputFormat::Json => self.json(&json!({"event": "error", "message": message})),
            OutputFormat::Human => self.error(&message),
        }
    }

    pub fn plan_valid(&self, file: &Path, plan: &Plan) {
        match self.format {
            OutputFormat::Json => self.json(&json!({
                "event": "plan_valid",
                "file": file,
                "haproxy": plan.haproxy.iter().map(|instance| instance.name.as_str()).collect::<Vec<_>>(),
                "backends": plan.backends.names(),
                "servers": plan.servers.len(),
            })),
            OutputFormat::Human if self.quiet == 0 => {
                let count = |n: usize, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                let names = |names: Vec<&str>| names.join(", ");
                self.line(&format!(
                    "{} {}: {} ({}), {} ({}), {}",
                    self.paint(OK, "valid:"),
                    file.display(),
                    count(plan.haproxy.len(), "HAProxy", "HAProxy instances"),
                    names(plan.haproxy.iter().map(|instance| instance.name.as_str()).collect()),
                    count(plan.backends.names().len(), "backend", "backends"),
                    names(plan.backends.names()),
                    count(plan.servers.len(), "server", "servers"),
                ));
            }
            OutputFormat::Human => {}
        }
    }

    pub fn plan_errors(&self, report: &PlanErrors) {
        match self.format {
            OutputFormat::Json => {
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
                self.json(&json!({"event": "plan_invalid", "file": report.file, "errors": errors}));
            }
            OutputFormat::Human => self.line(&self.render_plan_errors(report)),
        }
    }

    /// Each error with its location, the line it points at, and what would be valid.
    pub fn render_plan_errors(&self, report: &PlanErrors) -> String {
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
                format!("{}: ", self.paint(EMPHASIS, &error.key))
            };
            out.push_str(&format!(
                "{} {file}:{}:{}: {key}{}\n",
                self.paint(ERROR, "error:"),
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
                let bar = self.paint(GUTTER, "|");
                out.push_str(&format!("{pad} {bar}\n"));
                out.push_str(&format!(
                    "{} {bar} {source}\n",
                    self.paint(GUTTER, &format!("{:>width$}", error.at.line))
                ));
                out.push_str(&format!("{pad} {bar} {indent}{}\n", self.paint(ERROR, "^")));
            }
            if let Some(help) = &error.help {
                out.push_str(&format!("{pad} {} help: {help}\n", self.paint(GUTTER, "=")));
            }
            out.push('\n');
        }
        out.push_str(&format!("{}: {report}", self.paint(ERROR, "error")));
        out
    }
}
