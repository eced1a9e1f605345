//! `abort PLAN`: stops a running `apply` at its next safe point and waits for it, or, when
//! none runs, cleans up after an interrupted one with the same rules.

use std::time::Duration;

use super::Stop;
use crate::cli::AbortArgs;
use crate::engine::rollout::Mode;
use crate::exit::Exit;
use crate::journal::{Change, Record};
use crate::report::Printer;
use crate::state::{StateFlags, Store};

use super::rollout::{Context, Run, Start, VarsFrom};

pub fn run(args: &AbortArgs, printer: &Printer, state: &StateFlags) -> Result<Exit, Stop> {
    let context = Context::load(&args.plan, printer, state, VarsFrom::Journal(&[]))?;
    if let Some(holder) = context.store.plan_holder()? {
        let how = if args.now {
            "now"
        } else {
            "at its next safe point"
        };
        // Said first, so the running command logs an abort, and from where, not a signal.
        let from = super::rollout::abort_request_from();
        match &context.store {
            Store::Shared(_) => {
                // It watches the request, wherever it runs.
                context.store.request_abort(&from, args.now)?;
            }
            Store::Local(_) => {
                if holder.host != crate::lock::hostname() {
                    return Err(Stop::Failed(anyhow::anyhow!(
                        "the rollout runs on another host: {holder}; abort it there (or share its state on etcd: state.etcd)"
                    )));
                }
                if let Err(error) = context.store.request_abort(&from, args.now) {
                    tracing::debug!("cannot leave the abort request: {error}");
                }
                signal(&holder, args.now)?;
            }
        }
        printer.note(&format!("asked {holder} to stop {how}"));
        if args.no_wait {
            return Ok(Exit::Aborted);
        }
        while context.store.plan_holder()?.is_some() {
            std::thread::sleep(Duration::from_millis(100));
        }
        match report_end(&context, printer)? {
            // A holder that died (its lease ran out) left its servers to clean up: this
            // abort goes on and does it.
            None if matches!(context.store, Store::Shared(_)) => {
                printer.warning(&format!(
                    "{holder} stopped without writing its end (it died); cleaning up after it"
                ));
            }
            None => {
                printer.error("the rollout stopped without writing its end: it was killed; run `abort` again to clean up");
                return Ok(Exit::RolloutFailed);
            }
            Some(exit) => return Ok(exit),
        }
    }

    let _locks = context.lock("abort")?;
    let story = context.story()?;
    let last = crate::journal::interrupted(&story.records);
    if let Some(last) = last.as_ref()
        && let Some(outcome) = &last.stopped
    {
        let next = if last.rolled_back {
            last.other_way(&args.plan)
        } else {
            format!(
                "continue it with `haproxy-rollout resume {}`",
                args.plan.display()
            )
        };
        printer.note(&format!(
            "no rollout of {plan} is running or interrupted; the last one stopped ({outcome}) and left every server in a reported state; {next}",
            plan = args.plan.display()
        ));
        return Ok(Exit::Success);
    }
    let Some(interrupted) = last else {
        printer.note(&format!(
            "no rollout of {} is running or interrupted; nothing to do",
            args.plan.display()
        ));
        return Ok(Exit::Success);
    };
    let done = context.indexes_of(&interrupted.done);
    let flights: Vec<&crate::journal::InFlight> = interrupted
        .in_flight
        .iter()
        .filter(|flight| !flight.applied.is_empty() || flight.pending.is_some())
        .collect();
    if flights.is_empty() && story.torn.is_none() {
        let mut journal = context.store.journal(true)?;
        journal.append(&Record::End {
            time: crate::journal::now(),
            outcome: "interrupted".to_owned(),
            summary: serde_json::json!({"reason": "aborted between servers; no server was out of rotation"}),
        })
        .map_err(anyhow::Error::from)?;
        printer.note("the interrupted rollout had no server in flight; nothing to put back");
        return Ok(Exit::Aborted);
    }
    for flight in &flights {
        printer.note(&format!(
            "cleaning up the rollout interrupted since {}: {} was in flight ({})",
            interrupted.started,
            flight.server,
            describe(flight),
        ));
    }
    // A killed rollback is settled as a rollback: with its command, and verify expecting
    // what each server ran before the rollout.
    let context = match context.plan.for_rollback() {
        Some(rollback_plan) if interrupted.rolled_back => Context {
            plan: rollback_plan,
            ..context
        },
        _ => context,
    };
    let mut facts = context.facts(&interrupted, &story);
    if interrupted.rolled_back {
        facts.expected = super::rollout::undo::targets(&context, &story.records);
    }
    Run {
        context: &context,
        command: "abort",
        start: Start::Recover {
            mode: Mode::Settle,
            done,
            facts,
            skip: Vec::new(),
            analysis_passed: interrupted.analysis_passed,
        },
        confirm: false,
        ours: flights.iter().map(|flight| flight.server.clone()).collect(),
        done_before: interrupted.done.clone(),
        continue_journal: true,
        timeline: None,
    }
    .execute()
    .map(|exit| {
        if exit == Exit::Success {
            Exit::Aborted
        } else {
            exit
        }
    })
}

fn describe(flight: &crate::journal::InFlight) -> String {
    let mut parts: Vec<String> = flight
        .applied
        .iter()
        .map(|change| format!("{change:?}").to_lowercase())
        .collect();
    if let Some(pending) = flight.pending {
        parts.push(format!(
            "{} (not confirmed)",
            format!("{pending:?}").to_lowercase()
        ));
    }
    if flight.restart_attempted() && !flight.applied.contains(&Change::Restart) {
        parts.push("the restart may have run".to_owned());
    }
    parts.join(", then ")
}

/// Signals the running command on this machine: SIGTERM (the next safe point), or SIGUSR1
/// (now).
fn signal(holder: &crate::lock::Holder, now: bool) -> Result<(), Stop> {
    let signal = if now {
        rustix::process::Signal::USR1
    } else {
        rustix::process::Signal::TERM
    };
    let pid = i32::try_from(holder.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow::anyhow!("the lock names an impossible pid: {holder}"))?;
    rustix::process::kill_process(pid, signal)
        .map_err(|error| anyhow::anyhow!("cannot signal {holder}: {error}"))?;
    Ok(())
}

/// After the rollout stopped: its summary from the journal, and the exit status it means;
/// `None` when it stopped without writing its end.
fn report_end(context: &Context, printer: &Printer) -> Result<Option<Exit>, Stop> {
    let records = context.records()?;
    let Some(Record::End {
        outcome, summary, ..
    }) = records.last()
    else {
        return Ok(None);
    };
    printer.journal_summary(outcome, summary);
    Ok(Some(match outcome.as_str() {
        "success" => Exit::Success,
        "failed" => Exit::RolloutFailed,
        _ => Exit::Aborted,
    }))
}
