//! What the fault and recovery tests share: plans with a slow restart, requests held on one
//! server, and reading the events and summary of a run.

use std::time::Duration;

use super::lab::LabOptions;
use super::rollout_lab::{RolloutLab, request};
use super::{Background, events, rollout};

pub fn path(file: &std::path::Path) -> &str {
    file.to_str().unwrap()
}

pub fn routed() -> LabOptions {
    LabOptions {
        route_by_path: true,
        ..LabOptions::default()
    }
}

/// A request held open on one server for `millis` (through HAProxy, so it is a session).
pub fn hold(
    lab: &RolloutLab,
    server: usize,
    millis: u64,
) -> std::thread::JoinHandle<Result<(), String>> {
    let port = lab.lab.frontend_port;
    let path: &'static str =
        Box::leak(format!("/to/app{server}/slow?ms={millis}").into_boxed_str());
    let handle = std::thread::spawn(move || request(port, path));
    std::thread::sleep(Duration::from_millis(200));
    handle
}

/// A plan whose restart command sleeps `seconds` before restarting: time to act mid-restart.
pub fn slow_restart_plan(lab: &RolloutLab, name: &str, seconds: u32) -> std::path::PathBuf {
    let command = format!(
        "\"sleep {seconds}; {} {{port}}\"",
        lab.restart_script.display()
    );
    lab.plan(name, Some(&command), "")
}

/// Waits until app1's restart has begun (maintenance set, the command running).
pub fn wait_restarting(running: &Background) {
    running.wait_for("app1 restarting", |event| {
        event["event"] == "stage" && event["server"] == "app1" && event["stage"] == "restarting"
    });
}

pub fn apply(plan: &std::path::Path) -> Background {
    rollout(["--output", "json", "apply", "--yes", path(plan)]).spawn()
}

pub fn is(event: &serde_json::Value, kind: &str, server: &str) -> bool {
    event["event"] == kind && event["server"] == server
}

pub fn summary(stdout: &str) -> serde_json::Value {
    events(stdout)
        .into_iter()
        .rev()
        .find(|event| event["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {stdout}"))
}

pub fn state_of(summary: &serde_json::Value, server: &str) -> String {
    summary["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["server"] == server)
        .map(|entry| entry["state"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{server} in {summary}"))
}

/// The journal a rollout of `plan` writes (the tests' own state directory).
pub fn journal_of(plan: &std::path::Path) -> std::path::PathBuf {
    let root = super::scratch().join(format!("state-{}", std::process::id()));
    haproxy_rollout::journal::rollout_dir(&root, plan)
        .unwrap()
        .join("journal.jsonl")
}

/// Starts `apply` and SIGKILLs it once app1's restart command runs on its host, as a
/// cancelled CI job would end: the restart command itself goes on.
pub fn crash_during_the_restart(plan: &std::path::Path) {
    let running = apply(plan);
    wait_restarting(&running);
    wait_command_running(plan, "app1");
    std::thread::sleep(Duration::from_millis(200));
    running.signal("KILL");
    running.finish();
}

/// Waits until a command of the rollout of `plan` for `server` runs on its host: its marker
/// (`/tmp/haproxy-rollout.<rollout>.<server>.<n>`) holds the command's process group.
pub fn wait_command_running(plan: &std::path::Path, server: &str) {
    let rollout = journal_of(plan)
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap();
    let prefix = format!("haproxy-rollout.{rollout}.{server}.");
    let start = std::time::Instant::now();
    loop {
        let running = std::fs::read_dir("/tmp").unwrap().flatten().any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix)
                && !name.ends_with(".out")
                && !name.ends_with(".err")
                && std::fs::read_to_string(entry.path()).is_ok_and(|pid| !pid.trim().is_empty())
        });
        if running {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the command for {server} never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
