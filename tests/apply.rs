//! `apply` end to end: real haproxy, real sshd on 127.0.0.1, real application processes that
//! a restart really kills, live traffic through HAProxy.

mod common;

use std::time::Duration;

use common::deploy::path;
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Sampler, Traffic};
use common::{events, rollout, server_in as server, summary_in as summary};

/// See: #4, test 1.
#[test]
fn rolls_three_servers_under_traffic_with_zero_failed_requests() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("rollout.yaml", None, "capacity:\n  min_up: 1\n");
    let before = lab.pids();
    let sampler = Sampler::unix(lab.lab.admin_socket.clone());
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 2);
    std::thread::sleep(Duration::from_millis(500));

    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)]).run();
    let (ok, failed, failures) = traffic.stop();
    let common::rollout_lab::Seen {
        fewest_in: fewest_up,
        samples,
        ..
    } = sampler.stop();
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
        assert_eq!(server["state"], "done");
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

/// Requests to `path` through HAProxy, started at once, one per server by roundrobin.
fn concurrent_requests(
    port: u16,
    path: &'static str,
    count: usize,
) -> Vec<std::thread::JoinHandle<Result<(), String>>> {
    let handles = (0..count)
        .map(|_| std::thread::spawn(move || common::rollout_lab::request(port, path)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    handles
}

/// See: #4, test 2.
#[test]
fn a_request_in_flight_when_the_drain_starts_completes() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("inflight.yaml", None, "");
    let requests = concurrent_requests(lab.lab.frontend_port, "/slow?ms=3000", 3);
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)]).run();
    for request in requests {
        assert_eq!(
            request.join().unwrap(),
            Ok(()),
            "the request in flight completed"
        );
    }
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let events = events(&outcome.stdout);
    let app1 = server(summary(&events), "app1");
    // The drain could not end before the 3 s request did: the restart waited for it.
    assert!(
        app1["timings"]["draining_ms"].as_u64().unwrap() >= 2000,
        "{app1}"
    );
    assert!(
        events
            .iter()
            .any(|event| event["event"] == "sessions_left" && event["server"] == "app1")
    );
}

/// See: #4, test 3.
#[test]
fn a_failed_restart_stops_the_rollout_and_leaves_the_server_out_of_rotation() {
    let lab = RolloutLab::start(LabOptions::default());
    let failing = lab.ports[1];
    let command = format!(
        "\"if [ {{port}} = {failing} ]; then echo 'deploy failed: disk full' >&2; exit 3; fi; {} {{port}}\"",
        lab.restart_script.display()
    );
    let plan = lab.plan("failing.yaml", Some(&command), "");
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(1);
    let after = lab.pids();
    assert_ne!(before[0], after[0], "app1 was restarted");
    assert_eq!(before[1], after[1], "app2's restart failed");
    assert_eq!(before[2], after[2], "app3 was not touched");

    let events = events(&outcome.stdout);
    let summary = summary(&events);
    assert_eq!(summary["outcome"], "failed");
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited with status 3") && reason.contains("deploy failed: disk full"),
        "{reason}"
    );
    assert_eq!(server(summary, "app1")["state"], "done");
    let app2 = server(summary, "app2");
    assert_eq!(app2["state"], "out_of_rotation");
    let restore = app2["restore"][0].as_str().unwrap();
    assert!(
        restore
            .starts_with("echo 'set server be_app/app2 state ready' | socat stdio unix-connect:"),
        "{restore}"
    );
    assert_eq!(server(summary, "app3")["state"], "untouched");

    let views = lab.lab.views();
    let app2 = views.iter().find(|view| view.server == "app2").unwrap();
    assert!(
        app2.admin.in_maintenance(),
        "app2 is left out of rotation: {app2:?}"
    );
    let app3 = views.iter().find(|view| view.server == "app3").unwrap();
    assert!(app3.admin.ready(), "app3 untouched: {app3:?}");

    // The restore command works as printed.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(restore)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(lab.lab.view("app2").admin.ready());
}

/// See: #4, test 4.
#[test]
fn an_application_that_never_becomes_healthy_fails_after_health_within() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("unhealthy.yaml", None, "");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("within: 10s", "within: 2s");
    std::fs::write(&plan, text).unwrap();
    // Healthy now (pre-flight asks), never again once restarted.
    std::fs::write(lab.lab.dir.path().join("break-health"), "").unwrap();
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(1);
    let after = lab.pids();
    assert_ne!(before[0], after[0], "app1 was restarted");
    assert_eq!(
        &before[1..],
        &after[1..],
        "the next servers were not touched"
    );
    let events = events(&outcome.stdout);
    let summary = summary(&events);
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not answer as expected within 2s")
            && reason.contains("answered 503, expected 200"),
        "{reason}"
    );
    assert_eq!(server(summary, "app1")["state"], "out_of_rotation");
    assert!(lab.lab.view("app1").admin.in_maintenance());
    assert!(lab.lab.view("app2").admin.ready());
}

/// See: #4, test 5.
#[test]
fn haproxy_checks_that_fail_after_the_restart_keep_the_server_out() {
    let lab = RolloutLab::start(LabOptions {
        check_path: "/check",
        ..LabOptions::default()
    });
    let plan = lab.plan("checks.yaml", None, "ready:\n  timeout: 3s\n");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("ready:\n  timeout: 10s\n", "");
    std::fs::write(&plan, text).unwrap();
    std::fs::write(lab.lab.dir.path().join("break-checks"), "").unwrap();
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(1);
    let after = lab.pids();
    assert_ne!(before[0], after[0]);
    assert_eq!(
        &before[1..],
        &after[1..],
        "the next servers were not touched"
    );
    let events = events(&outcome.stdout);
    assert!(
        events
            .iter()
            .any(|event| event["event"] == "stage" && event["stage"] == "haproxy_checks"),
        "its own health passed, so it waited for HAProxy"
    );
    let summary = summary(&events);
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("HAProxy's checks did not pass within ready.timeout (3s)"),
        "{reason}"
    );
    assert_eq!(server(summary, "app1")["state"], "out_of_rotation");
    let app1 = lab.lab.view("app1");
    assert!(app1.admin.in_maintenance(), "{app1:?}");
}

/// See: #4, test 6.
#[test]
fn another_server_down_before_the_start_blocks_the_rollout_and_nothing_is_drained() {
    let lab = RolloutLab::start(LabOptions::default());
    lab.lab.command("set server be_app/app3 state maint");
    let plan = lab.plan("blocked.yaml", None, "capacity:\n  min_up: 2\n");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("  - name: app3\n", "");
    std::fs::write(&plan, text).unwrap();
    let before = lab.lab.servers_state();
    let pids = lab.pids();
    let outcome = rollout(["--color", "never", "apply", "--yes", path(&plan)])
        .run()
        .code(3);
    assert_eq!(lab.lab.servers_state(), before, "nothing was drained");
    assert_eq!(lab.pids(), pids);
    assert!(
        outcome.stdout.contains("BLOCKED capacity: be_app on lb1 has 1 other server in rotation besides app1 (app2); min_up 2; out of rotation: app3 MAINT"),
        "{}",
        outcome.stdout
    );
}

/// See: #4, test 7 (on_timeout: fail).
#[test]
fn a_session_outliving_the_drain_timeout_returns_the_server_unrestarted() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan(
        "drain-fail.yaml",
        None,
        "drain:\n  timeout: 1s\n  on_timeout: fail\n",
    );
    let requests = concurrent_requests(lab.lab.frontend_port, "/slow?ms=6000", 3);
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(1);
    assert_eq!(lab.pids(), before, "nothing was restarted");
    let events = events(&outcome.stdout);
    let summary = summary(&events);
    let app1 = server(summary, "app1");
    assert_eq!(app1["state"], "returned_unrestarted");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("still open after drain.timeout")
    );
    assert!(lab.lab.view("app1").admin.ready(), "returned to traffic");
    for request in requests {
        assert_eq!(request.join().unwrap(), Ok(()), "no session was cut");
    }
}

/// See: #4, test 7 (on_timeout: force).
#[test]
fn force_shuts_sessions_down_at_the_drain_timeout_reports_them_and_goes_on() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan(
        "drain-force.yaml",
        None,
        "drain:\n  timeout: 1s\n  on_timeout: force\n",
    );
    let requests = concurrent_requests(lab.lab.frontend_port, "/slow?ms=20000", 3);
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(0);
    let after = lab.pids();
    assert!(
        before.iter().zip(&after).all(|(old, new)| old != new),
        "all restarted"
    );
    let events = events(&outcome.stdout);
    let cut: Vec<u64> = events
        .iter()
        .filter(|event| event["event"] == "sessions_cut")
        .map(|event| event["sessions"].as_u64().unwrap())
        .collect();
    assert!(
        !cut.is_empty() && cut.iter().all(|sessions| *sessions >= 1),
        "{cut:?}"
    );
    assert!(
        server(summary(&events), "app1")["sessions_cut"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let cut_requests = requests
        .into_iter()
        .map(|request| request.join().unwrap())
        .filter(Result::is_err)
        .count();
    assert!(cut_requests >= 1, "the forced sessions really were cut");
}

/// See: #4, test 8.
#[test]
fn a_host_key_that_does_not_match_fails_preflight_and_touches_nothing() {
    let lab = RolloutLab::start(LabOptions::default());
    let other = lab.lab.dir.path().join("other_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let fields: Vec<&str> = other_public.split_whitespace().take(2).collect();
    std::fs::write(
        &lab.sshd.known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            lab.sshd.port, fields[0], fields[1]
        ),
    )
    .unwrap();
    let plan = lab.plan("hostkey.yaml", None, "");
    let before = lab.lab.servers_state();
    let pids = lab.pids();
    let outcome = rollout(["--color", "never", "apply", "--yes", path(&plan)])
        .run()
        .code(3);
    assert_eq!(lab.lab.servers_state(), before, "nothing was touched");
    assert_eq!(lab.pids(), pids);
    assert!(
        outcome
            .stderr
            .contains("pre-flight failed: cannot open an SSH connection to 127.0.0.1")
            && outcome.stderr.contains("nothing was changed"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.to_lowercase().contains("host key"),
        "the reason names the host key: {}",
        outcome.stderr
    );
    // The preview finds it too (connecting changes nothing), and says so with --no-ssh.
    let preview = rollout(["--color", "never", "plan", path(&plan)])
        .run()
        .code(3);
    assert!(
        preview
            .stdout
            .contains("BLOCKED ssh: cannot open an SSH connection to 127.0.0.1")
            && preview.stdout.to_lowercase().contains("host key"),
        "{}",
        preview.stdout
    );
    let unchecked = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(0);
    assert!(
        unchecked
            .stdout
            .contains("warning ssh: not checked (--no-ssh)"),
        "{}",
        unchecked.stdout
    );
    assert_eq!(lab.lab.servers_state(), before, "nothing was touched");
}

#[test]
fn capacity_is_checked_again_at_each_drain_when_a_server_dies_mid_rollout() {
    let lab = RolloutLab::start(LabOptions::default());
    // app1's after_ready hook kills app3, then waits until HAProxy has seen it (fall 2 x 200ms).
    let app3_pid_file = lab.lab.dir.path().join(format!("app-{}.pid", lab.ports[2]));
    let hooks = format!(
        "hooks:\n  after_ready:\n    command: \"test {{server}} != app1 || {{{{ kill $(cat {}); sleep 1.5; }}}}\"\n",
        app3_pid_file.display()
    );
    let plan = lab.plan(
        "mid-rollout.yaml",
        None,
        &format!("capacity:\n  min_up: 2\n{hooks}"),
    );
    let before = lab.pids();
    rollout(["plan", path(&plan)]).run().code(0);
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)])
        .run()
        .code(1);
    let events = events(&outcome.stdout);
    let summary = summary(&events);
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("capacity: be_app on HAProxy lb1 has 1 other server(s) in rotation besides app2; min_up 2; out of rotation there: app3 (DOWN)"),
        "{reason}"
    );
    assert_eq!(server(summary, "app1")["state"], "done");
    assert_eq!(server(summary, "app2")["state"], "untouched");
    let app2 = lab.lab.view("app2");
    assert!(
        app2.admin.ready() && app2.in_rotation(),
        "app2 was never drained: {app2:?}"
    );
    assert_eq!(
        lab.app_pid(lab.ports[1]),
        before[1],
        "app2 was not restarted"
    );
}
