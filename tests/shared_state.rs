//! Rollout state shared on etcd (#15): two "machines" (two processes with their own state
//! folders and homes) against a real etcd cluster (one member, three, or one with TLS), real
//! haproxy, sshd and application processes, live traffic, failed requests counted.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::scenario::*;
use common::{Run, events, rollout, server_in, summary_in};

/// A machine: its own state folder and home, so nothing but etcd is shared.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new(name: &str) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hr-machine-{name}"))
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Machine { dir }
    }

    fn run(&self, args: &[&str]) -> Run {
        rollout(args)
            .env(
                "HAPROXY_ROLLOUT_STATE_DIR",
                self.dir.path().join("state").to_str().unwrap(),
            )
            .env("HOME", self.dir.path().join("home").to_str().unwrap())
    }

    fn apply(&self, plan: &Path) -> common::Background {
        self.run(&["--output", "json", "apply", "--yes", path(plan)])
            .env("CI_JOB_URL", "https://ci.example/jobs/4242")
            .spawn()
    }
}

/// A plan whose state is on `etcd`; each restart is counted in `restarts-PORT` beside the
/// plan and sleeps `seconds` first.
fn shared_plan(lab: &RolloutLab, etcd: &Etcd, name: &str, seconds: u32) -> PathBuf {
    let counts = lab.lab.dir.path().display().to_string();
    let command = format!(
        "\"echo restart >> {counts}/restarts-{{port}}; sleep {seconds}; {} {{port}}\"",
        lab.restart_script.display()
    );
    lab.plan(name, Some(&command), &etcd.plan_section("4s"))
}

/// How many times each server was restarted, in plan order.
fn restarts(lab: &RolloutLab) -> Vec<usize> {
    lab.ports
        .iter()
        .map(|port| {
            std::fs::read_to_string(lab.lab.dir.path().join(format!("restarts-{port}")))
                .map_or(0, |text| text.lines().count())
        })
        .collect()
}

/// Waits until server `index`'s restart command has run `count` times in all.
fn wait_for_restarts(lab: &RolloutLab, index: usize, count: usize) {
    let start = Instant::now();
    while restarts(lab)[index] < count {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "app{}'s restart ran",
            index + 1
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_up(lab: &RolloutLab) {
    for view in lab.lab.views() {
        assert!(
            view.admin.ready() && view.status == "UP",
            "every server back in traffic: {view:?}"
        );
    }
}

#[track_caller]
fn no_failed_requests(traffic: Traffic) {
    let (ok, failed, failures) = traffic.stop();
    eprintln!(
        "{}: {ok} requests succeeded, {failed} failed",
        std::thread::current().name().unwrap_or("?")
    );
    assert_eq!(failed, 0, "{failures:?} ({ok} succeeded)");
    assert!(ok > 0, "traffic flowed");
}

/// See: #15, test 1: a second `apply` of the plan on another machine is refused (exit 5)
/// naming the first: host, pid, start time and CI job; so is another plan that shares a
/// backend with it. Nothing is touched by either.
#[test]
fn a_second_apply_on_another_machine_is_refused_naming_the_first() {
    let etcd = Etcd::start(1);
    let lab = RolloutLab::start(LabOptions::default());
    let plan = shared_plan(&lab, &etcd, "web.yaml", 1);
    let other = shared_plan(&lab, &etcd, "web-other.yaml", 0);
    let (a, b) = (Machine::new("a"), Machine::new("b"));
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = a.apply(&plan);
    wait_restarting(&running);

    let same = b.run(&["apply", "--yes", path(&plan)]).run().code(5);
    let holder = format!("pid {} on ", running.pid());
    assert!(same.stderr.contains(&holder), "{}", same.stderr);
    assert!(
        same.stderr.contains("job https://ci.example/jobs/4242"),
        "{}",
        same.stderr
    );
    assert!(same.stderr.contains("since 20"), "{}", same.stderr);
    assert!(
        same.stderr.contains("nothing was changed"),
        "{}",
        same.stderr
    );
    // The preview on B says so too, without taking anything.
    let preview = b.run(&["plan", "--no-ssh", path(&plan)]).run().code(3);
    assert!(
        preview
            .stdout
            .contains("state: a rollout of this plan is running: `haproxy-rollout apply`")
            && preview.stdout.contains(&holder),
        "{}",
        preview.stdout
    );
    let sharing = b.run(&["apply", "--yes", path(&other)]).run().code(5);
    assert!(
        sharing.stderr.contains("backend be_app of HAProxy lb1")
            && sharing.stderr.contains(&holder),
        "{}",
        sharing.stderr
    );

    running.finish().code(0);
    no_failed_requests(traffic);
    assert_eq!(
        restarts(&lab),
        vec![1, 1, 1],
        "only the first apply restarted"
    );
    all_up(&lab);
}

/// See: #15, test 2: `abort` on machine B reaches A's `apply` through etcd and stops it at
/// its next safe point: both exit 4, A says who asked, no request fails.
#[test]
fn abort_on_another_machine_stops_the_apply_at_its_next_safe_point() {
    let etcd = Etcd::start(1);
    let lab = RolloutLab::start(LabOptions::default());
    let plan = shared_plan(&lab, &etcd, "abortable.yaml", 1);
    let (a, b) = (Machine::new("a"), Machine::new("b"));
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = a.apply(&plan);
    wait_restarting(&running);

    let asked = Instant::now();
    let abort = b.run(&["--output", "json", "abort", path(&plan)]).run();
    let finished = running.finish();
    eprintln!("abort from B answered after {:?}", asked.elapsed());
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(finished.code, 4, "{}", finished.stderr);
    let events = events(&finished.stdout);
    let stopping = events
        .iter()
        .find(|event| event["event"] == "stopping")
        .expect("a stopping event");
    assert_eq!(stopping["cause"], "abort", "{stopping}");
    assert!(
        stopping["from"]
            .as_str()
            .unwrap()
            .contains("haproxy-rollout abort"),
        "{stopping}"
    );
    let summary = summary_in(&events);
    assert_eq!(server_in(summary, "app1")["state"], "done", "{summary}");
    assert_eq!(
        server_in(summary, "app2")["state"],
        "untouched",
        "{summary}"
    );
    no_failed_requests(traffic);
    assert_eq!(restarts(&lab), vec![1, 0, 0]);
    all_up(&lab);
}

/// An `abort` on B that lands while A is still in pre-flight (it holds the plan's lock, but
/// its watch is not yet up: its health probes take 2.5 s here) is not lost: A stops before
/// its first server, and both exit 4.
#[test]
fn an_abort_while_the_apply_is_in_pre_flight_is_not_lost() {
    let etcd = Etcd::start(1);
    let lab = RolloutLab::start(LabOptions::default());
    let plan = shared_plan(&lab, &etcd, "early-abort.yaml", 1);
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("{port}/health", "{port}/slow?ms=2500\n  timeout: 5s");
    std::fs::write(&plan, text).unwrap();
    let (a, b) = (Machine::new("a"), Machine::new("b"));
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = a.apply(&plan);
    let start = Instant::now();
    while etcd
        .keys("/haproxy-rollout/plans/early-abort/lock")
        .is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "A took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let abort = b.run(&["--output", "json", "abort", path(&plan)]).run();
    let finished = running.finish();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(finished.code, 4, "{}", finished.stderr);
    let events = events(&finished.stdout);
    let stopping = events_of(&finished.stdout, "stopping");
    assert_eq!(stopping["cause"], "abort", "{stopping}");
    let summary = summary_in(&events);
    for server in ["app1", "app2", "app3"] {
        assert_eq!(
            server_in(summary, server)["state"],
            "untouched",
            "{summary}"
        );
    }
    no_failed_requests(traffic);
    assert_eq!(restarts(&lab), vec![0, 0, 0]);
    all_up(&lab);
}

/// See: #15, test 3: A is SIGKILLed during app1's restart, as a cancelled job ends. On B,
/// `status` shows the rollout; `resume` waits for A's lease to run out, takes the lock and
/// finishes the rollout from what the world shows: no request fails, every server is back.
#[test]
fn a_rollout_whose_runner_died_is_seen_and_resumed_from_another_machine() {
    let etcd = Etcd::start(1);
    let lab = RolloutLab::start(routed());
    let plan = shared_plan(&lab, &etcd, "killed.yaml", 2);
    let (a, b) = (Machine::new("a"), Machine::new("b"));
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let before = lab.pids();
    let running = a.apply(&plan);
    wait_restarting(&running);
    wait_for_restarts(&lab, 0, 1);
    running.signal("KILL");
    running.finish();

    let status = b
        .run(&["--output", "json", "status", path(&plan)])
        .run()
        .code(6);
    let rollout_event = events(&status.stdout)
        .into_iter()
        .find(|event| event["event"] == "rollout")
        .expect("status shows the rollout");
    assert!(
        ["running", "interrupted"].contains(&rollout_event["state"].as_str().unwrap()),
        "{rollout_event}"
    );

    let resumed = b.run(&["--output", "json", "resume", path(&plan)]).run();
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("waiting for its lease to run out")
            || rollout_event["state"] == "interrupted",
        "{}",
        resumed.stderr
    );
    no_failed_requests(traffic);
    let after = lab.pids();
    for (index, (old, new)) in before.iter().zip(&after).enumerate() {
        assert_ne!(old, new, "app{} was restarted", index + 1);
    }
    // app1's restart went on on its host after A died, and its outcome was never
    // recorded: resume kept app1 out of rotation until that command ended, then restarted
    // it again (a health answer cannot tell the old process from the new one). The others
    // were restarted once, by B.
    assert_eq!(restarts(&lab), vec![2, 1, 1]);
    all_up(&lab);
    let status = b.run(&["status", path(&plan)]).run().code(0);
    assert!(status.stderr.contains("success"), "{}", status.stderr);
}

/// See: #15, test 4: three etcd members. One killed during the rollout: it completes. Two
/// killed (no quorum): it stops at its next change, reported, and nothing changed without
/// its record.
#[test]
fn a_rollout_survives_one_lost_etcd_member_and_stops_safely_without_quorum() {
    let mut etcd = Etcd::start(3);
    let lab = RolloutLab::start(LabOptions::default());
    let plan = shared_plan(&lab, &etcd, "quorum.yaml", 1);
    let a = Machine::new("a");
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = a.apply(&plan);
    wait_restarting(&running);
    etcd.kill(0);
    running.finish().code(0);
    no_failed_requests(traffic);
    assert_eq!(restarts(&lab), vec![1, 1, 1]);
    all_up(&lab);

    // The second time, app1's restart runs when two members die: its next change (back
    // to ready) cannot be recorded, so it is not made.
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 1);
    let running = a.apply(&plan);
    wait_restarting(&running);
    wait_for_restarts(&lab, 0, 2);
    etcd.kill(1);
    let stopped = running.finish();
    assert_eq!(stopped.code, 1, "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("etcd did not confirm the journal write"),
        "{}",
        stopped.stderr
    );
    no_failed_requests(traffic);
    assert_eq!(
        restarts(&lab),
        vec![2, 1, 1],
        "nothing after the journal failed"
    );
    let events = events(&stopped.stdout);
    let summary = summary_in(&events);
    let app1 = server_in(summary, "app1");
    assert_eq!(app1["state"], "out_of_rotation", "{summary}");
    assert_eq!(
        server_in(summary, "app2")["state"],
        "untouched",
        "{summary}"
    );
    let view = lab.lab.view("app1");
    assert!(
        view.admin.in_maintenance(),
        "app1 stays as last recorded: {view:?}"
    );

    // With quorum back, the journal tells every change made: the last one recorded for
    // app1 is its restart, and nothing returned it to traffic; `status` says so.
    etcd.restart(0);
    // A's lease could not be revoked without quorum; the new leader gives it a full TTL.
    let start = Instant::now();
    while !etcd.keys("/haproxy-rollout/plans/quorum/lock").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "A's lease ran out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = a
        .run(&["--output", "json", "status", path(&plan)])
        .run()
        .code(6);
    // Its end could not be recorded either: the journal says interrupted, app1's restart
    // sent (its outcome unrecorded), nothing after it.
    let rollout_event = events_of(&status.stdout, "rollout");
    assert_eq!(rollout_event["state"], "interrupted", "{rollout_event}");
    assert_eq!(
        rollout_event["in_flight"],
        serde_json::json!([{"server": "app1", "changes": ["drain", "maint", "restart (not confirmed)"]}]),
        "{rollout_event}"
    );
}

fn events_of(stdout: &str, kind: &str) -> serde_json::Value {
    events(stdout)
        .into_iter()
        .find(|event| event["event"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {stdout}"))
}

/// See: #15, test 5: TLS with client certificates made by the test: the rollout runs; the
/// wrong CA is a pre-flight failure (exit 3) that says so, and touches nothing.
#[test]
fn tls_with_client_certificates_and_a_wrong_ca_fails_pre_flight() {
    let etcd = Etcd::start_tls();
    let lab = RolloutLab::start(LabOptions {
        servers: 2,
        ..LabOptions::default()
    });
    let plan = shared_plan(&lab, &etcd, "tls.yaml", 0);
    let a = Machine::new("a");
    a.run(&["apply", "--yes", path(&plan)]).run().code(0);
    assert_eq!(restarts(&lab), vec![1, 1]);
    assert!(
        etcd.keys("/haproxy-rollout/plans/tls/journals/").len() > 5,
        "the journal is in etcd"
    );

    let tls = etcd.tls.as_ref().unwrap();
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace(tls.ca.to_str().unwrap(), tls.wrong_ca.to_str().unwrap());
    let wrong = lab.lab.dir.path().join("tls-wrong-ca.yaml");
    std::fs::write(&wrong, text).unwrap();
    let refused = a.run(&["apply", "--yes", path(&wrong)]).run().code(3);
    assert!(
        refused.stderr.contains("pre-flight failed")
            && refused
                .stderr
                .contains(": invalid peer certificate: UnknownIssuer"),
        "{}",
        refused.stderr
    );
    assert_eq!(restarts(&lab), vec![1, 1], "nothing touched");
}

/// See: #15, test 6: etcd unreachable at the start: exit 3, nothing touched.
#[test]
fn an_unreachable_etcd_fails_pre_flight_and_touches_nothing() {
    let mut etcd = Etcd::start(1);
    let lab = RolloutLab::start(LabOptions {
        servers: 2,
        ..LabOptions::default()
    });
    let plan = shared_plan(&lab, &etcd, "unreachable.yaml", 0);
    etcd.kill(0);
    let started = Instant::now();
    let refused = Machine::new("a")
        .run(&["apply", "--yes", path(&plan)])
        .run()
        .code(3);
    eprintln!("refused after {:?}", started.elapsed());
    assert!(
        refused.stderr.contains("pre-flight failed")
            && refused
                .stderr
                .contains("cannot use etcd at http://127.0.0.1:"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was changed")
            && refused
                .stderr
                .contains("tcp connect error (Connection refused"),
        "{}",
        refused.stderr
    );
    let preview = Machine::new("b")
        .run(&["plan", "--no-ssh", path(&plan)])
        .run()
        .code(3);
    assert!(
        preview
            .stdout
            .contains("state: cannot use etcd at http://127.0.0.1:"),
        "{}",
        preview.stdout
    );
    assert_eq!(restarts(&lab), vec![0, 0]);
    all_up(&lab);
}
