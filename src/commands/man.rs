//! `man`: the man page on stdout, or one page per command written into a directory.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Stop;
use crate::cli::Cli;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(out_dir: Option<&Path>, printer: &Printer) -> Result<Exit, Stop> {
    let command = Cli::command();
    let Some(out_dir) = out_dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        printer.document(&page)?;
        return Ok(Exit::Success);
    };
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::new();
    let main_page = out_dir.join("haproxy-rollout.1");
    write_page(command.clone(), &main_page)?;
    written.push(main_page);
    for sub in command.get_subcommands() {
        let name = format!("haproxy-rollout-{}", sub.get_name());
        let page = out_dir.join(format!("{name}.1"));
        write_page(sub.clone().name(name), &page)?;
        written.push(page);
    }
    for page in written {
        printer.note(&format!("wrote {}", page.display()));
    }
    Ok(Exit::Success)
}

fn write_page(command: clap::Command, file: &Path) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    clap_mangen::Man::new(command).render(&mut buffer)?;
    std::fs::write(file, buffer).with_context(|| format!("cannot write {}", file.display()))
}
