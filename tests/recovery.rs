//! Recovery decided from the live world (#10): a lost connection, a killed run, `abort`,
//! `resume` after the live state moved, continuing a stopped rollout, one lock per HAProxy.
//! Real haproxy, sshd and application processes, live traffic, failed requests counted.

mod common;

use std::time::Duration;

use common::events;
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::scenario::*;

/// The events of one kind about one server.
fn kinds<'e>(events: &'e [serde_json::Value], server: &str) -> Vec<&'e str> {
    events
        .iter()
        .filter(|event| event["server"] == server)
        .filter_map(|event| event["event"].as_str())
        .collect()
}

/// See: #10, case 1: sshd dies 1 s into a 3-s restart; the command goes on on the host.
/// The server stays out of rotation until a fresh connection shows the command ended, and
/// only then is settled by its health and HAProxy's checks: no request fails.
#[test]
fn sshd_killed_during_the_restart_keeps_the_server_out_until_the_command_ended() {
    let mut lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "lost-ssh.yaml", 3);
    let before = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = apply(&plan);
    wait_restarting(&running);
    std::thread::sleep(Duration::from_secs(1));
    lab.sshd.kill_with_connections();
    std::thread::sleep(Duration::from_millis(500));
    lab.sshd.start_again();
    let outcome = running.finish();
    let (ok, failed, failures) = traffic.stop();

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    let events = events(&outcome.stdout);
    let app1 = kinds(&events, "app1");
    let may_run = app1.iter().position(|kind| *kind == "command_may_run");
    let ended = app1.iter().position(|kind| *kind == "command_ended");
    assert!(may_run.is_some() && ended > may_run, "{app1:?}");
    assert!(
        events
            .iter()
            .any(|event| event["event"] == "command_ended" && event["proven"] == true),
        "a fresh connection proved it ended: {}",
        outcome.stdout
    );
    let after = lab.pids();
    assert_ne!(after[0], before[0], "the orphaned restart completed");
    assert_eq!(after[1..], before[1..], "nothing else was touched");
    assert_eq!(
        state_of(&summary(&outcome.stdout), "app1"),
        "back in traffic (UP), healthy; whether the restart ran is UNKNOWN"
    );
    let view = lab.lab.view("app1");
    assert!(view.admin.ready() && view.status == "UP", "{view:?}");
}
