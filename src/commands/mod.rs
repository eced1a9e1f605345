//! One file per subcommand: wiring from the command line to the parts that do the work.

mod abort;
mod apply;
mod completions;
mod init;
mod live;
mod man;
mod plan;
mod resume;
mod rollback;
mod rollout;
mod schema;
mod status;
mod timeline;
mod validate;

use crate::cli::{Cli, Command};
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(cli: Cli, printer: &Printer) -> Exit {
    let state = crate::state::StateFlags {
        dir: cli.global.state_dir.clone(),
        etcd: cli.global.state_etcd.clone(),
    };
    let result = match cli.command {
        Command::Init(args) => init::run(&args, printer),
        Command::Validate(args) => validate::run(&args, printer),
        Command::Plan(args) => plan::run(&args, printer, &state),
        Command::Apply(args) => apply::run(&args, printer, &state),
        Command::Status(args) => status::run(&args, printer, &state),
        Command::Abort(args) => abort::run(&args, printer, &state),
        Command::Resume(args) => resume::run(&args, printer, &state),
        Command::Rollback(args) => rollback::run(&args, printer, &state),
        Command::Timeline(args) => timeline::run(&args, printer),
        Command::Schema => schema::run(printer),
        Command::Completions { shell } => completions::run(shell, printer),
        Command::Man { out_dir } => man::run(out_dir.as_deref(), printer),
    };
    match result {
        Ok(exit) | Err(Stop::Reported(exit)) => exit,
        Err(Stop::Failed(error)) => {
            printer.failure(&error);
            Exit::Usage
        }
    }
}

/// Why a command ended before its end: an exit status whose reason the operator was
/// already told, or an error still to tell (exit 2). `?` turns errors into the second.
#[derive(Debug)]
pub(crate) enum Stop {
    Reported(Exit),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(error: anyhow::Error) -> Self {
        Stop::Failed(error)
    }
}

impl From<std::io::Error> for Stop {
    fn from(error: std::io::Error) -> Self {
        Stop::Failed(error.into())
    }
}

/// A command that asks before it changes anything, run where it cannot ask (cron, a pipe,
/// `ssh host cmd`): refused unless `--yes`, rather than run unconfirmed without a word.
pub(crate) fn can_ask(yes: bool, command: &str) -> Result<(), Stop> {
    use std::io::IsTerminal;
    if yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(Stop::Failed(anyhow::anyhow!(
        "`{command}` asks before it changes anything, and its standard input is not a terminal to ask on: add --yes to run it without asking (as in CI); nothing was changed"
    )))
}

/// Loads a plan, printing its errors if it is invalid.
pub(crate) fn load_plan(
    file: &std::path::Path,
    vars: crate::plan::Given,
    printer: &Printer,
) -> Result<crate::plan::Plan, Stop> {
    match crate::plan::load_with(file, vars) {
        Ok(plan) => Ok(plan),
        Err(crate::plan::LoadError::Invalid(report)) => {
            printer.plan_errors(&report);
            Err(Stop::Reported(Exit::Usage))
        }
        Err(crate::plan::LoadError::Read(error)) => Err(Stop::Failed(error.into())),
    }
}

/// Every server's steps, with the addresses pre-flight found.
pub(crate) fn preview_steps<'p>(
    plan: &'p crate::plan::Plan,
    preflight: &crate::engine::Preflight,
) -> Vec<(&'p crate::plan::Server, Vec<crate::engine::Step>)> {
    plan.servers
        .iter()
        .zip(&preflight.targets)
        .map(|(server, target)| {
            (
                server,
                crate::engine::server_steps(
                    plan,
                    &preflight.topology,
                    server,
                    target.values.as_ref(),
                ),
            )
        })
        .collect()
}
