//! Rolling back what a deploy changed: `rollback PLAN`, `rollback.on_failure: auto`, a
//! failing rollback command, and a rollback killed mid-command, then finished or aborted,
//! with real haproxy, a real sshd, real applications and live traffic.

mod common;

use std::path::PathBuf;

use common::deploy::*;
use common::lab::LabOptions;
use common::rollout;
use common::rollout_lab::{RolloutLab, Sampler};

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
    assert_eq!(states(run.summary()), ["rolled_back"; 3]);
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
    assert_eq!(app3["state"], "out_of_rotation");
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
    assert_eq!(app3["state"], "back_restart_unknown", "{app3}");
    up_except(&lab, &[]);
    eprintln!(
        "abort after a killed rollback: exit 4, {} requests, 0 failed",
        run.ok
    );
}
