//! `status PLAN`: the live state of the plan's servers on every HAProxy.

use super::Stop;
use crate::cli::OptionalPlanArgs;
use crate::exit::Exit;
use crate::plan::Given;
use crate::report::Printer;
use crate::report::live::StatusRow;

pub fn run(
    args: &OptionalPlanArgs,
    printer: &Printer,
    state: &crate::state::StateFlags,
) -> Result<Exit, Stop> {
    let Some(file) = &args.plan else {
        return Err(Stop::Failed(anyhow::anyhow!(
            "`status` needs a plan file in this version: haproxy-rollout status PLAN"
        )));
    };
    let plan = super::load_plan(
        file,
        // Status runs nothing on the servers: a var without a value does not matter.
        Given {
            values: &[],
            partial: true,
        },
        printer,
    )?;
    let runtime = super::live::runtime()?;
    let links = runtime.block_on(super::live::connect(&plan));
    let observations = runtime.block_on(super::live::observe(&plan, &links));
    let mut rows = Vec::new();
    let mut complete = true;
    // Why the plan is not at rest: servers out of rotation, a rollout not finished.
    let mut unrest = Vec::new();
    let topology = crate::engine::Topology::resolve(&plan, &observations);
    for (index, observation) in observations.iter().enumerate() {
        let instance = observation.instance.name.as_str();
        let snapshot = match &observation.state {
            Ok(snapshot) => snapshot,
            Err(error) => {
                complete = false;
                printer.error(&format!("{instance}: {error}"));
                printer.event(
                    "haproxy_unreachable",
                    &serde_json::json!({"haproxy": instance, "error": error}),
                );
                continue;
            }
        };
        let info = &snapshot.info;
        let warning = info.version_warning();
        printer.note(&format!(
            "{instance}: HAProxy {}, pid {}",
            info.version, info.pid
        ));
        if let Some(warning) = &warning {
            printer.warning(&format!("{instance}: {warning}"));
        }
        printer.event(
            "haproxy",
            &serde_json::json!({
                "haproxy": instance,
                "version": info.version,
                "pid": info.pid,
                "warning": warning,
            }),
        );
        for (server_index, server) in plan.servers.iter().enumerate() {
            let backends = topology.backends(index, server_index);
            if backends.is_empty() {
                complete = false;
                rows.push(StatusRow {
                    instance,
                    backend: "(none)",
                    server: server.name.as_str(),
                    view: None,
                });
            }
            for backend in backends {
                let view = snapshot.server(backend.as_str(), server.name.as_str());
                complete &= view.is_some();
                if let Some(view) = view
                    && !view.in_rotation()
                {
                    unrest.push(format!(
                        "{}/{} on {instance} is out of rotation ({}, {})",
                        backend,
                        server.name,
                        view.status,
                        view.admin_text()
                    ));
                }
                rows.push(StatusRow {
                    instance,
                    backend: backend.as_str(),
                    server: server.name.as_str(),
                    view,
                });
            }
        }
    }
    printer.status(&rows);
    let complete = match crate::state::Store::open(file, &plan, state) {
        Ok(store) => {
            unrest.extend(rollout_state(file, printer, &store)?);
            past_rollouts(printer, &store)?;
            complete
        }
        Err(error) => {
            printer.failure(&error.context("cannot read the rollout's state"));
            false
        }
    };
    printer.event(
        "at_rest",
        &serde_json::json!({"at_rest": complete && unrest.is_empty(), "reasons": unrest}),
    );
    Ok(if !complete {
        Exit::PreflightFailed
    } else if !unrest.is_empty() {
        printer.warning(&format!("not at rest (exit 6): {}", unrest.join("; ")));
        Exit::NotAtRest
    } else {
        Exit::Success
    })
}

/// A running rollout (from its lock) or an unfinished one (from its journal): returns why
/// the plan is not at rest, if it is not.
fn rollout_state(
    file: &std::path::Path,
    printer: &Printer,
    store: &crate::state::Store,
) -> anyhow::Result<Option<String>> {
    if let Some(holder) = store.plan_holder()? {
        printer.event(
            "rollout",
            &serde_json::json!({"state": "running", "holder": holder}),
        );
        printer.warning(&format!("a rollout of this plan is running: {holder}"));
        return Ok(Some(format!(
            "a rollout of this plan is running ({holder})"
        )));
    }
    let records = store.story()?.records;
    let Some(interrupted) = crate::journal::interrupted(&records) else {
        return Ok(None);
    };
    let in_flight: Vec<(String, Vec<String>)> = interrupted
        .in_flight
        .iter()
        .map(|flight| {
            let mut changes: Vec<String> = flight
                .applied
                .iter()
                .map(|change| format!("{change:?}").to_lowercase())
                .collect();
            if let Some(pending) = flight.pending {
                changes.push(format!(
                    "{} (not confirmed)",
                    format!("{pending:?}").to_lowercase()
                ));
            }
            (flight.server.clone(), changes)
        })
        .collect();
    printer.event(
        "rollout",
        &serde_json::json!({
            "state": match (&interrupted.stopped, interrupted.paused) {
                (Some(_), _) => "stopped",
                (None, true) => "paused",
                (None, false) => "interrupted",
            },
            "outcome": interrupted.stopped,
            "started": interrupted.started,
            "pid": interrupted.pid,
            "host": interrupted.host,
            "done": interrupted.done,
            "in_flight": in_flight.iter().map(|(server, changes)| serde_json::json!({"server": server, "changes": changes})).collect::<Vec<_>>(),
        }),
    );
    let flight_text = if in_flight.is_empty() {
        "no server in flight".to_owned()
    } else {
        in_flight
            .iter()
            .map(|(server, changes)| format!("{server} in flight ({})", changes.join(", then ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let what = format!("a rollout of this plan was {}", interrupted.standing());
    let unfinished = what.clone();
    let cleanup = format!(" {}", interrupted.other_way(file));
    printer.warning(&format!(
        "{what}: started {} by pid {} on {}; done: {}; {flight_text}. \
         Continue it with `haproxy-rollout resume {plan}`{cleanup}",
        interrupted.started,
        interrupted.pid,
        interrupted.host,
        if interrupted.done.is_empty() {
            "none".to_owned()
        } else {
            interrupted.done.join(", ")
        },
        plan = file.display()
    ));
    Ok(Some(unfinished))
}

/// The plan's rollouts, newest first, as its state keeps them (the last ten).
fn past_rollouts(printer: &Printer, store: &crate::state::Store) -> anyhow::Result<()> {
    let rollouts = store.history()?;
    printer.event(
        "rollouts",
        &serde_json::json!({"rollouts": rollouts.iter().map(|past| serde_json::json!({
            "started": past.started,
            "outcome": past.outcome,
            "runs": past.runs,
            "servers": past.servers,
            "rolled_back": past.rolled_back,
            "journal": past.file,
        })).collect::<Vec<_>>()}),
    );
    if rollouts.is_empty() {
        return Ok(());
    }
    printer.note(&format!(
        "rollouts of this plan, newest first (the last {} are kept, in {}):",
        crate::journal::history::KEEP,
        store.describe()
    ));
    for past in &rollouts {
        let mut line = format!(
            "  {}  {:<11}  {} server(s)",
            past.started,
            past.outcome.as_deref().unwrap_or("unfinished"),
            past.servers
        );
        if past.runs > 1 {
            line.push_str(&format!(", {} runs", past.runs));
        }
        if past.rolled_back {
            line.push_str(", rolled back");
        }
        printer.note(&line);
    }
    Ok(())
}
