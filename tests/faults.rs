//! Safety under faults (#5): abort, crashes, resume, locks, reloads, an HAProxy that goes
//! away, an edited plan, hostile plan values. Real haproxy, sshd and application processes.

mod common;

use std::time::{Duration, Instant};

use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::scenario::*;
use common::{events, rollout};

/// See: #5, test 1.
#[test]
fn abort_while_draining_returns_the_server_unrestarted_with_zero_failed_requests() {
    let lab = RolloutLab::start(routed());
    let plan = lab.plan("abort-drain.yaml", None, "");
    let pids = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let held = hold(&lab, 1, 4000);
    let running = apply(&plan);
    running.wait_for("app1 draining", |event| is(event, "sessions_left", "app1"));
    let abort = rollout(["abort", path(&plan)]).run();
    let applied = running.finish();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    assert_eq!(
        held.join().unwrap(),
        Ok(()),
        "the request in flight completed"
    );
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 10);
    assert_eq!(lab.pids(), pids, "nothing was restarted");
    assert_eq!(
        state_of(&summary(&applied.stdout), "app1"),
        "returned_unrestarted"
    );
    assert!(lab.lab.view("app1").admin.ready());
    assert!(
        abort
            .stderr
            .contains("app1: back in traffic, NOT restarted"),
        "{}",
        abort.stderr
    );
}

/// See: #5, test 2.
#[test]
fn abort_while_a_restart_runs_lets_it_finish_and_returns_the_healthy_server() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "abort-restart.yaml", 2);
    let pids = lab.pids();
    let running = apply(&plan);
    wait_restarting(&running);
    std::thread::sleep(Duration::from_millis(500));
    let abort = rollout(["abort", path(&plan)]).run();
    let applied = running.finish();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    let after = lab.pids();
    assert_ne!(after[0], pids[0], "the restart completed");
    assert_eq!(&after[1..], &pids[1..], "no further server was touched");
    let summary = summary(&applied.stdout);
    assert_eq!(state_of(&summary, "app1"), "done");
    assert_eq!(state_of(&summary, "app2"), "untouched");
    let app1 = lab.lab.view("app1");
    assert!(app1.admin.ready() && app1.status == "UP", "{app1:?}");
}

/// See: #5, tests 3 and 8.
#[test]
fn a_crash_while_draining_shows_in_status_and_resume_completes_without_redoing_done_servers() {
    let lab = RolloutLab::start(routed());
    let plan = lab.plan("crash-drain.yaml", None, "");
    let first = lab.pids();
    // Held on app2 from before the start, so app2's drain waits for it.
    let held = hold(&lab, 2, 4000);
    let running = apply(&plan);
    running.wait_for("app1 done", |event| is(event, "server_done", "app1"));
    running.wait_for("app2 draining", |event| is(event, "sessions_left", "app2"));
    running.signal("KILL");
    assert_eq!(running.finish().code, -9);
    let after_crash = lab.pids();
    assert_ne!(after_crash[0], first[0], "app1 was done before the crash");
    assert_eq!(after_crash[1..], first[1..]);
    assert!(
        lab.lab.view("app2").admin.draining(),
        "the crash left app2 drained"
    );

    let status = rollout(["--color", "never", "status", path(&plan)]).run();
    assert!(
        status
            .stderr
            .contains("a rollout of this plan was interrupted")
            && status.stderr.contains("done: app1")
            && status.stderr.contains("app2 in flight (drain)"),
        "{}",
        status.stderr
    );
    let again = rollout(["apply", "--yes", path(&plan)]).run().code(5);
    assert!(
        again.stderr.contains("stale lock") && again.stderr.contains("was interrupted"),
        "{}",
        again.stderr
    );

    // See: #5, test 8: an edited plan is refused without --force.
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(
        &plan,
        text.replace("poll_interval: 100ms", "poll_interval: 150ms"),
    )
    .unwrap();
    let refused = rollout(["resume", path(&plan)]).run().code(2);
    assert!(
        refused
            .stderr
            .contains("changed since the interrupted rollout started"),
        "{}",
        refused.stderr
    );
    assert!(
        lab.lab.view("app2").admin.draining(),
        "a refused resume touches nothing"
    );

    let resumed = rollout(["--output", "json", "resume", "--force", path(&plan)]).run();
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        held.join().unwrap(),
        Ok(()),
        "the request in flight on app2 completed"
    );
    let done = lab.pids();
    assert_eq!(done[0], after_crash[0], "app1 was not restarted again");
    assert_ne!(done[1], first[1]);
    assert_ne!(done[2], first[2]);
    let summary = summary(&resumed.stdout);
    assert_eq!(state_of(&summary, "app1"), "done_earlier");
    assert_eq!(state_of(&summary, "app2"), "done");
    let status = rollout(["status", path(&plan)]).run();
    assert!(!status.stderr.contains("interrupted"), "{}", status.stderr);
}

/// See: #5, test 4.
#[test]
fn a_crash_during_the_restart_then_abort_leaves_the_server_in_a_stated_safe_state() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "crash-restart.yaml", 2);
    let running = apply(&plan);
    wait_restarting(&running);
    std::thread::sleep(Duration::from_millis(700));
    running.signal("KILL");
    running.finish();
    assert!(
        lab.lab.view("app1").admin.in_maintenance(),
        "the crash left app1 in maintenance"
    );

    let abort = rollout(["--output", "json", "abort", path(&plan)]).run();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert!(
        abort.stderr.contains("app1 was in flight"),
        "{}",
        abort.stderr
    );
    let state = state_of(&summary(&abort.stdout), "app1");
    let view = lab.lab.view("app1");
    // Either proven healthy and back, or out of rotation and said so: never in between.
    match state.as_str() {
        "back_restart_unknown" | "done" => {
            assert!(view.admin.ready() && view.status == "UP", "{view:?}")
        }
        "out_of_rotation" => assert!(view.admin.in_maintenance(), "{view:?}"),
        other => panic!("app1 ends in an unstated state: {other}"),
    }
    assert!(
        lab.lab.view("app2").admin.ready(),
        "no other server was touched"
    );
    let status = rollout(["status", path(&plan)]).run();
    assert!(
        !status.stderr.contains("interrupted rollout"),
        "cleaned up: {}",
        status.stderr
    );
}

/// See: #5, test 5.
#[test]
fn a_second_apply_is_refused_naming_the_holder_and_a_stale_lock_is_recognised() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "locked.yaml", 3);
    let running = apply(&plan);
    wait_restarting(&running);
    let second = rollout(["apply", "--yes", path(&plan)]).run().code(5);
    assert!(
        second.stderr.contains(&format!(
            "is locked by `haproxy-rollout apply` (pid {} on",
            running.pid()
        )),
        "{}",
        second.stderr
    );
    // The same backend from another plan file is locked too.
    let other = lab.plan("other.yaml", None, "");
    let third = rollout(["apply", "--yes", path(&other)]).run().code(5);
    assert!(
        third.stderr.contains("backend be_app of HAProxy lb1 (pid"),
        "{}",
        third.stderr
    );

    let pid = running.pid();
    running.signal("KILL");
    running.finish();
    let status = rollout(["status", path(&plan)]).run();
    assert!(
        status.stderr.contains(&format!("by pid {pid}")),
        "{}",
        status.stderr
    );
    let after = rollout(["apply", "--yes", path(&plan)]).run().code(5);
    assert!(
        after.stderr.contains(&format!(
            "stale lock from `haproxy-rollout apply` (pid {pid}"
        )),
        "{}",
        after.stderr
    );
    rollout(["abort", path(&plan)]).run().code(4);
}

/// See: #5, test 6.
#[test]
fn a_reload_while_draining_reapplies_the_drain_and_no_request_fails() {
    let mut lab = RolloutLab::start(routed());
    let plan = lab.plan("reload.yaml", None, "");
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let held = hold(&lab, 1, 2500);
    let running = apply(&plan);
    running.wait_for("app1 draining", |event| is(event, "sessions_left", "app1"));
    lab.lab.reload();
    let applied = running.finish();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let held = held.join().unwrap();
    if held.is_err() {
        eprintln!(
            "EVENTS\n{}\nLOG\n{}",
            applied.stdout,
            std::fs::read_to_string(lab.lab.dir.path().join("haproxy.log")).unwrap_or_default()
        );
    }
    assert_eq!(held, Ok(()));
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 10);
    let events = events(&applied.stdout);
    let reload = events
        .iter()
        .find(|event| event["event"] == "reloaded")
        .unwrap_or_else(|| panic!("the reload was noticed: {events:?}"));
    assert_eq!(reload["reapplied"], "app1 drain");
    let order: Vec<&str> = events
        .iter()
        .filter_map(|event| match event["event"].as_str() {
            Some("reloaded") => Some("reloaded"),
            Some("stage") if event["server"] == "app1" && event["stage"] == "restarting" => {
                Some("restarting")
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        ["reloaded", "restarting"],
        "the drain was back before the restart began"
    );
}

/// See: #5, test 7.
#[test]
fn an_haproxy_that_goes_away_stops_the_rollout_within_its_deadline() {
    let mut lab = RolloutLab::start(routed());
    let plan = lab.plan("gone.yaml", None, "");
    let text = std::fs::read_to_string(&plan).unwrap().replace(
        "    socket:",
        "    unreachable_timeout: 2s\n    timeout: 500ms\n    socket:",
    );
    std::fs::write(&plan, text).unwrap();
    let _held = hold(&lab, 1, 4000);
    let running = apply(&plan);
    running.wait_for("app1 draining", |event| is(event, "sessions_left", "app1"));
    let stopped = Instant::now();
    lab.lab.haproxy.kill();
    let applied = running.finish();
    assert_eq!(applied.code, 1, "{}", applied.stderr);
    // Not a timing assertion: only that it stopped on its own instead of waiting out the
    // five-minute drain timeout.
    assert!(stopped.elapsed() < Duration::from_secs(60));
    let summary = summary(&applied.stdout);
    assert!(
        summary["reason"].as_str().unwrap().contains("unreachable"),
        "{summary}"
    );
    assert_eq!(state_of(&summary, "app1"), "unknown");
    assert_eq!(state_of(&summary, "app2"), "untouched");
    // See: #10: reported once, by its plan name, with its real unreachable_timeout.
    let unreachable: Vec<serde_json::Value> = events(&applied.stdout)
        .into_iter()
        .filter(|event| event["event"] == "haproxy_unreachable")
        .collect();
    assert_eq!(unreachable.len(), 1, "{}", applied.stdout);
    assert_eq!(unreachable[0]["haproxy"], "lb1");
    assert_eq!(unreachable[0]["unreachable_timeout_ms"], 2000);
    assert!(!applied.stdout.contains("HAProxy #"), "{}", applied.stdout);
}

/// See: #5, test 9.
#[test]
fn hostile_plan_values_are_rejected_before_anything_runs() {
    let lab = RolloutLab::start(LabOptions::default());
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let before = lab.lab.servers_state();
    let pids = lab.pids();
    let hostile = [
        (
            "  - name: app1\n",
            "  - name: \"app1;shutdown sessions server be_app/app2\"\n".to_owned(),
        ),
        (
            "  - name: app1\n",
            "  - name: \"app1\\nset server be_app/app2 state maint\"\n".to_owned(),
        ),
        ("  - name: app1\n", "  - name: \"app 1\"\n".to_owned()),
        (
            "backends: [be_app]",
            "backends: [\"be_app;disable server be_app/app2\"]".to_owned(),
        ),
        (
            "  - name: app1\n",
            format!(
                "  - name: app1\n    host: \"$(touch {})\"\n",
                marker.display()
            ),
        ),
        (
            "  - name: app1\n",
            format!(
                "  - name: app1\n    host: \"`touch {}`\"\n",
                marker.display()
            ),
        ),
        (
            "  - name: app1\n",
            "  - name: app1\n    host: \"-oProxyCommand=sh\"\n".to_owned(),
        ),
    ];
    for (index, (from, to)) in hostile.iter().enumerate() {
        let plan = lab.plan(&format!("hostile-{index}.yaml"), None, "");
        let text = std::fs::read_to_string(&plan)
            .unwrap()
            .replacen(from, to, 1);
        std::fs::write(&plan, &text).unwrap();
        for command in ["plan", "apply"] {
            let outcome = rollout(["--color", "never", command, path(&plan)]).run();
            assert_eq!(outcome.code, 2, "{command} {to:?}: {}", outcome.stderr);
            assert!(
                outcome.stderr.contains(&format!("hostile-{index}.yaml:")),
                "{}",
                outcome.stderr
            );
        }
    }
    assert_eq!(lab.lab.servers_state(), before, "no runtime command ran");
    assert_eq!(lab.pids(), pids, "nothing was restarted");
    assert!(!marker.exists(), "no injected command ran");
}

/// `abort --now` does not wait for the drain: the server in flight is put in maintenance
/// at once and reported out of rotation, with the command that returns it.
#[test]
fn abort_now_stops_at_once_and_leaves_the_server_in_flight_out_of_rotation() {
    let lab = RolloutLab::start(routed());
    let plan = lab.plan("abort-now.yaml", None, "");
    let pids = lab.pids();
    let _held = hold(&lab, 1, 20_000);
    let running = apply(&plan);
    running.wait_for("app1 draining", |event| is(event, "sessions_left", "app1"));
    let started = Instant::now();
    let abort = rollout(["abort", "--now", path(&plan)]).run();
    let applied = running.finish();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    // Not a timing assertion: only that it did not wait out the 20 s request.
    assert!(started.elapsed() < Duration::from_secs(15));
    let summary = summary(&applied.stdout);
    assert_eq!(state_of(&summary, "app1"), "out_of_rotation");
    assert!(
        summary["servers"][0]["restore"][0]
            .as_str()
            .unwrap()
            .contains("set server be_app/app1 state ready")
    );
    assert!(lab.lab.view("app1").admin.in_maintenance());
    assert_eq!(lab.pids(), pids, "nothing was restarted");
}

/// A crash during the restart, then `resume`: the server left in maintenance is redone from
/// its restart (it never leaves maintenance unverified), and the rest completes.
#[test]
fn resume_after_a_crash_during_the_restart_redoes_that_server_from_its_restart() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "crash-resume.yaml", 2);
    let before = lab.pids();
    let running = apply(&plan);
    wait_restarting(&running);
    std::thread::sleep(Duration::from_millis(700));
    running.signal("KILL");
    running.finish();
    assert!(lab.lab.view("app1").admin.in_maintenance());

    let resumed = rollout(["--output", "json", "resume", path(&plan)]).run();
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let events = events(&resumed.stdout);
    let app1_stages: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "stage" && event["server"] == "app1")
        .map(|event| event["stage"].as_str().unwrap())
        .collect();
    // Out of rotation already: its restart is redone once no session is left, never after
    // a drain that would mean it had been back in traffic.
    assert_eq!(app1_stages[0], "waiting_sessions", "{app1_stages:?}");
    assert!(!app1_stages.contains(&"draining"), "{app1_stages:?}");
    let after = lab.pids();
    assert!(
        before.iter().zip(&after).all(|(old, new)| old != new),
        "all restarted"
    );
    assert!(
        lab.lab
            .views()
            .iter()
            .all(|view| view.status == "UP" && view.admin.ready())
    );
}

/// Batches: a crash with three servers in their restart at once. `status` names each one
/// in flight; `resume` redoes each from its restart (none leaves maintenance unverified,
/// none is drained again), then the rest.
#[test]
fn a_crash_with_a_batch_in_flight_then_resume_redoes_each_server_from_its_restart() {
    let lab = RolloutLab::start(LabOptions {
        servers: 6,
        ..LabOptions::default()
    });
    let command = format!("\"sleep 3; {} {{port}}\"", lab.restart_script.display());
    let plan = lab.plan(
        "crash-batch.yaml",
        Some(&command),
        "capacity:\n  max_unavailable: 3\n",
    );
    let first = lab.pids();
    let running = apply(&plan);
    for server in ["app1", "app2", "app3"] {
        running.wait_for("three restarting", |event| {
            is(event, "stage", server) && event["stage"] == "restarting"
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    running.signal("KILL");
    running.finish();
    for server in ["app1", "app2", "app3"] {
        assert!(
            lab.lab.view(server).admin.in_maintenance(),
            "the crash left {server} in maintenance"
        );
    }
    assert!(lab.lab.view("app4").admin.ready());

    let status = rollout(["--color", "never", "status", path(&plan)]).run();
    for server in ["app1", "app2", "app3"] {
        assert!(
            status.stderr.contains(&format!("{server} in flight (")),
            "{}",
            status.stderr
        );
    }

    let resumed = rollout(["--output", "json", "resume", path(&plan)]).run();
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    let events = events(&resumed.stdout);
    for server in ["app1", "app2", "app3"] {
        let first_stage = events
            .iter()
            .find(|event| is(event, "stage", server))
            .map(|event| event["stage"].as_str().unwrap().to_owned());
        assert_eq!(
            first_stage.as_deref(),
            Some("waiting_sessions"),
            "{server} was redone from its restart, not drained again"
        );
    }
    let after = lab.pids();
    for (index, (old, new)) in first.iter().zip(&after).enumerate() {
        assert_ne!(old, new, "app{} restarted", index + 1);
    }
    let summary = summary(&resumed.stdout);
    for index in 1..=6 {
        assert_eq!(state_of(&summary, &format!("app{index}")), "done");
    }
    assert!(
        lab.lab
            .views()
            .iter()
            .all(|view| view.status == "UP" && view.admin.ready()),
        "{:#?}",
        lab.lab.views()
    );
}
