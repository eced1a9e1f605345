//! `schema`: the JSON Schema of the plan format, for editors.

use super::Stop;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(printer: &Printer) -> Result<Exit, Stop> {
    let mut schema =
        serde_json::to_string_pretty(&crate::plan::json_schema()).map_err(anyhow::Error::from)?;
    schema.push('\n');
    printer.document(schema.as_bytes())?;
    Ok(Exit::Success)
}
