//! Deploying a version: `vars`, `verify` after each restart, `skip_current`, rollback and
//! canary analysis, with real haproxy, a real sshd, application processes that a restart
//! really replaces with the version it was given, and live traffic.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Sampler, Traffic};
use common::{Outcome, events, rollout};
use serde_json::Value;

/// `verify` reads each application's /version directly; the restart deploys `{version}`.
const VERSIONED: &str = "vars:\n  version: ~\n\
    verify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n  timeout: 1s\n";

fn path(file: &Path) -> &str {
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

/// The restart script deploying `version` (a placeholder, or a fixed one).
fn deploying(lab: &RolloutLab, version: &str) -> String {
    format!("{} {{port}} {version}", lab.restart_script.display())
}

/// A versioned plan that rolls back with the restart script and `{previous}`.
fn with_rollback(lab: &RolloutLab, name: &str, restart: &str, on_failure: &str) -> PathBuf {
    let rollback = format!(
        "rollback:\n  command: {} {{port}} {{previous}}\n  on_failure: {on_failure}\n",
        lab.restart_script.display()
    );
    lab.plan(name, Some(restart), &format!("{VERSIONED}{rollback}"))
}

/// A plan whose servers must answer healthy (and verify) within 3 s of their restart.
fn impatient(plan: &Path) {
    let text = std::fs::read_to_string(plan)
        .unwrap()
        .replace("within: 10s", "within: 3s");
    std::fs::write(plan, text).unwrap();
}

/// What a command did while live traffic ran through HAProxy.
struct UnderTraffic {
    outcome: Outcome,
    events: Vec<Value>,
    ok: u64,
    failed: u64,
    failures: Vec<String>,
}

impl UnderTraffic {
    /// The first event of this name.
    fn event(&self, name: &str) -> &Value {
        self.events
            .iter()
            .find(|event| event["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {}", self.outcome.stdout))
    }

    fn summary(&self) -> &Value {
        self.events.last().expect("a summary last")
    }

    /// Exit status `code`, and not one request lost.
    fn expect(&self, code: i32) {
        let outcome = &self.outcome;
        assert_eq!(outcome.code, code, "{}\n{}", outcome.stdout, outcome.stderr);
        assert_eq!(self.failed, 0, "failed requests: {:?}", self.failures);
        assert!(self.ok > 10, "traffic ran: {} requests", self.ok);
    }
}

/// Runs haproxy-rollout with `--output json` and `args` while 4 clients (and
/// `slow_clients` asking for 1.5 s requests) send traffic through HAProxy.
fn under_traffic(lab: &RolloutLab, slow_clients: usize, args: &[&str]) -> UnderTraffic {
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
fn up_except(lab: &RolloutLab, except: &[&str]) {
    let views = lab.lab.views();
    assert!(
        views
            .iter()
            .filter(|view| !except.contains(&view.server.as_str()))
            .all(|view| view.admin.ready() && view.status == "UP"),
        "{views:#?}"
    );
}

fn states(summary: &Value) -> Vec<&str> {
    summary["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| server["state"].as_str().unwrap())
        .collect()
}

/// See: #12, test 1.
#[test]
fn deploys_a_version_to_every_server_and_verifies_it_under_traffic() {
    let lab = RolloutLab::start(LabOptions::default());
    assert_eq!(versions(&lab), ["1", "1", "1"]);
    let plan = lab.plan(
        "deploy.yaml",
        Some(&deploying(&lab, "{version}")),
        VERSIONED,
    );
    let run = under_traffic(
        &lab,
        2,
        &["apply", "--yes", path(&plan), "--var", "version=2"],
    );
    run.expect(0);
    assert_eq!(versions(&lab), ["2", "2", "2"]);
    let verified: Vec<(&str, &str)> = run
        .events
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
    let previous: Vec<&Value> = run.summary()["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| &server["previous"])
        .collect();
    assert_eq!(previous, [&Value::from("1"); 3], "what a rollback restores");
    eprintln!("deploy v2: exit 0, {} requests, 0 failed", run.ok);
}

/// See: #12, test 2.
#[test]
fn a_second_apply_of_the_same_version_drains_and_restarts_nothing() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("again.yaml", Some(&deploying(&lab, "{version}")), VERSIONED);
    let first = rollout(["apply", "--yes", path(&plan), "--var", "version=2"]).run();
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
    let run = under_traffic(
        &lab,
        2,
        &["apply", "--yes", path(&plan), "--var", "version=2"],
    );
    let seen = sampler.stop();
    run.expect(0);
    assert_eq!(lab.pids(), pids, "no application was restarted");
    assert_eq!(
        seen.most_out, 0,
        "no server left rotation: {:?}",
        seen.most_out_were
    );
    let current: Vec<&str> = run
        .events
        .iter()
        .filter(|event| event["event"] == "already_current")
        .map(|event| event["server"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["app1", "app2", "app3"]);
    assert!(
        !run.events
            .iter()
            .any(|event| event["event"] == "stage" && event["stage"] == "draining"),
        "nothing was drained"
    );
    assert_eq!(run.summary()["outcome"], "success");
    assert_eq!(states(run.summary()), ["already current, not touched"; 3]);
    eprintln!(
        "second apply: exit 0, {} requests, 0 failed, 0 drained, 0 restarted",
        run.ok
    );
}

/// See: #12, test 3.
#[test]
fn a_restart_that_leaves_the_old_version_fails_verify_and_stays_out() {
    let lab = RolloutLab::start(LabOptions::default());
    // The deploy script is broken: it starts version 1 whatever it is asked for.
    let plan = lab.plan("stale.yaml", Some(&deploying(&lab, "1")), VERSIONED);
    impatient(&plan);
    let before = lab.pids();
    let run = under_traffic(
        &lab,
        2,
        &["apply", "--yes", path(&plan), "--var", "version=2"],
    );
    run.expect(1);
    let failure = run.event("server_failed");
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
    up_except(&lab, &["app1"]);

    // Resume goes on with the values the rollout started with, and refuses others.
    let other = rollout(["resume", path(&plan), "--var", "version=3"]).run();
    assert_eq!(other.code, 2, "{}", other.stderr);
    assert!(
        other
            .stderr
            .contains("--var version=3: the rollout started with version=2 and goes on with it"),
        "{}",
        other.stderr
    );
    assert!(
        lab.lab
            .views()
            .iter()
            .any(|view| view.admin.in_maintenance())
    );

    // The deploy script fixed, resume redeploys app1 (its restart left the wrong version),
    // then the others.
    let fixed = std::fs::read_to_string(&plan)
        .unwrap()
        .replace(&deploying(&lab, "1"), &deploying(&lab, "{version}"));
    std::fs::write(&plan, fixed).unwrap();
    let resumed = under_traffic(&lab, 2, &["resume", path(&plan), "--force"]);
    resumed.expect(0);
    assert_eq!(versions(&lab), ["2", "2", "2"]);
    eprintln!(
        "stale restart: exit 1, {} requests, 0 failed, app1 left in maintenance; resumed after the fix: exit 0, {} requests, 0 failed",
        run.ok, resumed.ok
    );
}

/// See: #12, test 5.
#[test]
fn rollback_after_a_successful_deploy_puts_every_server_back_under_traffic() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = with_rollback(
        &lab,
        "rollback.yaml",
        &deploying(&lab, "{version}"),
        "manual",
    );
    for version in ["version=2", "version=3"] {
        let deploy = rollout(["apply", "--yes", path(&plan), "--var", version]).run();
        assert_eq!(deploy.code, 0, "{}", deploy.stderr);
    }
    assert_eq!(versions(&lab), ["3", "3", "3"]);

    let sampler = Sampler::unix(lab.lab.admin_socket.clone());
    let run = under_traffic(&lab, 2, &["rollback", path(&plan), "--yes"]);
    let seen = sampler.stop();
    run.expect(0);
    assert_eq!(versions(&lab), ["2", "2", "2"]);
    assert!(
        seen.most_out <= 1,
        "one at a time: {:?}",
        seen.most_out_were
    );
    assert!(
        seen.fewest_in >= 2,
        "min_up held: {} in rotation",
        seen.fewest_in
    );
    let restarted: Vec<&str> = run
        .events
        .iter()
        .filter(|event| event["event"] == "stage" && event["stage"] == "restarting")
        .map(|event| event["server"].as_str().unwrap())
        .collect();
    assert_eq!(restarted, ["app3", "app2", "app1"], "newest first");
    assert_eq!(run.summary()["outcome"], "success");
    assert_eq!(
        states(run.summary()),
        ["rolled back to what it ran before, back in traffic (UP)"; 3]
    );
    // Rolling back again finds every server already back: nothing changes.
    let pids = lab.pids();
    let again = rollout(["rollback", path(&plan), "--yes"]).run();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(lab.pids(), pids);
    eprintln!(
        "rollback v3 -> v2: exit 0, {} requests, 0 failed, at most 1 out",
        run.ok
    );
}

/// See: #12, test 6.
#[test]
fn a_rollback_command_that_fails_stops_safely_and_says_so() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan(
        "broken-rollback.yaml",
        Some(&deploying(&lab, "{version}")),
        &format!("{VERSIONED}rollback:\n  command: exit 3\n"),
    );
    let v2 = rollout(["apply", "--yes", path(&plan), "--var", "version=2"]).run();
    assert_eq!(v2.code, 0, "{}", v2.stderr);
    let before = lab.pids();
    let run = under_traffic(&lab, 2, &["rollback", path(&plan), "--yes"]);
    run.expect(1);
    assert_eq!(run.event("server_failed")["server"], "app3", "newest first");
    let summary = run.summary();
    assert_eq!(summary["outcome"], "failed");
    let app3 = &summary["servers"][2];
    assert_eq!(app3["server"], "app3");
    assert_eq!(app3["state"], "OUT OF ROTATION (maintenance)");
    assert!(!app3["restore"].as_array().unwrap().is_empty(), "{app3}");
    // Nothing else was touched: app1 and app2 run as before, in traffic.
    assert_eq!(before[..2], lab.pids()[..2]);
    up_except(&lab, &["app3"]);
    eprintln!(
        "failing rollback: exit 1, {} requests, 0 failed, app3 left in maintenance",
        run.ok
    );
}

#[test]
fn a_failed_deploy_rolls_back_every_server_it_changed_on_its_own() {
    let lab = RolloutLab::start(LabOptions::default());
    let v2 = with_rollback(&lab, "auto.yaml", &deploying(&lab, "{version}"), "auto");
    let first = rollout(["apply", "--yes", path(&v2), "--var", "version=2"]).run();
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Version 3's deploy is broken on app2: it starts version 2 again.
    let script = lab.restart_script.display().to_string();
    let broken = format!(
        "if [ {{port}} = {} ]; then {script} {{port}} 2; else {script} {{port}} {{version}}; fi",
        lab.ports[1]
    );
    let plan = with_rollback(&lab, "auto.yaml", &broken, "auto");
    impatient(&plan);
    let before = lab.pids();
    let run = under_traffic(
        &lab,
        2,
        &["apply", "--yes", path(&plan), "--var", "version=3"],
    );
    run.expect(1);
    assert_eq!(versions(&lab), ["2", "2", "2"]);
    assert_eq!(lab.pids()[2], before[2], "app3 was never touched");
    assert_eq!(
        run.event("rollback")["servers"],
        serde_json::json!(["app2", "app1"])
    );
    let summary = run.summary();
    assert_eq!(summary["outcome"], "failed");
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("verify: it answers \"2\", not \"3\"")
            && reason.contains("rolled back app2, app1 (rollback.on_failure: auto)"),
        "{reason}"
    );
    up_except(&lab, &[]);
    // The rollout was rolled back: it is not resumed, and a new apply says how to go on.
    let resume = rollout(["resume", path(&plan)]).run();
    assert_eq!(resume.code, 2, "{}", resume.stderr);
    assert!(
        resume.stderr.contains("was rolled back"),
        "{}",
        resume.stderr
    );
    let again = rollout(["apply", "--yes", path(&plan), "--var", "version=3"]).run();
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("it was rolled back: `haproxy-rollout rollback")
            && !again.stderr.contains("continue it with"),
        "{}",
        again.stderr
    );
    eprintln!(
        "auto rollback after verify failed: exit 1, {} requests, 0 failed",
        run.ok
    );
}

/// See: #12, test 4.
#[test]
fn a_bad_release_is_caught_by_the_canary_analysis_and_rolled_back_on_its_own() {
    let lab = RolloutLab::start(LabOptions::default());
    // Version 2 is a bad release: one in five of its answers is a 500, while its health
    // check passes.
    std::fs::write(lab.lab.dir.path().join("bad-2"), "5").unwrap();
    let analysis = "canary:\n  servers: 1\n  analysis:\n    window: 30s\n    max_error_ratio: 0.05\n    min_requests: 20\n";
    let plan = with_rollback(&lab, "canary.yaml", &deploying(&lab, "{version}"), "auto");
    let text = std::fs::read_to_string(&plan).unwrap() + analysis;
    std::fs::write(&plan, text).unwrap();
    let before = lab.pids();
    let run = under_traffic(
        &lab,
        0,
        &["apply", "--yes", path(&plan), "--var", "version=2"],
    );
    assert_eq!(run.outcome.code, 1, "{}", run.outcome.stderr);
    assert_eq!(
        versions(&lab),
        ["1", "1", "1"],
        "the canary is back on version 1"
    );
    assert_eq!(
        before[1..],
        lab.pids()[1..],
        "app2 and app3 were never touched"
    );
    let verdict = run.event("analysis_verdict");
    assert_eq!(verdict["verdict"], "failed", "{verdict}");
    let caught_ms = verdict["elapsed_ms"].as_u64().unwrap();
    assert!(caught_ms < 30_000, "caught within the window: {verdict}");
    assert_eq!(
        run.event("rollback")["servers"],
        serde_json::json!(["app1"])
    );
    let reason = run.summary()["reason"].as_str().unwrap();
    assert!(
        reason.contains("canary check failed: analysis: ")
            && reason.contains("rolled back app1 (rollback.on_failure: auto)"),
        "{reason}"
    );
    // The only failed requests are the bad release's own answers, on the canary.
    assert!(run.failed > 0, "the bad release answered 500s");
    assert!(
        run.failures
            .iter()
            .all(|failure| failure.contains("HTTP/1.1 500")),
        "{:?}",
        run.failures
    );
    up_except(&lab, &[]);
    eprintln!(
        "bad release: exit 1, caught in {caught_ms} ms ({} of {} canary requests failed by HAProxy's count), {} of {} client requests failed, all 500s of the canary",
        verdict["errors"],
        verdict["requests"],
        run.failed,
        run.ok + run.failed
    );
}

/// A reload of HAProxy restarts its counters: the analysis counts across it.
#[test]
fn a_reload_during_the_canary_analysis_is_counted_across() {
    let mut lab = RolloutLab::start(LabOptions::default());
    std::fs::write(lab.lab.dir.path().join("bad-2"), "5").unwrap();
    // One in five failing against 15% allowed: the budget of an 8 s window is spent after
    // about 6 s, well after the reload.
    let analysis = "canary:\n  servers: 1\n  analysis:\n    window: 8s\n    max_error_ratio: 0.15\n    min_requests: 20\n";
    // Rolled back at once, the canary stops answering 500s right after the verdict.
    let plan = with_rollback(&lab, "reload.yaml", &deploying(&lab, "{version}"), "auto");
    let text = std::fs::read_to_string(&plan).unwrap() + analysis;
    std::fs::write(&plan, text).unwrap();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let running = rollout([
        "--output",
        "json",
        "apply",
        "--yes",
        path(&plan),
        "--var",
        "version=2",
    ])
    .spawn();
    running.wait_for("two seconds of analysis", |event| {
        event["event"] == "analysis" && event["elapsed_ms"].as_u64().unwrap_or(0) >= 2000
    });
    lab.lab.reload();
    let outcome = running.finish();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(outcome.code, 1, "{}\n{}", outcome.stdout, outcome.stderr);
    let events = events(&outcome.stdout);
    let position = |name: &str| {
        events
            .iter()
            .position(|event| event["event"] == name)
            .unwrap_or_else(|| panic!("no {name} in {events:?}"))
    };
    assert!(
        position("reloaded") < position("analysis_verdict"),
        "the reload came during the analysis"
    );
    let verdict = &events[position("analysis_verdict")];
    assert_eq!(verdict["verdict"], "failed", "{verdict}");
    // Every failed request was a 500 of the canary, and the analysis counted them all but
    // the few the old process answered between its last read and the reload.
    assert!(
        failures
            .iter()
            .all(|failure| failure.contains("HTTP/1.1 500")),
        "{failures:?}"
    );
    let counted = verdict["errors"].as_u64().unwrap();
    assert!(
        counted + 5 >= failed && counted <= failed,
        "the analysis counted {counted} of the canary's {failed} failed answers: {verdict}"
    );
    eprintln!(
        "reload during the analysis: {counted} of {failed} canary 500s counted across it, {} of {} requests",
        verdict["requests"],
        ok + failed
    );
}

/// A plan on version 2 whose rollback (to version 1) takes 3 s, and a rollback of it killed
/// while app3's rollback command runs.
fn killed_rollback(lab: &RolloutLab, name: &str) -> PathBuf {
    let rollback = format!(
        "rollback:\n  command: \"sleep 3; {} {{port}} {{previous}}\"\n",
        lab.restart_script.display()
    );
    let plan = lab.plan(
        name,
        Some(&deploying(lab, "{version}")),
        &format!("{VERSIONED}{rollback}"),
    );
    let v2 = rollout(["apply", "--yes", path(&plan), "--var", "version=2"]).run();
    assert_eq!(v2.code, 0, "{}", v2.stderr);
    let first = rollout(["--output", "json", "rollback", "--yes", path(&plan)]).spawn();
    first.wait_for("app3's rollback running", |event| {
        event["event"] == "stage" && event["server"] == "app3" && event["stage"] == "restarting"
    });
    common::scenario::wait_command_running(&plan, "app3");
    first.signal("KILL");
    first.finish();
    plan
}

/// The kinds of the events about a server's command and restart, in order.
fn command_events<'e>(run: &'e UnderTraffic, server: &str) -> Vec<&'e str> {
    run.events
        .iter()
        .filter(|event| event["server"] == server)
        .filter_map(|event| match event["event"].as_str() {
            Some("stage") if event["stage"] == "restarting" => Some("restarting"),
            Some(kind @ ("command_may_run" | "command_ended")) => Some(kind),
            _ => None,
        })
        .collect()
}

/// Property 9 in a rollback: a rollback killed during its command is finished by the next
/// `rollback`, which keeps that server out until the orphaned command can no longer run.
#[test]
fn a_killed_rollback_is_finished_after_its_orphaned_command_ended() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = killed_rollback(&lab, "killed-rollback.yaml");
    let run = under_traffic(&lab, 2, &["rollback", "--yes", path(&plan)]);
    run.expect(0);
    assert_eq!(versions(&lab), ["1", "1", "1"]);
    assert_eq!(
        command_events(&run, "app3"),
        ["command_may_run", "command_ended", "restarting"],
        "the orphaned rollback command ended before app3's was run again"
    );
    up_except(&lab, &[]);
    eprintln!(
        "killed rollback finished: exit 0, {} requests, 0 failed",
        run.ok
    );
}

/// `abort` after a killed rollback settles it as a rollback: app3 is verified against what
/// it ran before the rollout, not the version the rollout deployed.
#[test]
fn abort_after_a_killed_rollback_settles_it_against_the_previous_version() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = killed_rollback(&lab, "abort-rollback.yaml");
    let run = under_traffic(&lab, 2, &["abort", path(&plan)]);
    run.expect(4);
    assert_eq!(
        command_events(&run, "app3"),
        ["command_may_run", "command_ended"],
        "it waited for the orphaned command and ran nothing"
    );
    assert_eq!(
        version_of(lab.ports[2]),
        "1",
        "app3's orphaned rollback completed"
    );
    let app3 = &run.summary()["servers"][2];
    assert_eq!(app3["server"], "app3");
    assert_eq!(
        app3["state"], "back in traffic (UP), healthy; whether the restart ran is UNKNOWN",
        "{app3}"
    );
    up_except(&lab, &[]);
    eprintln!(
        "abort after a killed rollback: exit 4, {} requests, 0 failed",
        run.ok
    );
}
