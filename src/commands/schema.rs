//! `schema`: the JSON Schema of the plan format, for editors.

use super::Stop;
use crate::exit::Exit;

pub fn run() -> Result<Exit, Stop> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::plan::json_schema()).map_err(anyhow::Error::from)?
    );
    Ok(Exit::Success)
}
