//! `apply` end to end: real haproxy, real sshd on 127.0.0.1, real application processes that
//! a restart really kills, live traffic through HAProxy.

mod common;

use std::time::Duration;

use common::lab::LabOptions;
use common::rollout;
use common::rollout_lab::{RolloutLab, Sampler, Traffic};

fn path(file: &std::path::Path) -> &str {
    file.to_str().unwrap()
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .last()
        .filter(|event| event["event"] == "summary")
        .expect("a summary last")
}

/// See: #4, test 1.
#[test]
fn rolls_three_servers_under_traffic_with_zero_failed_requests() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("rollout.yaml", None, "capacity:\n  min_up: 1\n");
    let before = lab.pids();
    let sampler = Sampler::start(lab.lab.admin_socket.clone());
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 2);
    std::thread::sleep(Duration::from_millis(500));

    let outcome = rollout(["--output", "json", "apply", path(&plan)]).run();
    let (ok, failed, failures) = traffic.stop();
    let (fewest_up, samples) = sampler.stop();
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 50, "traffic ran: {ok} requests");
    assert!(samples > 10, "{samples} samples");
    assert!(
        fewest_up >= 2,
        "at some moment only {fewest_up} servers were UP"
    );

    let after = lab.pids();
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(
            old, new,
            "every application process was replaced: {before:?} → {after:?}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{old}/status")).exists() || {
                let status =
                    std::fs::read_to_string(format!("/proc/{old}/status")).unwrap_or_default();
                status.contains("State:\tZ")
            },
            "the old process {old} is gone"
        );
    }
    let events = events(&outcome.stdout);
    let done: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "server_done")
        .map(|event| event["server"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["app1", "app2", "app3"], "restarted in plan order");
    let summary = summary(&events);
    assert_eq!(summary["outcome"], "success");
    for server in summary["servers"].as_array().unwrap() {
        assert_eq!(server["state"], "restarted, back in traffic (UP)");
        assert!(server["timings"]["draining_ms"].is_u64());
        assert!(server["timings"]["haproxy_ms"].is_u64());
    }
    let views = lab.lab.views();
    assert!(
        views
            .iter()
            .all(|view| view.status == "UP" && view.admin.ready()),
        "{views:#?}"
    );
}
