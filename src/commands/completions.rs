//! `completions SHELL`: a completion script on stdout.

use clap::CommandFactory;

use super::Stop;
use crate::cli::Cli;
use crate::exit::Exit;

pub fn run(shell: clap_complete::Shell) -> Result<Exit, Stop> {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "haproxy-rollout",
        &mut std::io::stdout(),
    );
    Ok(Exit::Success)
}
