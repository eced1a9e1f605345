//! Deploying a version: `vars`, `verify` after each restart, `skip_current` and canary
//! analysis, with real haproxy, a real sshd, application processes that a restart really
//! replaces with the version it was given, and live traffic.

mod common;

use serde_json::Value;

use common::deploy::*;
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Sampler, Traffic};
use common::{events, rollout};

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
    assert_eq!(states(run.summary()), ["current"; 3]);
    // status lists both rollouts, newest first, with the journal each is kept in.
    let status = rollout(["--output", "json", "status", path(&plan)])
        .run()
        .code(0);
    let rollouts = common::events(&status.stdout)
        .into_iter()
        .find(|event| event["event"] == "rollouts")
        .expect("a rollouts event");
    let rollouts = rollouts["rollouts"].as_array().unwrap();
    assert_eq!(rollouts.len(), 2, "{rollouts:?}");
    assert!(rollouts[0]["started"].as_str() > rollouts[1]["started"].as_str());
    assert!(rollouts.iter().all(|past| past["outcome"] == "success"));
    assert!(
        rollouts[1]["journal"]
            .as_str()
            .unwrap()
            .contains("/history/"),
        "{rollouts:?}"
    );
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
