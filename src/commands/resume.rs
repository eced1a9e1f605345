//! `resume PLAN`: continues an interrupted rollout from its journal. Servers it finished are
//! not restarted again; the one in flight is redone safely.

use crate::cli::ResumeArgs;
use crate::exit::Exit;
use crate::journal::Change;
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
    let Some(interrupted) = crate::journal::interrupted(&context.records()?) else {
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
    let mut ours = Vec::new();
    let mut in_maintenance = Vec::new();
    for flight in &interrupted.in_flight {
        ours.push(flight.server.clone());
        // Left in maintenance (or the restart was under way): redo it from the restart,
        // without putting an unverified application back into traffic on the way.
        if flight.restart_attempted()
            || flight.last_state() == Some(Change::Maint)
            || flight.pending == Some(Change::Maint)
        {
            in_maintenance.extend(context.index_of(&flight.server));
        }
    }
    printer.note(&format!(
        "resuming the rollout started {}: {} server(s) done before{}",
        interrupted.started,
        done.len(),
        if ours.is_empty() {
            String::new()
        } else {
            format!("; {} in flight and redone", ours.join(", "))
        }
    ));
    Run {
        context: &context,
        start: Start::Resume {
            done,
            in_maintenance,
        },
        confirm: false,
        ours,
        done_before: interrupted.done.clone(),
        continue_journal: true,
    }
    .execute()
}
