//! `validate PLAN`: parse and check the plan file only.

use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(args: &PlanArgs, printer: &Printer) -> anyhow::Result<Exit> {
    match super::load_plan(&args.plan, printer)? {
        Ok(plan) => {
            printer.plan_valid(&args.plan, &plan);
            Ok(Exit::Success)
        }
        Err(exit) => Ok(exit),
    }
}
