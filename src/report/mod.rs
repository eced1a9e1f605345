//! Output, the only place that prints. Lines for people go to stderr (`Terminal`: notes,
//! warnings, questions) whatever the format. What a command reports goes to one reporter,
//! chosen once from `--output`: text for people (`human.rs`) or one JSON object per line on
//! stdout (`json.rs`); each writes its one format, so no event asks which format is on.

pub mod human;
pub mod json;
pub mod live;
pub mod log;
pub mod rollout;
pub mod timeline;

use std::io::{IsTerminal, Write};
use std::path::Path;

use anstyle::{AnsiColor, Style};

use crate::engine::{Preflight, Step};
use crate::plan::{Plan, PlanErrors, Server};
use live::StatusRow;
use rollout::RolloutOutput;

pub(crate) const ERROR: Style = AnsiColor::Red.on_default().bold();
pub(crate) const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub(crate) const OK: Style = AnsiColor::Green.on_default().bold();
pub(crate) const EMPHASIS: Style = Style::new().bold();
pub(crate) const GUTTER: Style = AnsiColor::Blue.on_default().bold();

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

/// The version of the JSON event stream (docs/events.md): every line carries it as `"v"`.
/// It changes only when a field pipelines read changes meaning or goes away; new events
/// and new fields keep it.
pub const EVENTS_VERSION: u64 = 1;

/// `{"v": 1, "event": name, "time": now, ...fields}` on its own line on stdout.
pub(crate) fn event_line(name: &str, fields: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(stdout, "{}", event_object(name, fields));
}

/// `{"v": 1, "event": name, "time": now, ...fields}`: one event as docs/events.md has it.
pub(crate) fn event_object(name: &str, fields: &serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("v".to_owned(), EVENTS_VERSION.into());
    object.insert("event".to_owned(), name.into());
    object.insert(
        "time".to_owned(),
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .into(),
    );
    if let serde_json::Value::Object(fields) = fields {
        object.extend(fields.clone());
    }
    serde_json::Value::Object(object)
}

/// What a command reports, in one format.
pub trait Reporter {
    /// An error that ends the command, with its chain of causes.
    fn failure(&self, message: &str);
    /// An error worth a line for people (nothing on the JSON stream).
    fn error(&self, message: &str);
    fn plan_valid(&self, file: &Path, plan: &Plan);
    fn plan_errors(&self, report: &PlanErrors);
    fn status(&self, rows: &[StatusRow]);
    fn plan_preview(
        &self,
        file: &Path,
        plan: &Plan,
        preflight: &Preflight,
        steps: &[(&Server, Vec<Step>)],
    );
    /// The outcome of a pre-flight, for pipelines (people read it from the lines around).
    fn preflight(&self, preflight: &Preflight);
    /// A pre-flight that failed outside the checks (SSH, an unreachable HAProxy).
    fn preflight_failed(&self, reason: &str);
    /// A fact for pipelines (`status`'s rollout state, `at_rest`): a JSON event, nothing
    /// for people (who read the same fact from the table and the warnings).
    fn event(&self, name: &str, fields: &serde_json::Value);
    /// How a rollout that another process ran ended, from its journal.
    fn journal_summary(&self, outcome: &str, summary: &serde_json::Value);
    /// The reporter of one running rollout, in the same format.
    fn rollout<'a>(&self, terminal: Terminal, plan: &'a Plan) -> Box<dyn RolloutOutput + 'a>;
}

/// Lines for people on stderr (and the result a command was asked for on stdout), in color
/// when wanted.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    pub color: bool,
    /// 0 normal, 1 warnings and errors, 2 errors only.
    pub quiet: u8,
    /// `-v`: more detail (a blocked preview lists the steps too).
    pub verbose: u8,
    /// stderr is a terminal.
    pub terminal: bool,
}

impl Terminal {
    pub(crate) fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    /// A line for people on stdout: the result a command was asked for.
    pub(crate) fn out(&self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// A line for people on stderr.
    pub(crate) fn line(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
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

    /// A question for the operator on stderr, the answer to follow on the same line.
    pub fn question(&self, text: &str) -> std::io::Result<()> {
        let mut stderr = std::io::stderr().lock();
        write!(stderr, "{text}")?;
        stderr.flush()
    }
}

/// The terminal for people and the reporter `--output` chose.
pub struct Printer {
    terminal: Terminal,
    reporter: Box<dyn Reporter + Send + Sync>,
    /// Progress bars only for people watching a terminal.
    bars: bool,
}

impl std::ops::Deref for Printer {
    type Target = Terminal;

    fn deref(&self) -> &Terminal {
        &self.terminal
    }
}

impl Printer {
    pub fn new(format: OutputFormat, color: ColorChoice, quiet: u8, verbose: u8) -> Self {
        let terminal = Terminal {
            color: use_color(color),
            quiet,
            verbose,
            terminal: std::io::stderr().is_terminal(),
        };
        let reporter: Box<dyn Reporter + Send + Sync> = match format {
            OutputFormat::Human => Box::new(human::HumanReporter { terminal }),
            OutputFormat::Json => Box::new(json::JsonReporter),
        };
        Printer {
            terminal,
            reporter,
            bars: terminal.terminal && format == OutputFormat::Human && quiet == 0,
        }
    }

    /// Progress bars only for people watching a terminal.
    pub fn progress_bars(&self) -> bool {
        self.bars
    }

    /// An error and its chain of causes.
    pub fn failure(&self, error: &anyhow::Error) {
        let mut message = error.to_string();
        for cause in error.chain().skip(1) {
            message.push_str(&format!(": {cause}"));
        }
        self.reporter.failure(&message);
    }

    pub fn error(&self, message: &str) {
        self.reporter.error(message);
    }

    pub fn plan_valid(&self, file: &Path, plan: &Plan) {
        self.reporter.plan_valid(file, plan);
    }

    pub fn plan_errors(&self, report: &PlanErrors) {
        self.reporter.plan_errors(report);
    }

    pub fn status(&self, rows: &[StatusRow]) {
        self.reporter.status(rows);
    }

    pub fn plan_preview(
        &self,
        file: &Path,
        plan: &Plan,
        preflight: &Preflight,
        steps: &[(&Server, Vec<Step>)],
    ) {
        self.reporter.plan_preview(file, plan, preflight, steps);
    }

    pub fn event(&self, name: &str, fields: &serde_json::Value) {
        self.reporter.event(name, fields);
    }

    pub fn preflight(&self, preflight: &Preflight) {
        self.reporter.preflight(preflight);
    }

    pub fn preflight_failed(&self, reason: &str) {
        self.reporter.preflight_failed(reason);
    }

    pub fn journal_summary(&self, outcome: &str, summary: &serde_json::Value) {
        self.reporter.journal_summary(outcome, summary);
    }

    /// A document a command was asked for (a man page, completions, the schema), on stdout
    /// as it is, whatever the format.
    pub fn document(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        stdout.flush()
    }

    pub(crate) fn rollout<'a>(&self, plan: &'a Plan) -> Box<dyn RolloutOutput + 'a> {
        self.reporter.rollout(self.terminal, plan)
    }
}
