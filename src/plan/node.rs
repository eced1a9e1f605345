//! The plan file as a YAML tree in which every node and key remembers its line and column.
//!
//! serde-saphyr stops at the first error it meets. Parsing into this tree first means only
//! YAML syntax errors and duplicate keys end parsing; every later check (unknown keys, wrong
//! types, bad values) walks the tree and reports all it finds, each with its location.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and column in the plan file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl Location {
    fn from_saphyr(location: serde_saphyr::Location) -> Self {
        // An empty document has no node: point at its start.
        Location {
            line: location.line().max(1),
            column: location.column().max(1),
        }
    }
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub at: Location,
}

/// A mapping key and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i128),
    Float(f64),
    String(String),
    Sequence(Vec<Node>),
    /// Entries in file order. Duplicate keys never get this far: the parser rejects them.
    Mapping(Vec<(Key, Node)>),
}

impl Value {
    /// What an error message calls this kind of value ("found a list").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a decimal number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }
}

/// A YAML document that could not be parsed at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub at: Location,
    /// Set when the problem is a key given twice in one mapping.
    pub duplicate_key: Option<String>,
    pub message: String,
}

/// Parses YAML text into a located tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    serde_saphyr::from_str::<Node>(text).map_err(|error| syntax_error(&error))
}

fn syntax_error(error: &serde_saphyr::Error) -> SyntaxError {
    let error = error.without_snippet();
    let at = error
        .location()
        .map(Location::from_saphyr)
        .unwrap_or(Location { line: 1, column: 1 });
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = error {
        let shown = key.as_deref().unwrap_or("(a key)");
        return SyntaxError {
            at,
            duplicate_key: key.clone(),
            message: format!("duplicate key `{shown}`: each key may appear only once in a mapping"),
        };
    }
    let formatter = serde_saphyr::UserMessageFormatter;
    let rendered = error.render_with_options(serde_saphyr::render_options! {
        formatter: &formatter,
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The location is reported separately, in the same form as every other plan error.
    let message = match rendered.rfind(" at line ") {
        Some(index) => rendered[..index].to_owned(),
        None => rendered,
    };
    SyntaxError {
        at,
        duplicate_key: None,
        message: format!("invalid YAML: {message}"),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            at: Location::from_saphyr(spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Integer(value.into()))
    }

    fn visit_i128<E>(self, value: i128) -> Result<Value, E> {
        Ok(Value::Integer(value))
    }

    fn visit_u128<E>(self, value: u128) -> Result<Value, E> {
        // Far beyond any value a plan can use; saturating keeps the "too large" error honest.
        Ok(Value::Integer(i128::try_from(value).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = access.next_key::<Spanned<String>>()? {
            let value = access.next_value::<Node>()?;
            let key = Key {
                name: key.value,
                at: Location::from_saphyr(key.referenced),
            };
            entries.push((key, value));
        }
        Ok(Value::Mapping(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            Value::Mapping(entries) => entries,
            other => panic!("expected a mapping, got {other:?}"),
        }
    }

    #[test]
    fn keeps_locations_of_keys_and_values() {
        let node = parse("version: 1\nservers:\n  - name: app1\n").unwrap();
        let entries = mapping(&node);
        assert_eq!(entries[0].0.name, "version");
        assert_eq!(entries[0].1.value, Value::Integer(1));
        assert_eq!(
            entries[0].1.at,
            Location {
                line: 1,
                column: 10
            }
        );
        let Value::Sequence(servers) = &entries[1].1.value else {
            panic!("servers is not a list")
        };
        let server = mapping(&servers[0]);
        assert_eq!(server[0].0.at, Location { line: 3, column: 5 });
        assert_eq!(server[0].1.value, Value::String("app1".into()));
    }

    #[test]
    fn duplicate_keys_are_a_syntax_error_with_the_key() {
        let error = parse("version: 1\nversion: 2\n").unwrap_err();
        assert_eq!(error.duplicate_key.as_deref(), Some("version"));
        assert_eq!(error.at, Location { line: 2, column: 1 });
    }

    #[test]
    fn broken_yaml_reports_where() {
        let error = parse("backends: [be_app\n").unwrap_err();
        assert_eq!(error.at.line, 1);
        assert!(
            error.message.starts_with("invalid YAML: "),
            "{}",
            error.message
        );
        assert!(!error.message.contains(" at line "), "{}", error.message);
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let node = parse("port: \"22\"\n").unwrap();
        assert_eq!(mapping(&node)[0].1.value, Value::String("22".into()));
    }
}
