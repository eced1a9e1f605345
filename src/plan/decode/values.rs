//! Single values of the plan: numbers, strings, durations, the words of an enum, lists, and
//! the values that are one of two shapes (`backends`, `max_unavailable`).

use super::*;

impl Decode for bool {
    const EXPECTED: &'static str = "true or false";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match node.value {
            Value::Bool(value) => Some(value),
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for String {
    const EXPECTED: &'static str = "a string";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::String(text) => Some(text.clone()),
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for u64 {
    const EXPECTED: &'static str = "a whole number";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Integer(number) => match u64::try_from(*number) {
                Ok(number) => Some(number),
                Err(_) => {
                    decoder.push(PlanError::new(
                        node.at,
                        path,
                        format!("{number} is out of range: expected a whole number from 0"),
                    ));
                    None
                }
            },
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for f64 {
    const EXPECTED: &'static str = "a number";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match node.value {
            Value::Float(number) => Some(number),
            // Exact for any count a plan would hold.
            Value::Integer(number) => Some(number as f64),
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for PlanDuration {
    const EXPECTED: &'static str = "a duration";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        let Value::String(text) = &node.value else {
            let mut error = PlanError::new(
                node.at,
                path,
                format!("expected a duration, found {}", node.value.kind()),
            )
            .with_help(format!("write {DURATION_FORMS}"));
            if let Value::Integer(number) = node.value {
                error = error.with_help(format!(
                    "a duration needs a unit: write e.g. {number}s or {number}ms"
                ));
            }
            decoder.push(error);
            return None;
        };
        match parse_duration(text) {
            Ok(duration) => Some(PlanDuration(duration)),
            Err(problem) => {
                decoder.push(
                    PlanError::new(node.at, path, format!("invalid duration: {problem}"))
                        .with_help(format!("write {DURATION_FORMS}")),
                );
                None
            }
        }
    }
}

/// Decodes one of a fixed set of words.
fn decode_word<T: Copy>(
    node: &Node,
    path: &str,
    decoder: &mut Decoder,
    values: &[(&str, T)],
) -> Option<T> {
    let words: Vec<&str> = values.iter().map(|(word, _)| *word).collect();
    let expected = format!("one of: {}", words.join(", "));
    let Value::String(text) = &node.value else {
        decoder.type_error(node, path, &expected);
        return None;
    };
    match values.iter().find(|(word, _)| word == text) {
        Some((_, value)) => Some(*value),
        None => {
            decoder.push(
                PlanError::new(node.at, path, format!("unknown value `{text}`"))
                    .with_help(format!("expected {expected}")),
            );
            None
        }
    }
}

impl Decode for KnownHosts {
    const EXPECTED: &'static str = "strict or accept-new";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        decode_word(node, path, decoder, KnownHosts::VALUES)
    }
}

impl Decode for OnDrainTimeout {
    const EXPECTED: &'static str = "fail or force";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        decode_word(node, path, decoder, OnDrainTimeout::VALUES)
    }
}

impl Decode for OnFailure {
    const EXPECTED: &'static str = "manual or auto";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        decode_word(node, path, decoder, OnFailure::VALUES)
    }
}

impl<T: Decode> Decode for Vec<T> {
    const EXPECTED: &'static str = "a list";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        let Value::Sequence(items) = &node.value else {
            decoder.type_error(node, path, Self::EXPECTED);
            return None;
        };
        // A bad item is reported and left out; the list itself still decodes so that the
        // other items are checked too.
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| T::decode(item, &format!("{path}[{index}]"), decoder))
                .collect(),
        )
    }
}

impl<T: Decode> Decode for Located<T> {
    const EXPECTED: &'static str = T::EXPECTED;

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        T::decode(node, path, decoder).map(|value| Located {
            value,
            at: node.at,
            path: path.to_owned(),
        })
    }
}

impl Decode for RawBackends {
    const EXPECTED: &'static str = "a list of backend names, or auto";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::String(text) if text == "auto" => Some(RawBackends::Auto),
            Value::Sequence(_) => {
                Vec::<Located<String>>::decode(node, path, decoder).map(RawBackends::List)
            }
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for RawMaxUnavailable {
    const EXPECTED: &'static str = "a whole number, or a percentage such as 10%";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Integer(_) => u64::decode(node, path, decoder).map(RawMaxUnavailable::Count),
            Value::String(text) => match text.strip_suffix('%').map(str::parse::<u64>) {
                Some(Ok(percent)) => Some(RawMaxUnavailable::Percent(percent)),
                _ => {
                    decoder.push(
                        PlanError::new(node.at, path, format!("invalid value `{text}`"))
                            .with_help(format!("expected {}", Self::EXPECTED)),
                    );
                    None
                }
            },
            _ => {
                decoder.type_error(node, path, Self::EXPECTED);
                None
            }
        }
    }
}

impl Decode for RawVars {
    const EXPECTED: &'static str = "a mapping of names to default values (~ for none)";

    fn decode(node: &Node, path: &str, decoder: &mut Decoder) -> Option<Self> {
        let Value::Mapping(entries) = &node.value else {
            decoder.type_error(node, path, Self::EXPECTED);
            return None;
        };
        let mut vars = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let path = format!("{path}.{}", key.name);
            let default = match &value.value {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                Value::Integer(number) => Some(number.to_string()),
                _ => {
                    // A decimal would lose its digits (1.10 is 1.1): only text is exact.
                    let mut error = PlanError::new(
                        value.at,
                        &path,
                        format!("expected a string, found {}", value.value.kind()),
                    )
                    .with_help("write the value in quotes, or ~ for a value `--var` must give");
                    if matches!(value.value, Value::Float(_) | Value::Bool(_)) {
                        error = error.with_help(
                            "write it in quotes to keep it exactly as written, e.g. \"1.10\"",
                        );
                    }
                    decoder.push(error);
                    continue;
                }
            };
            vars.push((
                Located {
                    value: key.name.clone(),
                    at: key.at,
                    path: path.clone(),
                },
                default.map(|text| Located {
                    value: text,
                    at: value.at,
                    path,
                }),
            ));
        }
        Some(RawVars(vars))
    }
}
