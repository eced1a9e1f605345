//! `schema`: the JSON Schema of the plan format, for editors.

use crate::exit::Exit;

pub fn run() -> anyhow::Result<Exit> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::plan::json_schema())?
    );
    Ok(Exit::Success)
}
