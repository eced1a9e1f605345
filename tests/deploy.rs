//! Deploying a version: `vars`, `verify` after each restart, and `skip_current`, with real
//! haproxy, a real sshd, application processes that a restart really replaces with the
//! version it was given, and live traffic.

mod common;

use std::time::Duration;

use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Sampler, Traffic};
use common::{events, rollout};

/// `verify` reads each application's /version directly; the restart deploys `{version}`.
const VERSIONED: &str = "vars:\n  version: ~\n\
    verify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n  timeout: 1s\n";

fn path(file: &std::path::Path) -> &str {
    file.to_str().unwrap()
}

/// What the application on `port` answers at /version.
fn version_of(port: u16) -> String {
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

fn versions(lab: &RolloutLab) -> Vec<String> {
    lab.ports.iter().map(|port| version_of(*port)).collect()
}

/// The restart script deploying the version of the plan's var.
fn deploying(lab: &RolloutLab, version: &str) -> String {
    format!("{} {{port}} {version}", lab.restart_script.display())
}

/// See: #12, test 1.
#[test]
fn deploys_a_version_to_every_server_and_verifies_it_under_traffic() {
    let lab = RolloutLab::start(LabOptions::default());
    assert_eq!(versions(&lab), ["1", "1", "1"]);
    let restart = deploying(&lab, "{version}");
    let plan = lab.plan("deploy.yaml", Some(&restart), VERSIONED);
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 2);
    std::thread::sleep(Duration::from_millis(300));

    let outcome = rollout([
        "--output",
        "json",
        "apply",
        path(&plan),
        "--var",
        "version=2",
    ])
    .run();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 30, "traffic ran: {ok} requests");
    assert_eq!(versions(&lab), ["2", "2", "2"]);
    let events = events(&outcome.stdout);
    let verified: Vec<(&str, &str)> = events
        .iter()
        .filter(|event| event["event"] == "verified")
        .map(|event| {
            (
                event["server"].as_str().unwrap(),
                event["answer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(verified, [("app1", "2"), ("app2", "2"), ("app3", "2")]);
    eprintln!("deploy v2: exit 0, {ok} requests, 0 failed");
}

/// See: #12, test 2.
#[test]
fn a_second_apply_of_the_same_version_drains_and_restarts_nothing() {
    let lab = RolloutLab::start(LabOptions::default());
    let restart = deploying(&lab, "{version}");
    let plan = lab.plan("again.yaml", Some(&restart), VERSIONED);
    let first = rollout(["apply", path(&plan), "--var", "version=2"]).run();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let pids = lab.pids();

    // The preview says what apply would do, reading each server's verify URL.
    let preview = rollout(["plan", path(&plan), "--var", "version=2"]).run();
    assert_eq!(preview.code, 0, "{}", preview.stderr);
    for server in ["app1", "app2", "app3"] {
        assert!(
            preview.stderr.contains(&format!(
                "{server}: verify answers \"2\": already current, apply leaves it as it is"
            )),
            "{}",
            preview.stderr
        );
    }
    let preview3 = rollout(["plan", path(&plan), "--var", "version=3"]).run();
    assert!(
        preview3
            .stderr
            .contains("app1: verify answers \"2\", not \"3\": apply deploys it"),
        "{}",
        preview3.stderr
    );

    let sampler = Sampler::unix(lab.lab.admin_socket.clone());
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 2);
    let again = rollout([
        "--output",
        "json",
        "apply",
        path(&plan),
        "--var",
        "version=2",
    ])
    .run();
    let (ok, failed, failures) = traffic.stop();
    let seen = sampler.stop();
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert_eq!(lab.pids(), pids, "no application was restarted");
    assert_eq!(
        seen.most_out, 0,
        "no server left rotation: {:?}",
        seen.most_out_were
    );
    let events = events(&again.stdout);
    let current: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "already_current")
        .map(|event| event["server"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["app1", "app2", "app3"]);
    assert!(
        !events
            .iter()
            .any(|event| event["event"] == "stage" && event["stage"] == "draining"),
        "nothing was drained"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["outcome"], "success");
    assert!(
        summary["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|server| server["state"] == "already current, not touched"),
        "{summary}"
    );
    eprintln!("second apply: exit 0, {ok} requests, 0 failed, 0 drained, 0 restarted");
}

/// See: #12, test 3.
#[test]
fn a_restart_that_leaves_the_old_version_fails_verify_and_stays_out() {
    let lab = RolloutLab::start(LabOptions::default());
    // The deploy script is broken: it starts version 1 whatever it is asked for.
    let restart = deploying(&lab, "1");
    let plan = lab.plan("stale.yaml", Some(&restart), VERSIONED);
    let plan_text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("within: 10s", "within: 3s");
    std::fs::write(&plan, plan_text).unwrap();
    let before = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 2);
    std::thread::sleep(Duration::from_millis(300));

    let outcome = rollout([
        "--output",
        "json",
        "apply",
        path(&plan),
        "--var",
        "version=2",
    ])
    .run();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(outcome.code, 1, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 10, "traffic ran: {ok} requests");
    let events = events(&outcome.stdout);
    let failure = events
        .iter()
        .find(|event| event["event"] == "server_failed")
        .expect("a server_failed event");
    assert_eq!(failure["server"], "app1");
    let reason = failure["reason"].as_str().unwrap();
    assert!(
        reason.contains(r#"verify: it answers "1", not "2" within 3s"#),
        "{reason}"
    );
    let after = lab.pids();
    assert_ne!(before[0], after[0], "app1 was restarted");
    assert_eq!(before[1..], after[1..], "nothing else was touched");
    let views = lab.lab.views();
    let app1 = views.iter().find(|view| view.server == "app1").unwrap();
    assert!(
        app1.admin.in_maintenance(),
        "app1 stays out of rotation: {app1:?}"
    );
    assert!(
        views
            .iter()
            .filter(|view| view.server != "app1")
            .all(|view| view.admin.ready() && view.status == "UP"),
        "{views:#?}"
    );
    eprintln!("stale restart: exit 1, {ok} requests, 0 failed, app1 left in maintenance");
}
