//! `validate PLAN`: parse and check the plan file only.

use super::Stop;
use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(args: &PlanArgs, printer: &Printer) -> Result<Exit, Stop> {
    let plan = super::load_plan(&args.plan, printer)?;
    printer.plan_valid(&args.plan, &plan);
    Ok(Exit::Success)
}
