//! Decoding the located YAML tree into the plan's shape (`raw.rs`): every unknown key (with
//! the closest known one), missing key and wrong type is reported with its location, all in
//! one pass.

use super::duration::{DURATION_FORMS, parse_duration};
use super::error::PlanError;
use super::model::{KnownHosts, OnDrainTimeout, OnFailure};
use super::node::{Key, Location, Node, Value};
use super::raw::*;

/// Decodes located YAML into the raw plan, collecting every error.
pub fn decode(document: &Node, errors: &mut Vec<PlanError>) -> RawPlan {
    let mut decoder = Decoder { errors };
    if document.value == Value::Null {
        decoder.errors.push(
            PlanError::new(document.at, "", "the plan is empty").with_help(
                "a plan needs at least: version, haproxy, backends, servers, restart.command",
            ),
        );
        return RawPlan::default();
    }
    let Some(mut fields) = decoder.mapping(document, "") else {
        return RawPlan::default();
    };
    let plan = plan_fields(&mut decoder, &mut fields);
    decoder.finish(fields);
    plan
}

/// The plan's top-level keys.
fn plan_fields(decoder: &mut Decoder, fields: &mut Fields) -> RawPlan {
    RawPlan {
        version: decoder.required(fields, "version", "version: 1"),
        vars: decoder.optional(fields, "vars"),
        haproxy: decoder.required(fields, "haproxy", "a list of {name, socket}"),
        backends: decoder.required(
            fields,
            "backends",
            "a list of backend names, e.g. [be_app], or auto",
        ),
        servers: decoder.required(fields, "servers", "a list of {name, host}"),
        ssh: decoder.section(fields, "ssh"),
        restart: decoder.required_section(fields, "restart", "restart.command"),
        health: decoder.section(fields, "health"),
        drain: decoder.section(fields, "drain"),
        ready: decoder.section(fields, "ready"),
        capacity: decoder.section(fields, "capacity"),
        poll_interval: decoder.optional(fields, "poll_interval"),
        hooks: decoder.section(fields, "hooks"),
        canary: decoder.section(fields, "canary"),
        verify: decoder.section(fields, "verify"),
        skip_current: decoder.optional(fields, "skip_current"),
        rollback: decoder.section(fields, "rollback"),
        state: decoder.section(fields, "state"),
    }
}

/// The keys `read` asks for: the keys valid in the part of the plan it decodes.
#[cfg(test)]
pub(super) fn keys_asked(read: impl FnOnce(&mut Decoder, &mut Fields)) -> Vec<&'static str> {
    let mut errors = Vec::new();
    let mut decoder = Decoder {
        errors: &mut errors,
    };
    let mut fields = Fields {
        path: String::new(),
        at: Location { line: 1, column: 1 },
        entries: &[],
        used: Vec::new(),
        asked: Vec::new(),
    };
    read(&mut decoder, &mut fields);
    fields.asked
}

/// The plan's top-level keys.
#[cfg(test)]
pub(super) fn plan_keys() -> Vec<&'static str> {
    keys_asked(|decoder, fields| {
        plan_fields(decoder, fields);
    })
}

/// Collects errors while walking the tree.
pub struct Decoder<'e> {
    errors: &'e mut Vec<PlanError>,
}

/// The entries of one mapping, with which keys were read, and every key the decoder asked
/// for (present or not): the keys valid here, named once, where each is decoded.
pub struct Fields<'n> {
    path: String,
    at: Location,
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
    asked: Vec<&'static str>,
}

impl Fields<'_> {
    /// `key` is valid here.
    fn ask(&mut self, key: &'static str) {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
    }

    fn child_path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Something a plan value can be decoded into.
pub trait Decode: Sized {
    /// What the value should be, for "expected ..." messages.
    const EXPECTED: &'static str;

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self>;
}

impl<'e> Decoder<'e> {
    pub(super) fn push(&mut self, error: PlanError) {
        self.errors.push(error);
    }

    pub(super) fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        let mut error = PlanError::new(
            node.at,
            path,
            format!("expected {expected}, found {}", node.value.kind()),
        );
        if matches!(
            node.value,
            Value::Integer(_) | Value::Float(_) | Value::Bool(_)
        ) && expected.contains("string")
        {
            error = error.with_help("write it in quotes to make it a string");
        }
        self.push(error);
    }

    fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Mapping(entries) => Some(Fields {
                path: path.to_owned(),
                at: node.at,
                entries,
                used: vec![false; entries.len()],
                asked: Vec::new(),
            }),
            _ => {
                self.type_error(node, path, "a mapping of keys to values");
                None
            }
        }
    }

    fn take<'n>(fields: &mut Fields<'n>, key: &'static str) -> Option<&'n Node> {
        fields.ask(key);
        let index = fields
            .entries
            .iter()
            .position(|(name, _)| name.name == key)?;
        fields.used[index] = true;
        Some(&fields.entries[index].1)
    }

    /// An optional key; `null` counts as absent.
    pub fn optional<T: Decode>(
        &mut self,
        fields: &mut Fields,
        key: &'static str,
    ) -> Option<Located<T>> {
        let path = fields.child_path(key);
        let node = Self::take(fields, key)?;
        if node.value == Value::Null {
            self.type_error(node, &path, T::EXPECTED);
            return None;
        }
        T::decode(node, &path, self).map(|value| Located {
            value,
            at: node.at,
            path,
        })
    }

    /// A key that must be present.
    pub fn required<T: Decode>(
        &mut self,
        fields: &mut Fields,
        key: &'static str,
        example: &str,
    ) -> Option<Located<T>> {
        fields.ask(key);
        if !fields.entries.iter().any(|(name, _)| name.name == key) {
            let path = fields.child_path(key);
            self.push(
                PlanError::new(fields.at, path, format!("missing required key `{key}`"))
                    .with_help(format!("expected {}: {example}", T::EXPECTED)),
            );
            return None;
        }
        self.optional(fields, key)
    }

    /// An optional section (a mapping); `null` or absent means every default.
    pub fn section<T: DecodeSection>(
        &mut self,
        fields: &mut Fields,
        key: &'static str,
    ) -> Option<T> {
        let path = fields.child_path(key);
        let node = Self::take(fields, key)?;
        if node.value == Value::Null {
            return Some(T::default());
        }
        let mut inner = self.mapping(node, &path)?;
        // A key missing from the section is reported where the section starts.
        if let Some((key, _)) = fields.entries.iter().find(|(name, _)| name.name == key) {
            inner.at = key.at;
        }
        let section = T::decode_fields(self, &mut inner);
        self.finish(inner);
        Some(section)
    }

    fn required_section<T: DecodeSection>(
        &mut self,
        fields: &mut Fields,
        key: &'static str,
        needs: &str,
    ) -> Option<T> {
        let section = self.section::<T>(fields, key);
        if section.is_none() && !fields.entries.iter().any(|(name, _)| name.name == key) {
            self.push(
                PlanError::new(fields.at, key, format!("missing required key `{key}`"))
                    .with_help(format!("the plan needs at least `{needs}`")),
            );
        }
        section
    }

    /// Reports every key of the mapping that nothing read, naming the keys valid here.
    pub fn finish(&mut self, fields: Fields) {
        let known = &fields.asked;
        for ((key, _), used) in fields.entries.iter().zip(&fields.used) {
            if *used {
                continue;
            }
            let path = join(&fields.path, &key.name);
            let mut help = format!("valid keys here: {}", known.join(", "));
            if let Some(close) = closest(&key.name, known) {
                help = format!("did you mean `{close}`? {help}");
            }
            self.push(
                PlanError::new(key.at, path, format!("unknown key `{}`", key.name)).with_help(help),
            );
        }
    }
}

fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(key, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A mapping section whose keys all have defaults.
pub trait DecodeSection: Default {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self;
}

/// A list item that is a mapping with its own keys.
pub(super) trait DecodeItem: Sized {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self;
}

impl<T: DecodeItem> Decode for T {
    const EXPECTED: &'static str = "a mapping";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        let mut fields = decoder.mapping(node, path)?;
        let item = T::decode_fields(decoder, &mut fields);
        decoder.finish(fields);
        Some(item)
    }
}

mod sections;
mod values;
