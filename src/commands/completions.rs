//! `completions SHELL`: a completion script on stdout.

use clap::CommandFactory;

use super::Stop;
use crate::cli::Cli;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(shell: clap_complete::Shell, printer: &Printer) -> Result<Exit, Stop> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "haproxy-rollout", &mut script);
    printer.document(&script)?;
    Ok(Exit::Success)
}
