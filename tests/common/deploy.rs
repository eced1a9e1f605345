//! Deploying a version in the lab: a plan with `vars` and `verify`, the versions the
//! applications answer, and a command run under live traffic, counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::rollout_lab::{RolloutLab, Traffic};
use super::{Outcome, events, rollout};

/// `verify` reads each application's /version directly; the restart deploys `{version}`.
pub const VERSIONED: &str = "vars:\n  version: ~\n\
    verify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n  timeout: 1s\n";

pub fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}

/// What the application on `port` answers at /version.
pub fn version_of(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /version HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default()
}

pub fn versions(lab: &RolloutLab) -> Vec<String> {
    lab.ports.iter().map(|port| version_of(*port)).collect()
}

/// The restart script deploying `version` (a placeholder, or a fixed one).
pub fn deploying(lab: &RolloutLab, version: &str) -> String {
    format!("{} {{port}} {version}", lab.restart_script.display())
}

/// A versioned plan that rolls back with the restart script and `{previous}`.
pub fn with_rollback(lab: &RolloutLab, name: &str, restart: &str, on_failure: &str) -> PathBuf {
    let rollback = format!(
        "rollback:\n  command: {} {{port}} {{previous}}\n  on_failure: {on_failure}\n",
        lab.restart_script.display()
    );
    lab.plan(name, Some(restart), &format!("{VERSIONED}{rollback}"))
}

/// A plan whose servers must answer healthy (and verify) within 3 s of their restart.
pub fn impatient(plan: &Path) {
    let text = std::fs::read_to_string(plan)
        .unwrap()
        .replace("within: 10s", "within: 3s");
    std::fs::write(plan, text).unwrap();
}

/// What a command did while live traffic ran through HAProxy.
pub struct UnderTraffic {
    pub outcome: Outcome,
    pub events: Vec<Value>,
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
}

impl UnderTraffic {
    /// The first event of this name.
    pub fn event(&self, name: &str) -> &Value {
        self.events
            .iter()
            .find(|event| event["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {}", self.outcome.stdout))
    }

    pub fn summary(&self) -> &Value {
        self.events.last().expect("a summary last")
    }

    /// Exit status `code`, and not one request lost.
    pub fn expect(&self, code: i32) {
        let outcome = &self.outcome;
        assert_eq!(outcome.code, code, "{}\n{}", outcome.stdout, outcome.stderr);
        assert_eq!(self.failed, 0, "failed requests: {:?}", self.failures);
        assert!(self.ok > 10, "traffic ran: {} requests", self.ok);
    }
}

/// Runs haproxy-rollout with `--output json` and `args` while 4 clients (and
/// `slow_clients` asking for 1.5 s requests) send traffic through HAProxy.
pub fn under_traffic(lab: &RolloutLab, slow_clients: usize, args: &[&str]) -> UnderTraffic {
    let traffic = Traffic::start(lab.lab.frontend_port, 4, slow_clients);
    std::thread::sleep(Duration::from_millis(300));
    let outcome = rollout(["--output", "json"].iter().chain(args)).run();
    let (ok, failed, failures) = traffic.stop();
    UnderTraffic {
        events: events(&outcome.stdout),
        outcome,
        ok,
        failed,
        failures,
    }
}

/// Every server but `except` is in traffic and exactly UP.
pub fn up_except(lab: &RolloutLab, except: &[&str]) {
    let views = lab.lab.views();
    assert!(
        views
            .iter()
            .filter(|view| !except.contains(&view.server.as_str()))
            .all(|view| view.admin.ready() && view.status == "UP"),
        "{views:#?}"
    );
}

pub fn states(summary: &Value) -> Vec<&str> {
    summary["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| server["state"].as_str().unwrap())
        .collect()
}
