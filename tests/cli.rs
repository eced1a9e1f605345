//! The command line itself: help, usage errors, completions, man pages, unbuilt commands.

mod common;

use common::rollout;

#[test]
fn every_subcommand_help_has_an_example() {
    for command in [
        "init",
        "validate",
        "plan",
        "apply",
        "status",
        "abort",
        "resume",
        "rollback",
        "timeline",
        "schema",
        "completions",
        "man",
    ] {
        let outcome = rollout([command, "--help"]).run().code(0);
        assert!(
            outcome.stdout.contains("Example") && outcome.stdout.contains("haproxy-rollout "),
            "`{command} --help` shows an example:\n{}",
            outcome.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    rollout(["validate"]).run().code(2);
    rollout(["frobnicate"]).run().code(2);
    rollout(["--output", "yaml", "validate", "plans/single.yaml"])
        .run()
        .code(2);
    rollout(["-v", "-q", "validate", "plans/single.yaml"])
        .run()
        .code(2);
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let outcome = rollout(["completions", shell]).run().code(0);
        assert!(outcome.stdout.contains("haproxy-rollout"), "{shell}");
        assert!(
            outcome.stdout.contains("validate"),
            "{shell} completes subcommands"
        );
    }
}

#[test]
fn man_page_on_stdout_and_per_command_pages_in_a_directory() {
    let outcome = rollout(["man"]).run().code(0);
    assert!(
        outcome.stdout.starts_with(".ie"),
        "roff: {}",
        &outcome.stdout[..40]
    );
    assert!(outcome.stdout.contains("haproxy\\-rollout"));

    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    rollout(["man", "--out-dir", dir_arg]).run().code(0);
    for page in [
        "haproxy-rollout.1",
        "haproxy-rollout-apply.1",
        "haproxy-rollout-validate.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
}

/// See: #14, `--version` names the commit it was built from.
#[test]
fn version_flag() {
    let outcome = rollout(["--version"]).run().code(0);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        );
    assert_eq!(
        outcome.stdout.trim(),
        format!(
            "haproxy-rollout {} (commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
