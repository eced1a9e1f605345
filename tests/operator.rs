//! What an operator meets before and around a rollout: a preview that checks what apply
//! checks, a restart command that does not exist, apply where it cannot ask, Ctrl-C at the
//! question. Real haproxy, a real sshd on 127.0.0.1, real application processes.

mod common;

use std::time::Duration;

use common::deploy::path;
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::{events, rollout, server_in as server, summary_in as summary};

/// See: #13, a wrong health URL.
#[test]
fn a_wrong_health_url_blocks_plan_and_apply_before_anything_changes() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("wrong-url.yaml", None, "");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("/health\n", "/fail\n");
    std::fs::write(&plan, text).unwrap();
    let (state, pids) = (lab.lab.servers_state(), lab.pids());
    let preview = rollout(["--color", "never", "plan", path(&plan)])
        .run()
        .code(3);
    let port = lab.ports[0];
    assert!(
        preview.stdout.contains(&format!(
            "BLOCKED health: app1 is in rotation but its health URL does not answer 200: GET http://127.0.0.1:{port}/fail answered 404"
        )),
        "{}",
        preview.stdout
    );
    assert!(
        preview
            .stdout
            .contains("ok      ssh: 1 host(s) reachable, host keys verified"),
        "{}",
        preview.stdout
    );
    // The reasons come first and again last; the step listing only with -v.
    assert!(
        preview
            .stdout
            .lines()
            .nth(3)
            .is_some_and(|line| line.starts_with("  BLOCKED health: app1")),
        "{}",
        preview.stdout
    );
    assert!(
        !preview
            .stdout
            .lines()
            .any(|line| line == "what apply would run, server by server")
            && preview.stdout.contains("is listed with -v")
            && preview
                .stdout
                .trim_end()
                .lines()
                .last()
                .is_some_and(|line| line.starts_with("  - health: app3 is in rotation")),
        "{}",
        preview.stdout
    );
    assert!(
        preview.stdout.contains(
            "pre-flight failed: 3 problem(s) block the rollout now; nothing was changed:"
        ),
        "{}",
        preview.stdout
    );
    let verbose = rollout(["--color", "never", "-v", "plan", path(&plan)])
        .run()
        .code(3);
    assert!(
        verbose
            .stdout
            .lines()
            .any(|line| line == "what apply would run, server by server"),
        "{}",
        verbose.stdout
    );
    let applied = rollout(["--color", "never", "apply", "--yes", path(&plan)])
        .run()
        .code(3);
    assert!(
        applied.stdout.contains("BLOCKED health: app1"),
        "{}",
        applied.stdout
    );
    assert_eq!(lab.lab.servers_state(), state, "nothing was drained");
    assert_eq!(lab.pids(), pids, "nothing was restarted");
}

/// Property 2 holds at the moment of each drain, not only at pre-flight: a server that dies
/// mid-rollout stops the next drain that would break `min_up`.
/// See: #13, a restart command that does not exist.
#[test]
fn a_restart_command_that_does_not_exist_is_a_failed_restart_with_what_the_host_said() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("missing.yaml", Some("/opt/app/no-such-deploy {port}"), "");
    let before = lab.pids();
    let outcome = rollout(["--output", "json", "apply", "--yes", path(&plan)]).run();
    eprintln!("{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(outcome.code, 1);
    let events = events(&outcome.stdout);
    let summary = summary(&events);
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("the restart failed")
            && reason.contains("exited with status 127")
            && reason.contains("no-such-deploy"),
        "{reason}"
    );
    let app1 = server(summary, "app1");
    assert_eq!(app1["state"], "out_of_rotation");
    assert!(app1["may_still_run"].is_null(), "{app1}");
    assert!(
        !events.iter().any(|event| event["event"] == "server_done"),
        "no server is reported back"
    );
    assert_eq!(before, lab.pids());
}

/// See: #13, apply without a terminal to ask on.
#[test]
fn apply_without_yes_and_without_a_terminal_refuses_and_touches_nothing() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("unasked.yaml", None, "");
    let (state, pids) = (lab.lab.servers_state(), lab.pids());
    // The test harness gives the binary no stdin: like cron, a pipe or `ssh host cmd`.
    let outcome = rollout(["apply", path(&plan)]).run();
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("add --yes to run it without asking")
            && outcome.stderr.contains("nothing was changed"),
        "{}",
        outcome.stderr
    );
    assert_eq!(lab.lab.servers_state(), state);
    assert_eq!(lab.pids(), pids);
}

/// See: #13, Ctrl-C at the question.
#[test]
fn ctrl_c_at_the_question_declines_with_exit_4_and_leaves_no_lock() {
    use std::io::{Read, Write};
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("asked.yaml", None, "");
    let state_dir = lab.lab.dir.path().join("state");
    // `script` runs it on a terminal of its own; what is written to script's stdin is
    // typed on that terminal, so \x03 is a real Ctrl-C. `exec`: script starts the command
    // through $SHELL, and a shell left between them gets the SIGINT too (dash then ends
    // with 130 whatever the command exited with).
    let command = format!(
        "exec {} apply {}",
        common::rollout_binary().display(),
        plan.display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("HAPROXY_ROLLOUT_STATE_DIR", &state_dir)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdout = script.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read) = stdout.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buffer[..read]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    // The question comes once pre-flight passed; then Ctrl-C.
    let start = std::time::Instant::now();
    while !shown().contains("[y/N]") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no question: {}",
            shown()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdin = script.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let status = script.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let shown = shown();
    assert!(shown.contains("Restart 3 server(s) now? [y/N]"), "{shown}");
    assert!(
        shown.contains("not confirmed; nothing was changed"),
        "{shown}"
    );
    assert_eq!(status.code(), Some(4), "{shown}");
    // No lock was left behind: the next apply starts without a word about one.
    let next = rollout(["apply", "--yes", path(&plan)])
        .env("HAPROXY_ROLLOUT_STATE_DIR", state_dir.to_str().unwrap())
        .run();
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(!next.stderr.contains("stale lock"), "{}", next.stderr);
}

/// Lines of a running rollout for people (stderr not a terminal): each starts with its time.
fn timed(line: &str) -> bool {
    line.len() > 24 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T'
}

/// See: #13, waits that say how long they have and why they still wait.
#[test]
fn a_slow_application_is_waited_for_with_the_phase_limit_and_the_last_reason() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("slow-start.yaml", None, "");
    // Each restarted application listens only 700 ms after it started: the quick retries
    // of its health probe must still never return it to traffic early.
    std::fs::write(lab.lab.dir.path().join("start-after"), "700").unwrap();
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    std::thread::sleep(Duration::from_millis(300));
    let outcome = rollout(["--color", "never", "apply", "--yes", path(&plan)])
        .run()
        .code(0);
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 10, "traffic ran: {ok} requests");
    eprintln!("slow-starting apps: {ok} requests, 0 failed");
    let port = lab.ports[0];
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    let started = lines
        .iter()
        .find(|line| line.ends_with(" app1: waiting for its health endpoint (at most 10s)"))
        .unwrap_or_else(|| panic!("{}", outcome.stderr));
    assert!(timed(started), "{started}");
    let still = lines
        .iter()
        .find(|line| line.contains(" app1: still waiting for its health endpoint ("))
        .unwrap_or_else(|| panic!("{}", outcome.stderr));
    assert!(timed(still), "{still}");
    assert!(
        still.contains(&format!("s of 10s): GET http://127.0.0.1:{port}/health: "))
            && still.contains("Connection refused"),
        "{still}"
    );
    // Said once per reason, not once per probe.
    let repeats = lines
        .iter()
        .filter(|line| line.contains(" app1: still waiting for its health endpoint ("))
        .count();
    assert_eq!(repeats, 1, "{}", outcome.stderr);
}

/// See: #13, a signal that is not `abort` is logged as what it is, in the same format.
#[test]
fn sigterm_is_logged_as_a_signal_in_the_format_of_every_other_line() {
    let lab = RolloutLab::start(common::scenario::routed());
    let plan = lab.plan("sigterm.yaml", None, "");
    let held = common::scenario::hold(&lab, 1, 2000);
    let running = rollout(["--color", "never", "apply", "--yes", path(&plan)]).spawn();
    let start = std::time::Instant::now();
    while !lab.lab.view("app1").admin.draining() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "app1 never drained"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.signal("TERM");
    let applied = running.finish();
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    assert_eq!(held.join().unwrap(), Ok(()));
    let line = applied
        .stderr
        .lines()
        .find(|line| line.contains("SIGTERM"))
        .unwrap_or_else(|| panic!("{}", applied.stderr));
    assert!(timed(line), "{line}");
    assert!(
        line.ends_with(
            " warning: SIGTERM (a cancelled job, or kill) received: stopping at the next safe point (the step in progress finishes first; a second request stops now)"
        ),
        "{line}"
    );
    assert!(
        !applied.stderr.contains("abort requested"),
        "{}",
        applied.stderr
    );
}

/// See: #13, writing the first plan.
#[test]
fn init_writes_a_plan_from_the_live_haproxy_that_plan_accepts_once_filled_in() {
    let lab = RolloutLab::start(LabOptions {
        second_backend: Some("be_api"),
        ..LabOptions::default()
    });
    let socket = lab.lab.admin_socket.to_str().unwrap().to_owned();
    let written = rollout(["init", "--socket", &socket, "--ssh-user", "root"])
        .run()
        .code(0);
    let text = written.stdout;
    for (index, port) in lab.ports.iter().enumerate() {
        let line = format!(
            "  - name: app{}    # 127.0.0.1:{port}, in be_app, be_api, UP now\n",
            index + 1
        );
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
    assert!(text.contains("backends: [be_app, be_api]\n"), "{text}");
    assert!(text.contains("# poll_interval: 200ms\n"), "{text}");
    let plan = lab.lab.dir.path().join("init.yaml");
    std::fs::write(&plan, &text).unwrap();
    // Refused until the one thing HAProxy cannot know is filled in, saying what it is.
    let refused = rollout(["validate", path(&plan)]).run().code(2);
    assert!(
        refused
            .stderr
            .contains("restart.command: the restart command is empty"),
        "{}",
        refused.stderr
    );
    let filled = text
        .replace(
            "command: \"\"",
            &format!("command: {} {{port}}", lab.restart_script.display()),
        )
        .replace("ssh:\n  user: \"root\"\n", &lab.sshd.plan_section());
    std::fs::write(&plan, filled).unwrap();
    let preview = rollout(["--color", "never", "plan", path(&plan)])
        .run()
        .code(0);
    assert!(
        preview.stdout.contains("pre-flight passed"),
        "{}",
        preview.stdout
    );
    // A backend it does not have: said, with the one it probably meant.
    let wrong = rollout(["init", "--socket", &socket, "--backend", "be_appp"])
        .run()
        .code(2);
    assert!(
        wrong.stderr.contains(
            "--backend be_appp: this HAProxy has no backend be_appp with servers (it has: be_app, be_api); did you mean `be_app` (for `be_appp`)?"
        ),
        "{}",
        wrong.stderr
    );
}
