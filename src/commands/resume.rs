//! `resume PLAN`: continues an interrupted rollout. Servers it finished are not restarted
//! again; the engine decides where each server it was working on goes on from, from what
//! every HAProxy shows now and the journal's facts.

use crate::cli::ResumeArgs;
use crate::engine::rollout::Mode;
use crate::exit::Exit;
use crate::report::Printer;

use super::rollout::{Context, Run, Start};

pub fn run(
    args: &ResumeArgs,
    printer: &Printer,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<Exit> {
    let (context, _locks) = match Context::load_locked(&args.plan, printer, state_dir, "resume")? {
        Ok(loaded) => loaded,
        Err(exit) => return Ok(exit),
    };
    let story = context.story()?;
    let Some(interrupted) = crate::journal::interrupted(&story.records) else {
        anyhow::bail!(
            "there is no interrupted rollout of {} to resume (its journal is in {})",
            args.plan.display(),
            context.dir.display()
        );
    };
    if interrupted.plan_hash != context.plan_hash && !args.force {
        printer.failure(&anyhow::anyhow!(
            "{} changed since the interrupted rollout started ({}); check it, then resume with --force; nothing was changed",
            args.plan.display(),
            interrupted.started
        ));
        return Ok(Exit::Usage);
    }
    let done = context.indexes_of(&interrupted.done);
    let facts = context.facts(&interrupted, &story);
    let in_flight: Vec<&str> = interrupted
        .in_flight
        .iter()
        .map(|flight| flight.server.as_str())
        .collect();
    printer.note(&format!(
        "resuming the rollout started {}: {} server(s) done before{}",
        interrupted.started,
        done.len(),
        if in_flight.is_empty() {
            String::new()
        } else {
            format!(
                "; {} in flight, each decided from what HAProxy shows now",
                in_flight.join(", ")
            )
        }
    ));
    Run {
        context: &context,
        start: Start::Recover {
            mode: Mode::Resume,
            done,
            facts,
        },
        confirm: false,
        ours: in_flight
            .iter()
            .map(|server| (*server).to_owned())
            .collect(),
        done_before: interrupted.done.clone(),
        continue_journal: true,
    }
    .execute()
}
