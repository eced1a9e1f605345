//! Recovery decided from the live world (#10): a lost connection, a killed run, `abort`,
//! `resume` after the live state moved, continuing a stopped rollout, one lock per HAProxy.
//! Real haproxy, sshd and application processes, live traffic, failed requests counted.

mod common;

use std::time::Duration;

use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::scenario::*;
use common::{events, rollout};

/// Requests kept on app1 whenever it takes traffic (HAProxy ignores the `use-server` rule
/// while app1 is in maintenance): back too early, a restart still running on its host
/// would cut them.
fn pin_to_app1(lab: &RolloutLab) -> Traffic {
    Traffic::on(
        lab.lab.frontend_port,
        &["/to/app1/slow?ms=300", "/to/app1/slow?ms=700"],
    )
}

/// Lets the traffic run until the restart that ran on without the tool has replaced app1,
/// then stops it: no request may have failed, pinned to app1 or not.
fn after_the_orphaned_restart(lab: &RolloutLab, old_app1: u32, traffic: Traffic, pinned: Traffic) {
    lab.wait_replaced(0, old_app1);
    std::thread::sleep(Duration::from_millis(500));
    let (pinned_ok, pinned_failed, pinned_failures) = pinned.stop();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok + pinned_ok, failed + pinned_failed);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    assert_eq!(
        pinned_failed, 0,
        "pinned to app1: {pinned_failures:?} ({pinned_ok} succeeded)"
    );
}

/// The traffic a scenario saw, for the record (`cargo test -- --nocapture` shows it).
#[track_caller]
fn report_traffic(ok: u64, failed: u64) {
    let thread = std::thread::current();
    eprintln!(
        "{}: {ok} requests succeeded, {failed} failed",
        thread.name().unwrap_or("?")
    );
}

/// The events of one kind about one server.
fn kinds<'e>(events: &'e [serde_json::Value], server: &str) -> Vec<&'e str> {
    events
        .iter()
        .filter(|event| event["server"] == server)
        .filter_map(|event| event["event"].as_str())
        .collect()
}

/// See: #10, case 1: sshd dies about 1 s into a 3-s restart; the command goes on on the host.
/// The server stays out of rotation until a fresh connection shows the command ended, and
/// only then is settled by its health and HAProxy's checks: no request fails.
#[test]
fn sshd_killed_during_the_restart_keeps_the_server_out_until_the_command_ended() {
    let mut lab = RolloutLab::start(LabOptions {
        route_by_path: true,
        ..LabOptions::default()
    });
    let plan = slow_restart_plan(&lab, "lost-ssh.yaml", 3);
    let before = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = apply(&plan);
    wait_restarting(&running);
    let pinned = pin_to_app1(&lab);
    wait_command_running(&plan, "app1");
    std::thread::sleep(Duration::from_millis(700));
    lab.sshd.kill_with_connections();
    std::thread::sleep(Duration::from_millis(500));
    lab.sshd.start_again();
    let outcome = running.finish();
    after_the_orphaned_restart(&lab, before[0], traffic, pinned);

    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
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
        "back_restart_unknown"
    );
    let view = lab.lab.view("app1");
    assert!(view.admin.ready() && view.status == "UP", "{view:?}");
}

/// See: #10, case 2: a CI runner kills `apply` during a restart, and `abort` runs at once.
/// The orphaned restart may still run: `abort` keeps the server out until its host shows
/// it ended, then settles it by its health and HAProxy's checks. No request fails.
#[test]
fn apply_killed_during_the_restart_then_abort_at_once_waits_for_the_orphaned_restart() {
    let lab = RolloutLab::start(LabOptions {
        route_by_path: true,
        ..LabOptions::default()
    });
    let plan = slow_restart_plan(&lab, "killed-abort.yaml", 3);
    let before = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    crash_during_the_restart(&plan);
    let pinned = pin_to_app1(&lab);
    let abort = rollout(["--output", "json", "abort", path(&plan)]).run();
    after_the_orphaned_restart(&lab, before[0], traffic, pinned);

    assert_eq!(abort.code, 4, "{}", abort.stderr);
    let events = events(&abort.stdout);
    let app1 = kinds(&events, "app1");
    assert_eq!(app1.first(), Some(&"found"), "{app1:?}");
    let ended = app1.iter().position(|kind| *kind == "command_ended");
    assert!(ended.is_some(), "it waited for the restart: {app1:?}");
    assert_eq!(
        state_of(&summary(&abort.stdout), "app1"),
        "back_restart_unknown"
    );
    let after = lab.pids();
    assert_ne!(after[0], before[0], "the orphaned restart completed");
    assert_eq!(after[1..], before[1..]);
    let view = lab.lab.view("app1");
    assert!(view.admin.ready() && view.status == "UP", "{view:?}");
}

/// How a server in flight got back into traffic while the rollout was down.
#[derive(Debug, Clone, Copy)]
enum BackInTraffic {
    /// HAProxy reloaded: the runtime state was dropped.
    Reload,
    /// An operator followed docs/safety.md: `set server ... state ready`.
    ManualReady,
    /// The tool had set it ready, and the journal's record of that was torn (disk full).
    TornJournal,
}

/// See: #10, case 3: `resume` after the server in flight went back into traffic, with two
/// requests held on it. It is drained again and reaches zero sessions before its restart:
/// both held requests complete, and no request fails.
fn resume_drains_a_server_found_in_traffic(way: BackInTraffic) {
    let mut lab = RolloutLab::start(LabOptions {
        route_by_path: true,
        ..LabOptions::default()
    });
    let plan = slow_restart_plan(&lab, "resume-in-traffic.yaml", 1);
    let before = lab.pids();
    crash_during_the_restart(&plan);
    let restarted_once = lab.wait_replaced(0, before[0]);
    match way {
        BackInTraffic::Reload => lab.lab.reload(),
        BackInTraffic::ManualReady => {
            assert_eq!(
                lab.lab.command("set server be_app/app1 state ready").trim(),
                ""
            );
        }
        BackInTraffic::TornJournal => {
            assert_eq!(
                lab.lab.command("set server be_app/app1 state ready").trim(),
                ""
            );
            use std::io::Write;
            let mut journal = std::fs::OpenOptions::new()
                .append(true)
                .open(journal_of(&plan))
                .unwrap();
            write!(
                journal,
                "{{\"record\":\"intent\",\"time\":\"2026-11-30T00:00:00Z\",\"server\":\"app1\",\"change\":\"ready\"}}\n\
                 {{\"record\":\"outcome\",\"time\":\"2026-11-30T00:00:00Z\",\"server\":\"app1\",\"cha"
            )
            .unwrap();
        }
    }
    lab.lab.wait_until("app1 back UP", |views| {
        views
            .iter()
            .any(|view| view.server == "app1" && view.admin.ready() && view.status == "UP")
    });
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let held = [hold(&lab, 1, 2500), hold(&lab, 1, 2500)];
    let resumed = rollout(["--output", "json", "resume", path(&plan)]).run();
    let held: Vec<Result<(), String>> = held.into_iter().map(|h| h.join().unwrap()).collect();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok, failed);

    assert_eq!(resumed.code, 0, "{way:?}: {}", resumed.stderr);
    assert!(
        held.iter().all(Result::is_ok),
        "{way:?}: held requests: {held:?}"
    );
    assert_eq!(failed, 0, "{way:?}: {failures:?} ({ok} succeeded)");
    if let BackInTraffic::TornJournal = way {
        assert!(
            resumed.stderr.contains("was not written whole"),
            "the torn record is reported: {}",
            resumed.stderr
        );
    }
    let events = events(&resumed.stdout);
    let found = events
        .iter()
        .find(|event| event["event"] == "found" && event["server"] == "app1")
        .unwrap_or_else(|| panic!("{way:?}: no decision for app1: {}", resumed.stdout));
    assert_eq!(found["live"], "in traffic (ready)", "{way:?}");
    let stages: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "stage" && event["server"] == "app1")
        .filter_map(|event| event["stage"].as_str())
        .collect();
    let drained = stages.iter().position(|stage| *stage == "draining");
    let restarted = stages.iter().position(|stage| *stage == "restarting");
    assert!(
        drained.is_some() && drained < restarted,
        "{way:?}: drained before its restart: {stages:?}"
    );
    lab.wait_replaced(0, restarted_once);
    assert!(
        lab.lab
            .views()
            .iter()
            .all(|view| view.admin.ready() && view.status == "UP"),
        "{way:?}"
    );
}

#[test]
fn resume_after_a_reload_dropped_the_maintenance_drains_before_the_restart() {
    resume_drains_a_server_found_in_traffic(BackInTraffic::Reload);
}

#[test]
fn resume_after_a_manual_state_ready_drains_before_the_restart() {
    resume_drains_a_server_found_in_traffic(BackInTraffic::ManualReady);
}

#[test]
fn resume_with_a_torn_last_journal_record_decides_from_live_state() {
    resume_drains_a_server_found_in_traffic(BackInTraffic::TornJournal);
}

/// See: #10, case 4: `resume --force` with the server in flight dropped from the plan. It
/// is never left out silently: `resume` refuses and names it (nothing changed); with
/// `--skip` it goes on with the rest and says the dropped server is left as it is.
#[test]
fn resume_refuses_a_plan_that_dropped_the_server_in_flight_until_it_is_skipped() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "dropped.yaml", 1);
    let before = lab.pids();
    crash_during_the_restart(&plan);
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, text.replace("  - name: app1\n", "")).unwrap();
    lab.wait_replaced(0, before[0]);
    let state = lab.lab.servers_state();
    let pids = lab.pids();
    let status = rollout(["--color", "never", "status", path(&plan)]).run();
    assert_eq!(status.code, 6, "app1 is out of rotation: {}", status.stderr);
    assert!(
        status.stderr.contains("was interrupted"),
        "{}",
        status.stderr
    );

    let changed = rollout(["resume", path(&plan)]).run();
    assert_eq!(
        changed.code, 2,
        "an edited plan needs --force: {}",
        changed.stderr
    );
    let refused = rollout(["--color", "never", "resume", "--force", path(&plan)]).run();
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("working on app1, which")
            && refused.stderr.contains("--skip app1")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(lab.lab.servers_state(), state, "nothing was changed");
    assert_eq!(lab.pids(), pids);

    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let resumed = rollout([
        "--color",
        "never",
        "resume",
        "--force",
        "--skip",
        "app1",
        path(&plan),
    ])
    .run();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok, failed);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    assert!(
        resumed
            .stderr
            .contains("app1 was in flight and is no longer in the plan")
            && resumed.stderr.contains("OUT OF ROTATION")
            && resumed.stderr.contains("show servers state"),
        "{}",
        resumed.stderr
    );
    assert!(
        lab.lab.view("app1").admin.in_maintenance(),
        "left as it was"
    );
    let after = lab.pids();
    assert_eq!(after[0], pids[0], "app1 not touched");
    assert!(
        after[1] != pids[1] && after[2] != pids[2],
        "the rest restarted"
    );
}

/// See: #10: an abort at server 2 of 4, then `resume` finishes 3 and 4 (and 2, which the
/// abort returned unrestarted) without restarting 1; `apply` in between refuses and names
/// `resume`. No request fails.
#[test]
fn an_aborted_rollout_is_continued_by_resume_without_restarting_what_it_finished() {
    let lab = RolloutLab::start(LabOptions {
        servers: 4,
        route_by_path: true,
        ..LabOptions::default()
    });
    let plan = lab.plan("continue.yaml", None, "");
    let first = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let held = hold(&lab, 2, 3000);
    let running = apply(&plan);
    running.wait_for("app2 draining", |event| is(event, "sessions_left", "app2"));
    let abort = rollout(["abort", path(&plan)]).run();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(running.finish().code, 4);
    assert!(held.join().unwrap().is_ok());
    let after_abort = lab.pids();
    assert_ne!(after_abort[0], first[0], "app1 was done");
    assert_eq!(after_abort[1..], first[1..], "app2 went back unrestarted");

    let again = rollout(["--color", "never", "apply", "--yes", path(&plan)]).run();
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(
        again.stderr.contains("stopped (interrupted)")
            && again.stderr.contains("haproxy-rollout resume")
            && again.stderr.contains("--fresh"),
        "{}",
        again.stderr
    );

    // A pipeline gate: not at rest while the rollout is unfinished.
    let status = rollout(["--color", "never", "status", path(&plan)]).run();
    assert_eq!(status.code, 6, "{}", status.stderr);
    assert!(
        status.stderr.contains("stopped (interrupted)"),
        "{}",
        status.stderr
    );

    let resumed = rollout(["--output", "json", "resume", path(&plan)]).run();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok, failed);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    let status = rollout(["status", path(&plan)]).run();
    assert_eq!(status.code, 0, "at rest: {}", status.stderr);
    let after = lab.pids();
    assert_eq!(after[0], after_abort[0], "app1 was not restarted again");
    for index in 1..4 {
        assert_ne!(
            after[index],
            after_abort[index],
            "app{} restarted",
            index + 1
        );
    }
    let summary = summary(&resumed.stdout);
    assert_eq!(state_of(&summary, "app1"), "done_earlier");
    for server in ["app2", "app3", "app4"] {
        assert_eq!(state_of(&summary, server), "done");
    }
    let done = rollout(["resume", path(&plan)]).run();
    assert_ne!(done.code, 0, "nothing left to resume: {}", done.stderr);
}

/// See: #10: one plan reaches HAProxy over its unix socket, another reaches the same
/// HAProxy over TCP. The backend lock belongs to the HAProxy process, not to the socket
/// string: the second `apply` exits 5 naming the holder and changes nothing.
#[test]
fn two_plans_reaching_one_haproxy_by_unix_and_tcp_never_run_at_once() {
    let lab = RolloutLab::start(LabOptions::default());
    let by_unix = slow_restart_plan(&lab, "by-unix.yaml", 3);
    let text = std::fs::read_to_string(&by_unix).unwrap();
    let by_tcp = lab.lab.dir.path().join("by-tcp.yaml");
    std::fs::write(
        &by_tcp,
        text.replace(
            &format!("socket: {}", lab.lab.admin_socket.display()),
            &format!("socket: tcp://127.0.0.1:{}", lab.lab.tcp_port),
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(&by_tcp).unwrap().contains("tcp://"));
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let running = apply(&by_unix);
    wait_restarting(&running);
    // app1 in maintenance, its restart running for a while: nothing of the first rollout
    // changes meanwhile, so any change would be the second's.
    wait_command_running(&by_unix, "app1");
    let state = lab.lab.servers_state();
    let second = rollout(["--color", "never", "apply", "--yes", path(&by_tcp)]).run();
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert!(
        second.stderr.contains("backend be_app of HAProxy lb1")
            && second.stderr.contains("is locked by")
            && second.stderr.contains("nothing was changed"),
        "{}",
        second.stderr
    );
    assert_eq!(lab.lab.servers_state(), state, "the second changed nothing");
    let first = running.finish();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok, failed);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
}

/// See: #10: a state directory that cannot hold the journal and locks is a pre-flight
/// failure (exit 3), not a usage error, and nothing is changed.
#[test]
fn an_unusable_state_directory_fails_pre_flight_and_changes_nothing() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("no-state.yaml", None, "");
    let file = lab.lab.dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let state = lab.lab.servers_state();
    let pids = lab.pids();
    let applied = rollout(["--color", "never", "apply", "--yes", path(&plan)])
        .env(
            "HAPROXY_ROLLOUT_STATE_DIR",
            file.join("state").to_str().unwrap(),
        )
        .run();
    assert_eq!(applied.code, 3, "{}", applied.stderr);
    assert!(
        applied.stderr.contains("state directory")
            && applied.stderr.contains("nothing was changed"),
        "{}",
        applied.stderr
    );
    assert_eq!(lab.lab.servers_state(), state);
    assert_eq!(lab.pids(), pids);
}

/// See: #10: `abort --now` during a restart abandons the command, not the host's process:
/// the summary says the restart may still run and until when, and a `resume` right after
/// waits for it before the server's restart is redone. No request fails.
#[test]
fn abort_now_during_the_restart_says_until_when_it_may_run_and_resume_waits_for_it() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "abort-now-restart.yaml", 3);
    let before = lab.pids();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let running = apply(&plan);
    wait_restarting(&running);
    wait_command_running(&plan, "app1");
    let abort = rollout(["abort", "--now", path(&plan)]).run();
    let applied = running.finish();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    let summary = summary(&applied.stdout);
    assert_eq!(state_of(&summary, "app1"), "out_of_rotation");
    let may_run = &summary["servers"][0]["may_still_run"];
    assert_eq!(may_run["command"], "restart", "{summary}");
    assert!(may_run["until"].as_str().is_some(), "{summary}");
    assert!(lab.lab.view("app1").admin.in_maintenance());

    let resumed = rollout(["--output", "json", "resume", path(&plan)]).run();
    let (ok, failed, failures) = traffic.stop();
    report_traffic(ok, failed);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    let events = events(&resumed.stdout);
    let app1 = kinds(&events, "app1");
    let ended = app1.iter().position(|kind| *kind == "command_ended");
    let first_stage = app1.iter().position(|kind| *kind == "stage");
    assert!(ended.is_some() && ended < first_stage, "{app1:?}");
    let after = lab.pids();
    assert!(before.iter().zip(&after).all(|(old, new)| old != new));
}

/// The control directories (`/tmp/hr-ssh-PID-*`) whose SSH master sockets a killed run left.
fn control_directories_of(pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&format!("hr-ssh-{pid}-")))
        })
        .collect()
}

/// SSH master processes whose control socket is under `dir`.
fn masters_in(dir: &std::path::Path) -> usize {
    let output = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(dir.to_str().unwrap())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// See: #13, housekeeping: what a SIGKILLed run left is cleaned by the next start.
#[test]
fn a_killed_runs_ssh_masters_and_control_directory_are_gone_after_the_next_start() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = slow_restart_plan(&lab, "killed-ssh.yaml", 3);
    let running = apply(&plan);
    let pid = running.pid();
    wait_restarting(&running);
    wait_command_running(&plan, "app1");
    running.signal("KILL");
    running.finish();
    let left = control_directories_of(pid);
    assert_eq!(
        left.len(),
        1,
        "the killed run left its control directory: {left:?}"
    );
    assert!(masters_in(&left[0]) > 0, "and its SSH master");
    // Any start that opens SSH connections cleans up first.
    let preview = rollout(["plan", path(&plan)]).run();
    assert!(preview.code == 0 || preview.code == 3, "{}", preview.stderr);
    assert!(!left[0].exists(), "{left:?} was removed");
    let start = std::time::Instant::now();
    while masters_in(&left[0]) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the orphaned SSH master ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Put app1 right for the lab's clean-up: the orphaned restart ends, abort settles it.
    rollout(["abort", path(&plan)]).run();
}
