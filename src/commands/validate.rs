//! `validate PLAN`: parse and check the plan file only.

use super::Stop;
use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::plan::Given;
use crate::report::Printer;

pub fn run(args: &PlanArgs, printer: &Printer) -> Result<Exit, Stop> {
    let plan = super::load_plan(&args.plan, Given::values(&args.vars.vars), printer)?;
    printer.plan_valid(&args.plan, &plan);
    Ok(Exit::Success)
}
