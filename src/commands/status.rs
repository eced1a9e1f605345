//! `status PLAN`: the live state of the plan's servers on every HAProxy.

use crate::cli::OptionalPlanArgs;
use crate::exit::Exit;
use crate::report::Printer;
use crate::report::live::StatusRow;

pub fn run(args: &OptionalPlanArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let Some(file) = &args.plan else {
        anyhow::bail!("`status` needs a plan file in this version: haproxy-rollout status PLAN");
    };
    let plan = match super::load_plan(file, printer)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let observations = super::live::runtime()?.block_on(super::live::observe(&plan));
    let mut rows = Vec::new();
    let mut complete = true;
    for observation in &observations {
        let instance = observation.instance.name.as_str();
        let snapshot = match &observation.state {
            Ok(snapshot) => snapshot,
            Err(error) => {
                complete = false;
                printer.error(&format!("{instance}: {error}"));
                printer.json_event(
                    "haproxy_unreachable",
                    &serde_json::json!({"haproxy": instance, "error": error}),
                );
                continue;
            }
        };
        for backend in &plan.backends {
            for server in &plan.servers {
                let view = snapshot.server(backend.as_str(), server.name.as_str());
                complete &= view.is_some();
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
    Ok(if complete {
        Exit::Success
    } else {
        Exit::PreflightFailed
    })
}
