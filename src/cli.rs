//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::report::{ColorChoice, OutputFormat};

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 rollout failed, 2 usage error or invalid plan (nothing touched),
3 pre-flight failed (nothing touched), 4 aborted by the operator, 5 another rollout holds the lock.

Examples:
  haproxy-rollout validate plans/single.yaml
  haproxy-rollout plan plans/single.yaml
  haproxy-rollout apply plans/single.yaml --yes";

/// `0.1.0 (commit 4b5e8df12345)`: the version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HAPROXY_ROLLOUT_COMMIT"),
    ")"
);

/// Restart the servers behind HAProxy one safe step at a time.
///
/// Each server is drained on every HAProxy, restarted over SSH once no session is left,
/// checked healthy, and returned to traffic; the next starts only after HAProxy's own checks
/// report it UP. A plan file (YAML) says which servers, how to restart them and how careful
/// to be.
#[derive(Debug, Parser)]
#[command(name = "haproxy-rollout", version = VERSION, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More detail on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less on stderr: only warnings and errors (-qq: only errors).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,

    /// human: text for people on stderr; json: one JSON object per line on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,

    /// When to use colors; `auto` honours NO_COLOR and uses color only on a terminal.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,

    /// Where rollouts keep their journal and locks [default: $XDG_STATE_HOME/haproxy-rollout,
    /// else ~/.local/state/haproxy-rollout].
    #[arg(
        long,
        value_name = "DIR",
        global = true,
        env = "HAPROXY_ROLLOUT_STATE_DIR"
    )]
    pub state_dir: Option<PathBuf>,

    /// Keep the rollout's state on etcd, at these client URLs (comma-separated), instead of
    /// the plan's `state.etcd.endpoints` (or with its defaults when the plan has none).
    #[arg(
        long,
        value_name = "URL,...",
        global = true,
        value_delimiter = ',',
        env = "HAPROXY_ROLLOUT_STATE_ETCD"
    )]
    pub state_etcd: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a first plan from a live HAProxy: its backends and servers, in order, with
    /// every default shown. Only the restart command is left to fill in.
    #[command(
        after_help = "Examples:\n  haproxy-rollout init --socket /run/haproxy/admin.sock > plan.yaml\n  \
        haproxy-rollout init --socket tcp://127.0.0.1:9999 --backend be_app --ssh-user deploy > plan.yaml\n\n\
        Then fill in restart.command (`validate` refuses the plan until then) and preview it:\n  \
        haproxy-rollout plan plan.yaml"
    )]
    Init(InitArgs),

    /// Check a plan file without contacting anything.
    #[command(
        after_help = "Example:\n  haproxy-rollout validate plans/single.yaml\n\n\
        Exit status 0 when the plan is valid, 2 with every error found (file:line:column, key)."
    )]
    Validate(PlanArgs),

    /// Preview a rollout: read live state, run every pre-flight check, print every command
    /// `apply` would run, and what would block it now. Changes nothing.
    #[command(after_help = "Example:\n  haproxy-rollout plan plans/single.yaml\n\n\
        Exit status 0 when the rollout could start now, 3 when pre-flight fails.")]
    Plan(PreviewArgs),

    /// Run the rollout.
    #[command(
        after_help = "Examples:\n  haproxy-rollout apply plans/single.yaml\n  \
        haproxy-rollout apply plans/single.yaml --yes --output json   # in CI"
    )]
    Apply(ApplyArgs),

    /// Show the live state of the plan's servers on every HAProxy, and any running or
    /// interrupted rollout.
    #[command(after_help = "Example:\n  haproxy-rollout status plans/single.yaml --output json")]
    Status(OptionalPlanArgs),

    /// Stop a running rollout at the next safe point (from another shell or pipeline step),
    /// or clean up after an interrupted one.
    #[command(
        after_help = "Examples:\n  haproxy-rollout abort plans/single.yaml\n  \
        haproxy-rollout abort plans/single.yaml --now\n\n\
        A server only drained goes back to traffic; a restart in progress is let finish and\n\
        the server returns only if its health and HAProxy's checks pass. Exit status 4."
    )]
    Abort(AbortArgs),

    /// Continue an interrupted, aborted or failed rollout, deciding from live state.
    #[command(after_help = "Example:\n  haproxy-rollout resume plans/single.yaml")]
    Resume(ResumeArgs),

    /// Roll back the plan's last rollout, finished or stopped: every server it changed goes
    /// back to what it ran before, newest first, through the same safe sequence.
    #[command(
        after_help = "Example:\n  haproxy-rollout rollback plans/versioned.yaml --yes\n\n\
        Needs `rollback.command` in the plan; a server that already answers what it ran\n\
        before is left as it is. Exit status 0 when every server is back, 1 when the\n\
        rollback stopped on a failure."
    )]
    Rollback(RollbackArgs),

    /// Draw a rollout from its saved JSON events: one row per server, each stage a coloured
    /// bar on a time axis, failures, stops, rollbacks and the canary analysis marked.
    #[command(
        after_help = "Example:\n  haproxy-rollout --output json apply plan.yaml --yes > events.jsonl\n  \
        haproxy-rollout timeline events.jsonl rollout.svg"
    )]
    Timeline(TimelineArgs),

    /// Print the JSON Schema of the plan format, for editors (yaml-language-server).
    #[command(
        after_help = "Example:\n  haproxy-rollout schema > plan.schema.json\n\n\
        Then start a plan with:  # yaml-language-server: $schema=plan.schema.json"
    )]
    Schema,

    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  haproxy-rollout completions bash > /etc/bash_completion.d/haproxy-rollout"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page, or write one page per command into a directory.
    #[command(after_help = "Examples:\n  haproxy-rollout man | man -l -\n  \
        haproxy-rollout man --out-dir /usr/local/share/man/man1")]
    Man {
        /// Write haproxy-rollout.1 and haproxy-rollout-COMMAND.1 into this directory.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,

    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,

    /// Do not connect to the hosts over SSH (for a machine without SSH access to them);
    /// the preview says it did not check them.
    #[arg(long)]
    pub no_ssh: bool,

    #[command(flatten)]
    pub vars: VarArgs,
}

/// Values for the plan's `vars`.
#[derive(Debug, Args, Clone, Default)]
pub struct VarArgs {
    /// A value for one of the plan's vars, e.g. `--var version=1.4.2`; repeatable. It
    /// overrides the plan's default; a var declared `~` must be given.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = name_value)]
    pub vars: Vec<(String, String)>,
}

fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!(
            "expected NAME=VALUE, e.g. version=1.4.2, not `{text}`"
        )),
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The HAProxy's runtime API, as a plan writes it: /run/haproxy/admin.sock,
    /// tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]/path/to/admin.sock.
    #[arg(long, value_name = "SOCKET")]
    pub socket: String,

    /// Only this backend (repeatable); default: every backend that has servers.
    #[arg(long = "backend", value_name = "NAME")]
    pub backends: Vec<String>,

    /// The user to SSH to the servers' hosts as.
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,

    /// The HAProxy's name in reports.
    #[arg(long, value_name = "NAME", default_value = "lb1")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct OptionalPlanArgs {
    /// The plan file (YAML).
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,

    /// Do not ask for confirmation on a terminal.
    #[arg(short, long)]
    pub yes: bool,

    /// Start over although the last rollout of this plan stopped (failed or aborted): the
    /// servers it finished are restarted again. Without it, `apply` refuses and names
    /// `resume`.
    #[arg(long)]
    pub fresh: bool,

    /// Draw the rollout into this SVG file when it ends: one row per server, each stage a
    /// bar on a time axis (also from saved JSON events: `haproxy-rollout timeline`).
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,

    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The JSON events of a rollout, one per line (`--output json apply ... > events.jsonl`).
    pub events: PathBuf,
    /// The SVG file to write.
    pub svg: PathBuf,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The plan file (YAML) of the rollout to stop.
    pub plan: PathBuf,

    /// Return at once instead of waiting for the rollout to stop.
    #[arg(long)]
    pub no_wait: bool,

    /// Stop without waiting for a safe point; the server in flight is left out of rotation.
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The plan file (YAML) of the rollout to roll back.
    pub plan: PathBuf,

    /// Do not ask for confirmation on a terminal.
    #[arg(short, long)]
    pub yes: bool,

    /// The rollback takes the values of vars the rollout started with; a `--var` given
    /// here must equal them.
    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,

    /// Resume even though the plan file changed since the rollout was interrupted.
    #[arg(long)]
    pub force: bool,

    /// Leave this server out (it is not touched, and reported as skipped); repeatable. Also
    /// the way past a server in flight that the plan no longer has.
    #[arg(long, value_name = "SERVER")]
    pub skip: Vec<String>,

    /// Resume takes the values of vars the interrupted rollout started with; a `--var`
    /// given here must equal them.
    #[command(flatten)]
    pub vars: VarArgs,
}
