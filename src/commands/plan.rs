//! `plan PLAN`: the dry run. Reads live state, runs every pre-flight check that changes
//! nothing, and prints every command `apply` would run. It only ever sends `show` commands.

use crate::cli::PlanArgs;
use crate::engine;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(args: &PlanArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let plan = match super::load_plan(&args.plan, printer)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let runtime = super::live::runtime()?;
    let links = runtime.block_on(super::live::connect(&plan));
    let observations = runtime.block_on(super::live::observe(&plan, &links));
    let preflight = engine::preflight::preflight(&plan, &observations, &[]);
    let steps = super::preview_steps(&plan, &preflight);
    printer.plan_preview(&args.plan, &plan, &preflight, &steps);
    Ok(if preflight.blocked() {
        Exit::PreflightFailed
    } else {
        Exit::Success
    })
}
