//! `resume PLAN`: continues an interrupted rollout. Servers it finished are not restarted
//! again; the engine decides where each server it was working on goes on from, from what
//! every HAProxy shows now and the journal's facts.

use super::Stop;
use crate::cli::ResumeArgs;
use crate::engine::rollout::Mode;
use crate::exit::Exit;
use crate::report::Printer;

use super::rollout::{Context, Run, Start, VarsFrom};

pub fn run(
    args: &ResumeArgs,
    printer: &Printer,
    state: &crate::state::StateFlags,
) -> Result<Exit, Stop> {
    let (context, _locks) = Context::load_locked(
        &args.plan,
        printer,
        state,
        VarsFrom::Journal(&args.vars.vars),
        ("resume", None),
    )?;
    let story = context.story()?;
    let Some(interrupted) = crate::journal::interrupted(&story.records) else {
        return Err(Stop::Failed(anyhow::anyhow!(
            "there is no interrupted, aborted or failed rollout of {} to resume (its journal is in {})",
            args.plan.display(),
            context.store.describe()
        )));
    };
    if interrupted.rolled_back {
        printer.failure(&anyhow::anyhow!(
            "the rollout started {} was rolled back: `haproxy-rollout rollback {plan}` finishes the rollback, `haproxy-rollout apply {plan} --fresh` deploys again; nothing was changed",
            interrupted.started,
            plan = args.plan.display()
        ));
        return Ok(Exit::Usage);
    }
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
    let mut skip = Vec::new();
    for name in &args.skip {
        match context.index_of(name) {
            Some(index) => skip.push(index),
            None if facts.dropped.contains(name) => {}
            None => {
                printer.failure(&anyhow::anyhow!(
                    "--skip {name}: neither the plan nor the interrupted rollout has a server of that name; nothing was changed"
                ));
                return Ok(Exit::Usage);
            }
        }
    }
    // Property 6: a server an earlier run took out is never left out silently.
    let unaccounted: Vec<&String> = facts
        .dropped
        .iter()
        .filter(|name| !args.skip.contains(name))
        .collect();
    if !unaccounted.is_empty() {
        let names = unaccounted
            .iter()
            .map(|name| name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        printer.failure(&anyhow::anyhow!(
            "the interrupted rollout was working on {names}, which {plan} no longer has, so this plan cannot tell its state or put it right: \
             put it back in the plan and resume, or check it by hand (docs/safety.md, \"Recovering by hand\") and resume with `--skip {first}`; nothing was changed",
            plan = args.plan.display(),
            first = unaccounted[0],
        ));
        return Ok(Exit::Usage);
    }
    for name in &facts.dropped {
        printer.warning(&format!(
            "{name} was in flight and is no longer in the plan; skipped (--skip): it is left as it is, possibly OUT OF ROTATION. Check it with: {}",
            show_state_lines(&context.plan, name).join("; ")
        ));
    }
    let in_flight: Vec<&str> = interrupted
        .in_flight
        .iter()
        .map(|flight| flight.server.as_str())
        .collect();
    printer.note(&format!(
        "resuming the rollout started {}{}: {} server(s) done before{}",
        interrupted.started,
        interrupted
            .stopped
            .as_ref()
            .map_or_else(String::new, |outcome| format!(
                ", which stopped ({outcome})"
            )),
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
        command: "resume",
        start: Start::Recover {
            mode: Mode::Resume,
            done,
            facts,
            skip,
            analysis_passed: interrupted.analysis_passed,
        },
        confirm: false,
        ours: in_flight
            .iter()
            .map(|server| (*server).to_owned())
            .collect(),
        done_before: interrupted.done.clone(),
        continue_journal: true,
        timeline: None,
    }
    .execute()
}

/// Shell lines that show a server's state on every HAProxy of the plan.
fn show_state_lines(plan: &crate::plan::Plan, server: &str) -> Vec<String> {
    plan.haproxy
        .iter()
        .map(|instance| {
            format!(
                "{} | grep ' {server} '",
                crate::report::rollout::runtime_api_line(&instance.socket, "show servers state")
            )
        })
        .collect()
}
