//! `apply PLAN`: locks, pre-flight (HAProxy and SSH, nothing changed), an optional
//! confirmation, then the rollout, journaled, then the summary.

use super::Stop;
use crate::cli::ApplyArgs;
use crate::exit::Exit;
use crate::report::Printer;

use super::rollout::{Context, Run, Start, VarsFrom};

pub fn run(
    args: &ApplyArgs,
    printer: &Printer,
    state: &crate::state::StateFlags,
) -> Result<Exit, Stop> {
    let (context, _locks) = Context::load_locked(
        &args.plan,
        printer,
        state,
        VarsFrom::CommandLine(&args.vars.vars),
        ("apply", Some(args.yes)),
    )?;
    if let Some(interrupted) = crate::journal::interrupted(&context.records()?)
        && !(args.fresh && interrupted.stopped.is_some())
    {
        let in_flight = if interrupted.in_flight.is_empty() {
            "no server".to_owned()
        } else {
            interrupted
                .in_flight
                .iter()
                .map(|flight| flight.server.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (what, other) = (interrupted.standing(), interrupted.other_way(&args.plan));
        let resume = if interrupted.rolled_back {
            String::new()
        } else {
            format!(
                "continue it with `haproxy-rollout resume {}` ",
                args.plan.display()
            )
        };
        printer.failure(&anyhow::anyhow!(
            "a rollout of this plan was {what} (started {} by pid {} on {}; {} server(s) done; {in_flight} in flight): \
             {resume}{other}; nothing was changed",
            interrupted.started,
            interrupted.pid,
            interrupted.host,
            interrupted.done.len(),
        ));
        return Ok(Exit::Locked);
    }
    Run {
        context: &context,
        command: "apply",
        start: Start::Fresh,
        confirm: !args.yes,
        ours: Vec::new(),
        done_before: Vec::new(),
        continue_journal: false,
        timeline: args.timeline.clone(),
    }
    .execute()
}
