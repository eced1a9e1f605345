//! `plan PLAN`: the dry run. Reads live state, runs every pre-flight check that changes
//! nothing, and prints every command `apply` would run. It only ever sends `show` commands.

use super::Stop;
use crate::cli::PlanArgs;
use crate::engine;
use crate::exit::Exit;
use crate::plan::Given;
use crate::report::Printer;

pub fn run(args: &PlanArgs, printer: &Printer) -> Result<Exit, Stop> {
    let plan = super::load_plan(&args.plan, Given::values(&args.vars.vars), printer)?;
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
