//! `validate` and the plan format, run through the real binary.

mod common;

use common::{rollout, root, yaml_files};

#[test]
fn every_shipped_plan_is_valid() {
    let mut files = yaml_files(&root().join("plans"));
    files.extend(yaml_files(&root().join("examples")));
    assert!(
        files.len() >= 4,
        "plans/ and examples/ hold at least four plans"
    );
    for file in files {
        // A plan with a required var is valid once it is given.
        let outcome = rollout([
            std::ffi::OsStr::new("validate"),
            file.as_os_str(),
            "--var".as_ref(),
            "version=1.4.2".as_ref(),
        ])
        .run();
        let outcome = if outcome.code == 2 && outcome.stderr.contains("declares no var `version`") {
            rollout([std::ffi::OsStr::new("validate"), file.as_os_str()])
                .run()
                .code(0)
        } else {
            outcome.code(0)
        };
        assert!(outcome.stderr.starts_with("valid: "), "{}", outcome.stderr);
        assert_eq!(
            outcome.stderr.lines().count(),
            1,
            "a one-line summary: {}",
            outcome.stderr
        );
    }
}

#[test]
fn summary_names_instances_backends_and_counts_servers() {
    let outcome = rollout(["validate", "plans/multi-backend.yaml"])
        .run()
        .code(0);
    assert_eq!(
        outcome.stderr.trim_end(),
        "valid: plans/multi-backend.yaml: 1 HAProxy (edge), 2 backends (be_web, be_api), 3 servers"
    );
    assert_eq!(outcome.stdout, "", "stdout is for data only");
}

/// One expectation of a bad plan: `# expect: LINE KEY` at its top.
struct Expectation {
    line: u64,
    key: String,
}

fn expectations(text: &str) -> Vec<Expectation> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(|rest| {
            let mut words = rest.splitn(2, ' ');
            Expectation {
                line: words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a line number"),
                key: words.next().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_bad_plan_fails_with_exit_2_naming_line_and_key() {
    let files = yaml_files(&root().join("tests/plans/bad"));
    assert!(
        files.len() >= 25,
        "the corpus holds at least 25 bad plans, found {}",
        files.len()
    );
    for file in files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{relative} says what it expects");
        let outcome = rollout(["--color", "never", "validate", &relative]).run();
        assert_eq!(
            outcome.code, 2,
            "{relative}: exit status\n{}",
            outcome.stderr
        );
        let headlines: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|line| line.starts_with("error: ") && line.contains(".yaml:"))
            .collect();
        for Expectation { line, key } in expected {
            let prefix = format!("error: {relative}:{line}:");
            let found = headlines.iter().any(|headline| {
                let Some(rest) = headline.strip_prefix(&prefix) else {
                    return false;
                };
                // After the column: `KEY: message`, or the message alone for the document.
                let after_column = rest.split_once(": ").map_or("", |(_, after)| after);
                key.is_empty() || after_column.starts_with(&format!("{key}: "))
            });
            assert!(
                found,
                "{relative}: no error at line {line} for key `{key}` in\n{}",
                outcome.stderr
            );
        }
        assert!(
            outcome.stderr.trim_end().ends_with(" has 1 error")
                || outcome.stderr.contains(" errors"),
            "{relative}: a closing count\n{}",
            outcome.stderr
        );
    }
}

#[test]
fn all_errors_of_a_file_are_reported_in_one_run() {
    let outcome = rollout([
        "--color",
        "never",
        "validate",
        "tests/plans/bad/many-errors-at-once.yaml",
    ])
    .run()
    .code(2);
    insta::assert_snapshot!("many_errors_human", outcome.stderr);
}

#[test]
fn errors_as_json_on_stdout() {
    let outcome = rollout([
        "--output",
        "json",
        "validate",
        "tests/plans/bad/many-errors-at-once.yaml",
    ])
    .run()
    .code(2);
    let event = common::event(outcome.stdout.trim());
    assert_eq!(event["event"], "plan_invalid");
    let errors = event["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4);
    assert_eq!(errors[0]["line"], 5);
    assert_eq!(errors[0]["key"], "version");
    assert_eq!(errors[3]["key"], "capcity");
    assert_eq!(
        errors[3]["help"],
        "did you mean `capacity`? valid keys here: version, vars, haproxy, backends, servers, ssh, restart, health, drain, ready, capacity, poll_interval, hooks, canary, verify, skip_current, rollback, state"
    );
    assert_eq!(outcome.stderr, "", "json mode keeps stderr quiet");
}

#[test]
fn valid_plan_as_json() {
    let outcome = rollout(["--output", "json", "validate", "plans/ha-pair-tcp.yaml"])
        .run()
        .code(0);
    let event = common::event(outcome.stdout.trim());
    assert_eq!(event["event"], "plan_valid");
    assert_eq!(event["haproxy"], serde_json::json!(["lb-a", "lb-b"]));
    assert_eq!(event["servers"], 4);
}

#[test]
fn vars_come_from_the_command_line_and_a_missing_one_is_named_with_its_flag() {
    let plan = "tests/plans/bad/var-required-without-value.yaml";
    let missing = rollout(["--color", "never", "validate", plan])
        .run()
        .code(2);
    assert!(
        missing.stderr.contains(&format!(
            "error: {plan}:4:3: vars.version: var `version` has no value"
        )) && missing
            .stderr
            .contains("give it on the command line: --var version=VALUE"),
        "{}",
        missing.stderr
    );
    let given = rollout(["validate", plan, "--var", "version=1.4.2"])
        .run()
        .code(0);
    assert!(given.stderr.starts_with("valid: "), "{}", given.stderr);
    let unknown = rollout([
        "--color",
        "never",
        "validate",
        plan,
        "--var",
        "version=1.4.2",
        "--var",
        "colour=blue",
    ])
    .run()
    .code(2);
    assert!(
        unknown
            .stderr
            .contains("--var colour: the plan declares no var `colour`")
            && unknown.stderr.contains("the plan's vars: version, channel"),
        "{}",
        unknown.stderr
    );
    let malformed = rollout(["validate", plan, "--var", "version"])
        .run()
        .code(2);
    assert!(
        malformed.stderr.contains("expected NAME=VALUE"),
        "{}",
        malformed.stderr
    );
}

#[test]
fn a_missing_plan_file_is_a_usage_error() {
    let outcome = rollout(["validate", "plans/does-not-exist.yaml"])
        .run()
        .code(2);
    assert!(
        outcome
            .stderr
            .contains("cannot read plan file plans/does-not-exist.yaml: No such file"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn color_follows_the_flag_and_no_color() {
    let bad = "tests/plans/bad/version-2.yaml";
    let colored = rollout(["--color", "always", "validate", bad])
        .run()
        .code(2);
    assert!(colored.stderr.contains("\u{1b}["), "--color always colors");
    let plain = rollout(["--color", "never", "validate", bad]).run().code(2);
    assert!(!plain.stderr.contains('\u{1b}'));
    // stderr is not a terminal here, so `auto` is plain; NO_COLOR must not force color on.
    let auto = rollout(["validate", bad])
        .env("NO_COLOR", "1")
        .run()
        .code(2);
    assert!(!auto.stderr.contains('\u{1b}'));
    let forced = rollout(["--color", "always", "validate", bad])
        .env("NO_COLOR", "1")
        .run()
        .code(2);
    assert!(
        forced.stderr.contains("\u{1b}["),
        "an explicit flag beats NO_COLOR"
    );
}

#[test]
fn the_committed_schema_is_current() {
    let outcome = rollout(["schema"]).run().code(0);
    let committed = std::fs::read_to_string(root().join("docs/plan.schema.json")).unwrap();
    assert_eq!(
        outcome.stdout, committed,
        "docs/plan.schema.json is stale: run `cargo run -- schema > docs/plan.schema.json`"
    );
}

#[test]
fn shipped_plans_point_editors_at_the_schema() {
    let mut files = yaml_files(&root().join("plans"));
    files.extend(yaml_files(&root().join("examples")));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../docs/plan.schema.json\n"),
            "{} starts with the yaml-language-server line",
            file.display()
        );
    }
}
