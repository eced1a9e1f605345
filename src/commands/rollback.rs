//! `rollback PLAN`: every server the plan's last rollout changed goes back to what it ran
//! before (its `{previous}`), newest first, through the same safe sequence as a restart,
//! under the same limits. Each server is decided from what every HAProxy shows now.

use super::Stop;
use super::rollout::{Context, Facts, Run, Start, VarsFrom, undo};
use crate::cli::RollbackArgs;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(
    args: &RollbackArgs,
    printer: &Printer,
    state: &crate::state::StateFlags,
) -> Result<Exit, Stop> {
    let (context, _locks) = Context::load_locked(
        &args.plan,
        printer,
        state,
        VarsFrom::Journal(&args.vars.vars),
        ("rollback", Some(args.yes)),
    )?;
    let Some(rollback_plan) = context.plan.for_rollback() else {
        return Err(Stop::Failed(anyhow::anyhow!(
            "{} has no `rollback:` section: add rollback.command (e.g. `sudo /opt/app/deploy {{previous}}`); nothing was changed",
            args.plan.display()
        )));
    };
    let story = context.story()?;
    let records = &story.records;
    if records.is_empty() {
        return Err(Stop::Failed(anyhow::anyhow!(
            "there is no rollout of {} to roll back (its journal is in {})",
            args.plan.display(),
            context.store.describe()
        )));
    }
    let interrupted = crate::journal::interrupted(records);
    if let Some(interrupted) = &interrupted
        && interrupted.stopped.is_none()
        && !interrupted.paused
        && !interrupted.rolled_back
    {
        printer.failure(&anyhow::anyhow!(
            "the rollout started {} was interrupted and never stopped safely: `haproxy-rollout resume {plan}` or `haproxy-rollout abort {plan}` first, then roll back; nothing was changed",
            interrupted.started,
            plan = args.plan.display()
        ));
        return Ok(Exit::Usage);
    }
    let servers = undo::targets(&context, records);
    if servers.is_empty() {
        printer.note("the last rollout changed no server that can be rolled back; nothing to do");
        return Ok(Exit::Success);
    }
    let names: Vec<String> = servers
        .iter()
        .map(|(index, _)| context.plan.servers[*index].name.to_string())
        .collect();
    printer.note(&format!(
        "rolling back {} (newest first) to what each ran before the rollout",
        names.join(", ")
    ));
    let rollback = Context {
        plan: rollback_plan,
        ..context
    };
    // A rollback that was killed may have left its command running on a host: its servers
    // wait for it (the journal's facts, judged against live state like any recovery).
    let facts = match &interrupted {
        Some(earlier) if earlier.rolled_back && earlier.stopped.is_none() => {
            rollback.facts(earlier, &story)
        }
        _ => Facts::default(),
    };
    Run {
        context: &rollback,
        command: "rollback",
        start: Start::Rollback { servers, facts },
        confirm: !args.yes,
        ours: names,
        done_before: Vec::new(),
        continue_journal: true,
        timeline: None,
    }
    .execute()
}
