//! The JSON event stream pipelines read (#13): every line of a successful, a failed and an
//! aborted rollout conforms to docs/events.schema.json, with the stable stage and state
//! names it documents. Real haproxy, a real sshd on 127.0.0.1, real application processes,
//! live traffic.

mod common;

use common::deploy::{UnderTraffic, path, states, under_traffic};
use common::lab::LabOptions;
use common::rollout_lab::{RolloutLab, Traffic};
use common::{events, rollout, schema_errors};
use serde_json::{Value, json};

/// The stages of a server of a plain plan, in order, as the stream and the picture name them.
const SEQUENCE: [&str; 7] = [
    "checking_capacity",
    "draining",
    "waiting_sessions",
    "restarting",
    "health",
    "haproxy_checks",
    "returning",
];

fn stages_of<'a>(events: &'a [Value], server: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|event| event["event"] == "stage" && event["server"] == server)
        .map(|event| event["stage"].as_str().unwrap())
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect()
}

/// See: #13, JSON events.
#[test]
fn a_successful_rollout_streams_versioned_events_with_stable_names() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("events.yaml", None, "");
    let run: UnderTraffic = under_traffic(&lab, 0, &["apply", "--yes", path(&plan)]);
    run.expect(0);
    // `events` checked each line against the schema; these are what pipelines key on.
    assert!(run.events.iter().all(|event| event["v"] == 1));
    let names = names(&run.events);
    assert_eq!(names.first(), Some(&"preflight"), "{names:?}");
    assert_eq!(run.events[0]["outcome"], "passed");
    assert_eq!(names.last(), Some(&"summary"), "{names:?}");
    for server in ["app1", "app2", "app3"] {
        assert_eq!(stages_of(&run.events, server), SEQUENCE, "{server}");
    }
    let summary = run.summary();
    assert_eq!(summary["outcome"], "success");
    for server in summary["servers"].as_array().unwrap() {
        assert_eq!(server["state"], "done", "{server}");
        assert_eq!(server["message"], "restarted, back in traffic (UP)");
    }
}

/// See: #13, JSON events: a failure is an event of its own, with its stage.
#[test]
fn a_failed_rollout_streams_a_server_failed_event_with_its_stage() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("events-failed.yaml", None, "");
    common::deploy::impatient(&plan);
    std::fs::write(lab.lab.dir.path().join("break-health"), "").unwrap();
    let run = under_traffic(&lab, 0, &["apply", "--yes", path(&plan)]);
    run.expect(1);
    let failed = run.event("server_failed");
    assert_eq!(failed["server"], "app1");
    assert_eq!(failed["stage"], "health");
    let port = lab.ports[0];
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("GET http://127.0.0.1:{port}/health answered 503")),
        "{failed}"
    );
    let summary = run.summary();
    assert_eq!(summary["outcome"], "failed");
    let states = states(summary);
    assert_eq!(states, ["out_of_rotation", "untouched", "untouched"]);
    assert!(lab.lab.view("app1").admin.in_maintenance());
}

/// See: #13, JSON events: an aborted rollout ends with its summary too.
#[test]
fn an_aborted_rollout_streams_a_summary_of_where_each_server_stands() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("events-aborted.yaml", None, "");
    let traffic = Traffic::start(lab.lab.frontend_port, 4, 0);
    let running = rollout(["--output", "json", "apply", "--yes", path(&plan)]).spawn();
    running.wait_for("app2 restarting", |event| {
        event["event"] == "stage" && event["server"] == "app2" && event["stage"] == "restarting"
    });
    let abort = rollout(["abort", path(&plan)]).run();
    let applied = running.finish();
    let (ok, failed, failures) = traffic.stop();
    assert_eq!(abort.code, 4, "{}", abort.stderr);
    assert_eq!(applied.code, 4, "{}", applied.stderr);
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 10);
    let events = events(&applied.stdout);
    // Logged as the abort it was, with where it came from, not as a bare signal.
    let stopping = events
        .iter()
        .find(|event| event["event"] == "stopping")
        .unwrap_or_else(|| panic!("{}", applied.stdout));
    assert_eq!(stopping["cause"], "abort");
    assert_eq!(stopping["now"], false);
    let from = stopping["from"].as_str().unwrap();
    assert!(from.starts_with("`haproxy-rollout abort` (pid "), "{from}");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["outcome"], "interrupted");
    let states = states(summary);
    assert_eq!(states, ["done", "done", "untouched"]);
}

/// The schema is a contract that can refuse: the prose forms of version 0, an unknown
/// event and a line without its version all break it.
#[test]
fn the_schema_refuses_prose_stages_unknown_events_and_missing_versions() {
    let time = "2026-11-30T12:00:00.000Z";
    let good = json!({"v": 1, "event": "stage", "time": time, "server": "app1",
        "stage": "haproxy_checks", "within_ms": 10000, "message": "waiting for HAProxy's checks"});
    assert_eq!(schema_errors(&good), Vec::<String>::new());
    let prose = json!({"v": 1, "event": "stage", "time": time, "server": "app1",
        "stage": "waiting for HAProxy's checks", "within_ms": 10000,
        "message": "waiting for HAProxy's checks"});
    assert!(!schema_errors(&prose).is_empty());
    let unknown = json!({"v": 1, "event": "stagee", "time": time});
    assert!(!schema_errors(&unknown).is_empty());
    let unversioned = json!({"event": "warning", "time": time, "text": "x"});
    assert!(!schema_errors(&unversioned).is_empty());
    let extra = json!({"v": 1, "event": "warning", "time": time, "text": "x", "other": 1});
    assert!(!schema_errors(&extra).is_empty());
}

/// The stream docs/events.md shows is one the schema accepts.
#[test]
fn the_documented_stream_conforms_to_the_schema() {
    let text = std::fs::read_to_string(common::root().join("docs/events.md")).unwrap();
    let block = text
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a json block in docs/events.md");
    let shown = events(block);
    assert!(shown.len() >= 5);
}

/// Each row of a timeline SVG: its server and its stages, in drawing order.
fn timeline_rows(file: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(file).unwrap();
    let document = roxmltree::Document::parse(&text).expect("well-formed SVG");
    document
        .descendants()
        .filter(|node| node.attribute("class") == Some("row"))
        .map(|row| {
            let stages = row
                .children()
                .filter_map(|child| child.attribute("data-stage"))
                .map(str::to_owned)
                .collect();
            (row.attribute("data-server").unwrap().to_owned(), stages)
        })
        .collect()
}

/// See: #13, a picture of the rollout.
#[test]
fn apply_draws_its_timeline_and_saved_events_draw_the_same_rows() {
    let lab = RolloutLab::start(LabOptions::default());
    let plan = lab.plan("timeline.yaml", None, "");
    let svg = lab.lab.dir.path().join("rollout.svg");
    let run = under_traffic(
        &lab,
        0,
        &[
            "apply",
            "--yes",
            path(&plan),
            "--timeline",
            svg.to_str().unwrap(),
        ],
    );
    run.expect(0);
    let drawn = timeline_rows(&svg);
    let servers: Vec<&str> = drawn.iter().map(|(server, _)| server.as_str()).collect();
    assert_eq!(servers, ["app1", "app2", "app3"]);
    for (server, stages) in &drawn {
        assert_eq!(stages, &SEQUENCE, "{server}");
    }
    let saved = lab.lab.dir.path().join("events.jsonl");
    std::fs::write(&saved, &run.outcome.stdout).unwrap();
    let redrawn = lab.lab.dir.path().join("redrawn.svg");
    rollout(["timeline", path(&saved), path(&redrawn)])
        .run()
        .code(0);
    assert_eq!(timeline_rows(&redrawn), drawn);
    // Not events: said where, nothing written.
    let refused = rollout([
        "timeline",
        path(&plan),
        lab.lab.dir.path().join("no.svg").to_str().unwrap(),
    ])
    .run()
    .code(2);
    assert!(
        refused.stderr.contains("timeline.yaml:1: not a JSON event"),
        "{}",
        refused.stderr
    );
    assert!(!lab.lab.dir.path().join("no.svg").exists());
}
