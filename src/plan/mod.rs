//! The plan file: parse (located YAML tree) → decode (raw, typed) → validate (model).

pub mod decode;
pub mod duration;
pub mod error;
pub mod model;
pub mod node;
pub mod raw;
pub mod syntax;
pub mod template;
pub mod validate;

use std::path::{Path, PathBuf};

pub use error::{LoadError, PlanError, PlanErrors, ReadError};
pub use model::*;
pub use template::{Placeholder, PlaceholderValues, REMOTE_KILL_AFTER, Segment, Template};
pub use validate::Given;

/// Reads and validates a plan file. Relative file paths in the plan (`ssh.identity_file`,
/// `ssh.known_hosts_file`, `ssh.config_file`) are taken relative to the plan file's folder,
/// so a plan means the same whatever directory it is run from.
pub fn load(file: &Path) -> Result<Plan, LoadError> {
    load_with(file, Given::default())
}

/// Reads and validates a plan file with values for its vars (`--var NAME=VALUE`).
pub fn load_with(file: &Path, vars: Given) -> Result<Plan, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| ReadError {
        file: file.to_owned(),
        source,
    })?;
    let mut plan = parse_with(&text, vars)
        .map_err(|errors| LoadError::Invalid(PlanErrors::new(file, &text, errors)))?;
    let folder = file.parent().unwrap_or(Path::new(""));
    let ssh = &mut plan.ssh;
    for path in [
        &mut ssh.identity_file,
        &mut ssh.known_hosts_file,
        &mut ssh.config_file,
    ]
    .into_iter()
    .flatten()
    {
        *path = relative_to(folder, path);
    }
    Ok(plan)
}

/// `~/x` and absolute paths stay as they are; anything else is joined to `folder`.
fn relative_to(folder: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || path.starts_with("~") {
        path.to_owned()
    } else {
        folder.join(path)
    }
}

/// Validates plan text; every error found is returned, not only the first.
pub fn parse(text: &str) -> Result<Plan, Vec<PlanError>> {
    parse_with(text, Given::default())
}

/// Validates plan text with values for its vars.
pub fn parse_with(text: &str, vars: Given) -> Result<Plan, Vec<PlanError>> {
    let document = node::parse(text).map_err(|syntax| {
        let key = syntax.duplicate_key.unwrap_or_default();
        vec![PlanError::new(syntax.at, key, syntax.message)]
    })?;
    let mut errors = Vec::new();
    let raw = decode::decode(&document, &mut errors);
    validate::validate(raw, errors, &vars)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAN: &str = "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
        backends: [be_app]\nservers:\n  - name: app1\nrestart:\n  command: systemctl restart app\n";

    fn properties(schema: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        keys.sort();
        keys
    }

    /// The keys the decoder asks for and the schema's (from the struct fields) come from
    /// different code; they must agree.
    #[test]
    fn schema_and_decoder_know_the_same_keys() {
        use decode::{DecodeItem, DecodeSection, keys_asked, plan_keys};
        fn section<T: DecodeSection>() -> Vec<&'static str> {
            keys_asked(|decoder, fields| {
                T::decode_fields(decoder, fields);
            })
        }
        fn item<T: DecodeItem>() -> Vec<&'static str> {
            keys_asked(|decoder, fields| {
                T::decode_fields(decoder, fields);
            })
        }
        let schema = json_schema();
        assert_eq!(properties(&schema), sorted(&plan_keys()));
        let definitions = &schema["definitions"];
        let sections: [(&str, Vec<&str>); 16] = [
            ("Haproxy", item::<raw::RawHaproxy>()),
            ("Server", item::<raw::RawServer>()),
            ("Ssh", section::<raw::RawSsh>()),
            ("Health", section::<raw::RawHealth>()),
            ("Drain", section::<raw::RawDrain>()),
            ("Ready", section::<raw::RawReady>()),
            ("Capacity", section::<raw::RawCapacity>()),
            ("Restart", section::<raw::RawRestart>()),
            ("Hooks", section::<raw::RawHooks>()),
            ("Hook", item::<raw::RawHook>()),
            ("Canary", section::<raw::RawCanary>()),
            ("Verify", section::<raw::RawVerify>()),
            ("Rollback", section::<raw::RawRollback>()),
            ("Analysis", section::<raw::RawAnalysis>()),
            ("State", section::<raw::RawState>()),
            ("Etcd", section::<raw::RawEtcd>()),
        ];
        for (name, keys) in sections {
            // Sections used once are inlined where they are used.
            let section = match name {
                "Restart" => &schema["properties"]["restart"],
                "Etcd" => &definitions["State"]["properties"]["etcd"],
                _ => &definitions[name],
            };
            assert_eq!(properties(section), sorted(&keys), "{name}");
            assert_eq!(
                section["additionalProperties"], false,
                "{name} rejects unknown keys"
            );
        }
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage() {
        for (text, expected) in [
            ("3", MaxUnavailable::Count(3)),
            ("'10%'", MaxUnavailable::Percent(10)),
            ("100%", MaxUnavailable::Percent(100)),
        ] {
            let plan = parse(&format!("{PLAN}capacity:\n  max_unavailable: {text}\n")).unwrap();
            assert_eq!(plan.capacity.max_unavailable, expected, "{text}");
        }
        for bad in ["0", "0%", "101%", "ten", "-1", "1.5"] {
            let errors =
                parse(&format!("{PLAN}capacity:\n  max_unavailable: {bad}\n")).expect_err(bad);
            assert!(
                errors
                    .iter()
                    .any(|error| error.key == "capacity.max_unavailable" && error.at.line == 11),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn defaults_fill_every_key_left_out() {
        let plan = parse(PLAN).unwrap();
        assert_eq!(plan.restart.timeout, std::time::Duration::from_secs(120));
        assert_eq!(plan.health.url.as_str(), "http://{addr}:{port}/health");
        assert_eq!(plan.health.expect_status, 200);
        assert_eq!(plan.drain.timeout, std::time::Duration::from_secs(300));
        assert_eq!(plan.drain.on_timeout, OnDrainTimeout::Fail);
        assert_eq!(plan.ready.timeout, std::time::Duration::from_secs(60));
        assert_eq!(plan.capacity.min_up, 1);
        assert_eq!(
            plan.capacity.max_unavailable,
            crate::plan::MaxUnavailable::Count(1)
        );
        assert_eq!(plan.ssh.known_hosts, KnownHosts::Strict);
        assert_eq!(plan.ssh.connect_timeout, std::time::Duration::from_secs(10));
        assert_eq!(plan.poll_interval, std::time::Duration::from_millis(200));
        assert_eq!(plan.servers[0].host, None);
    }

    fn given(pairs: &[(&str, &str)]) -> Given<'static> {
        let values: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Given::values(values.leak())
    }

    const VERSIONED: &str = "version: 1\nvars:\n  version: ~\n  channel: stable\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
        backends: [be_app]\nservers:\n  - name: app1\nrestart:\n  command: deploy {version} {channel} {server}\n";

    #[test]
    fn vars_take_the_command_line_else_their_default_and_are_shell_quoted() {
        let plan = parse_with(VERSIONED, given(&[("version", "2; rm -rf /")])).unwrap();
        assert_eq!(plan.vars["version"], "2; rm -rf /");
        assert_eq!(plan.vars["channel"], "stable");
        let values = PlaceholderValues::fixture("app1");
        let line = template::remote_command(
            &plan.restart.command,
            &values,
            std::time::Duration::from_secs(5),
        );
        assert!(
            line.contains(r"deploy '\''2; rm -rf /'\'' stable app1"),
            "{line}"
        );
        let plan = parse_with(
            VERSIONED,
            given(&[("version", "1"), ("channel", "beta"), ("version", "3")]),
        )
        .unwrap();
        assert_eq!(
            (plan.vars["version"].as_str(), plan.vars["channel"].as_str()),
            ("3", "beta"),
            "the last --var of a name wins"
        );
    }

    #[test]
    fn a_required_var_without_a_value_is_reported_where_it_is_declared() {
        let errors = parse(VERSIONED).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].at.line, errors[0].at.column), (3, 3));
        assert_eq!(errors[0].key, "vars.version");
        assert_eq!(errors[0].message, "var `version` has no value");
        assert_eq!(
            errors[0].help.as_deref(),
            Some("give it on the command line: --var version=VALUE")
        );
    }

    #[test]
    fn a_partial_plan_leaves_a_var_without_a_value_as_written() {
        let partial = Given {
            values: &[],
            partial: true,
        };
        let plan = parse_with(VERSIONED, partial).unwrap();
        assert_eq!(plan.vars["version"], "{version}");
    }

    #[test]
    fn a_var_the_plan_does_not_declare_is_an_error() {
        let errors =
            parse_with(VERSIONED, given(&[("version", "2"), ("colour", "x")])).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].message,
            "--var colour: the plan declares no var `colour`"
        );
        assert_eq!(
            errors[0].help.as_deref(),
            Some("the plan's vars: version, channel")
        );
        let errors = parse_with(PLAN, given(&[("version", "2")])).unwrap_err();
        assert!(
            errors[0]
                .help
                .as_deref()
                .unwrap()
                .contains("declare it under `vars:`")
        );
    }

    #[test]
    fn a_placeholder_that_is_neither_built_in_nor_declared_is_an_error_at_its_line() {
        let text = VERSIONED.replace("{channel}", "{chanel}");
        let errors = parse_with(&text, given(&[("version", "2")])).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].at.line, errors[0].key.as_str()),
            (12, "restart.command")
        );
        assert_eq!(errors[0].message, "unknown placeholder `{chanel}`");
        assert!(
            errors[0]
                .help
                .as_deref()
                .unwrap()
                .contains("{channel}, {version}"),
            "{errors:?}"
        );
        let text = VERSIONED.replace("{channel}", "{previous}");
        let errors = parse_with(&text, given(&[("version", "2")])).unwrap_err();
        assert_eq!(
            errors[0].message,
            "`{previous}` is known only in rollback.command"
        );
    }

    #[test]
    fn var_values_must_be_written_exactly() {
        for (value, line) in [("1.10", 4), ("true", 4), ("[a]", 4)] {
            let text = VERSIONED.replace("channel: stable", &format!("channel: {value}"));
            let errors = parse_with(&text, given(&[("version", "2")])).unwrap_err();
            assert_eq!(errors[0].key, "vars.channel", "{value}");
            assert_eq!(errors[0].at.line, line, "{value}");
        }
        let text = VERSIONED.replace("channel: stable", "channel: 7");
        let plan = parse_with(&text, given(&[("version", "2")])).unwrap();
        assert_eq!(plan.vars["channel"], "7");
        for bad in ["server", "9lives", "a-b"] {
            let text = VERSIONED.replace("channel: stable", &format!("{bad}: x"));
            let errors = parse_with(&text, given(&[("version", "2")])).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|error| error.key == format!("vars.{bad}")),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn relative_paths_follow_the_plan_file() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("plan.yaml");
        let text = format!(
            "{PLAN}ssh:\n  config_file: ssh_config\n  identity_file: ~/.ssh/id\n  known_hosts_file: /etc/ssh/kh\n"
        );
        std::fs::write(&file, text).unwrap();
        let plan = load(&file).unwrap();
        assert_eq!(plan.ssh.config_file, Some(folder.path().join("ssh_config")));
        assert_eq!(plan.ssh.identity_file, Some(PathBuf::from("~/.ssh/id")));
        assert_eq!(
            plan.ssh.known_hosts_file,
            Some(PathBuf::from("/etc/ssh/kh"))
        );
    }

    fn outside_charset() -> impl Strategy<Value = String> {
        let bad = any::<char>().prop_filter("outside the charset", |c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        });
        ("[A-Za-z0-9_.:-]{0,6}", bad, "[A-Za-z0-9_.:-]{0,6}")
            .prop_map(|(prefix, bad, suffix)| format!("{prefix}{bad}{suffix}"))
    }

    proptest! {
        /// Whatever the name, written as a YAML string it never gets through as a name.
        #[test]
        fn a_name_outside_the_charset_is_rejected_through_the_whole_plan(name in outside_charset()) {
            let quoted = serde_json::to_string(&name).unwrap();
            let as_server = PLAN.replace("name: app1", &format!("name: {quoted}"));
            let errors = parse(&as_server).expect_err("rejected as a server name");
            prop_assert!(errors.iter().all(|error| error.at.line == 7), "{errors:?}");
            let as_backend = PLAN.replace("[be_app]", &format!("[{quoted}]"));
            let errors = parse(&as_backend).expect_err("rejected as a backend name");
            prop_assert!(errors.iter().all(|error| error.at.line == 5), "{errors:?}");
        }
    }
}
