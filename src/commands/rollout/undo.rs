//! Rolling back what a rollout changed: which servers (from the journal: each server whose
//! restart was sent, newest first, with what `verify` read on it before), and
//! `rollback.on_failure: auto`, which rolls them back in the same run as soon as the
//! rollout failed.

use super::Context;
use crate::driver::Driver;
use crate::effects::Effects;
use crate::engine::Topology;
use crate::engine::rollout::{Finish, Limits, Outcome, Rollout};
use crate::journal::{self, Record};
use crate::plan::{OnFailure, Placeholder, Plan};
use crate::report::rollout::RolloutReporter;

/// The servers to roll back, by plan index, newest first, with what each ran before. A
/// server the plan no longer has, or whose earlier answer was never read while the rollback
/// command needs it (`{previous}`), cannot be rolled back: it is named in a warning.
pub(crate) fn targets(context: &Context, records: &[Record]) -> Vec<(usize, Option<String>)> {
    let needs_previous = context
        .plan
        .rollback
        .as_ref()
        .is_some_and(|rollback| rollback.command.uses(Placeholder::Previous));
    let mut servers = Vec::new();
    for (name, previous) in journal::changed_servers(records) {
        let Some(index) = context.index_of(&name) else {
            context.printer.warning(&format!(
                "{name} was changed by the rollout and is no longer in the plan: it is not rolled back"
            ));
            continue;
        };
        if needs_previous && previous.is_none() {
            context.printer.warning(&format!(
                "{name} is not rolled back: what it ran before the rollout was never read, and rollback.command needs {{previous}}"
            ));
            continue;
        }
        servers.push((index, previous));
    }
    servers
}

/// Whether a failed rollout rolls back at once (`rollback.on_failure: auto`).
pub(crate) fn automatic(plan: &Plan, finish: &Finish) -> bool {
    finish.outcome == Outcome::Failed
        && plan
            .rollback
            .as_ref()
            .is_some_and(|rollback| rollback.on_failure == OnFailure::Auto)
}

/// Rolls back, with `driver`'s world, every server the failed rollout changed. Returns the
/// rollout's finish with each rolled-back server's state and the rollback in its reason,
/// and the world back (to journal the end with).
pub(crate) async fn after_failure<E: Effects>(
    context: &Context<'_>,
    driver: Driver<'_, E>,
    rollback_plan: &Plan,
    reporter: &mut RolloutReporter<'_>,
    finish: Finish,
    (topology, limits): (&Topology, &Limits),
) -> (Finish, E) {
    let records = context.records().unwrap_or_default();
    let servers = targets(context, &records);
    if servers.is_empty() {
        return (finish, driver.effects);
    }
    let names: Vec<String> = servers
        .iter()
        .map(|(index, _)| context.plan.servers[*index].name.to_string())
        .collect();
    context.printer.note(&format!(
        "rolling back {} (rollback.on_failure: auto), newest first",
        names.join(", ")
    ));
    context
        .printer
        .event("rollback", &serde_json::json!({"servers": names}));
    let Driver {
        effects,
        mut targets,
        locks,
        interrupt,
        identities,
        rollout_id,
        ..
    } = driver;
    // Nothing changes without its record: a journal that cannot say a rollback began
    // would let `resume` deploy again what was rolled back.
    if let Err(error) = effects.record(&Record::Rollback {
        time: journal::now(),
        servers: names.clone(),
    }) {
        context.printer.error(&format!(
            "cannot write the journal ({error}): nothing is rolled back; roll back with `haproxy-rollout rollback {}` once it can be written",
            context.file.display()
        ));
        return (finish, effects);
    }
    for (index, previous) in &servers {
        targets[*index].previous.clone_from(previous);
    }
    let identities = identities.into_inner().expect("the identities lock");
    let mut rollback = Driver::new(
        rollback_plan,
        effects,
        targets,
        topology.clone(),
        identities,
        rollout_id,
    );
    rollback.interrupt = interrupt;
    rollback.locks = locks;
    let engine = Rollout::rollback(
        rollback_plan,
        topology.clone(),
        limits.clone(),
        &servers,
        &[],
    );
    let rolled = rollback.run(engine, |report| reporter.report(report)).await;
    let mut combined = finish.clone();
    for (index, _) in &servers {
        combined.servers[*index] = rolled.servers[*index].clone();
    }
    let how = match (rolled.outcome, &rolled.reason) {
        (Outcome::Success, _) => format!(
            "rolled back {} (rollback.on_failure: auto)",
            names.join(", ")
        ),
        (_, reason) => format!(
            "the rollback of {} did not finish: {}",
            names.join(", "),
            reason.as_deref().unwrap_or("stopped")
        ),
    };
    combined.reason = Some(match &finish.reason {
        Some(reason) => format!("{reason}; {how}"),
        None => how,
    });
    (combined, rollback.effects)
}
