//! The plan file: parse (located YAML tree) → decode (raw, typed) → validate (model).

pub mod duration;
pub mod error;
pub mod model;
pub mod node;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use error::{LoadError, PlanError, PlanErrors, ReadError};
pub use model::*;

/// Reads and validates a plan file.
pub fn load(file: &Path) -> Result<Plan, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| ReadError {
        file: file.to_owned(),
        source,
    })?;
    parse(&text).map_err(|errors| LoadError::Invalid(PlanErrors::new(file, &text, errors)))
}

/// Validates plan text; every error found is returned, not only the first.
pub fn parse(text: &str) -> Result<Plan, Vec<PlanError>> {
    let document = node::parse(text).map_err(|syntax| {
        let key = syntax.duplicate_key.unwrap_or_default();
        vec![PlanError::new(syntax.at, key, syntax.message)]
    })?;
    let mut errors = Vec::new();
    let raw = raw::decode(&document, &mut errors);
    validate::validate(raw, errors)
}

/// The JSON Schema of plan format v1, for editors.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<raw::RawPlan>()
        .to_value();
    drop_null_alternatives(&mut schema);
    schema
}

/// schemars offers `null` for every `Option`; a plan may leave a key out, but never gives it
/// `null`, so the schema should not suggest it.
fn drop_null_alternatives(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(serde_json::Value::Array(alternatives)) = object.get_mut("anyOf") {
                alternatives.retain(|alternative| alternative.get("type") != Some(&"null".into()));
                if alternatives.len() == 1 {
                    let only = alternatives.pop().expect("one alternative");
                    object.remove("anyOf");
                    if only.get("$ref").is_some() {
                        // Draft 7 ignores keywords beside `$ref`: keep the description outside.
                        object.insert("allOf".to_owned(), serde_json::Value::Array(vec![only]));
                    } else if let serde_json::Value::Object(fields) = only {
                        object.extend(fields);
                    }
                }
            }
            object.values_mut().for_each(drop_null_alternatives);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}
