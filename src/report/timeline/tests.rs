//! The picture of a rollout, read back as XML: rows, stages in order, marks.

use serde_json::{Value, json};

use super::svg;

/// `at` seconds after 12:00:00.
fn event(at: f64, name: &str, mut fields: Value) -> Value {
    let millis = (at * 1000.0).round() as u64;
    fields["v"] = 1.into();
    fields["event"] = name.into();
    fields["time"] = format!(
        "2026-11-30T12:{:02}:{:02}.{:03}Z",
        millis / 60_000,
        millis / 1000 % 60,
        millis % 1000
    )
    .into();
    fields
}

fn stage(at: f64, server: &str, stage: &str) -> Value {
    event(at, "stage", json!({"server": server, "stage": stage}))
}

/// A server's whole sequence from `at`, one second per stage.
fn sequence(at: f64, server: &str) -> Vec<Value> {
    let mut events: Vec<Value> = [
        "checking_capacity",
        "draining",
        "waiting_sessions",
        "restarting",
        "health",
        "haproxy_checks",
        "returning",
    ]
    .iter()
    .enumerate()
    .map(|(index, name)| stage(at + index as f64, server, name))
    .collect();
    events.push(event(at + 7.0, "server_done", json!({"server": server})));
    events
}

fn summary(at: f64, outcome: &str, servers: &[&str]) -> Value {
    let servers: Vec<Value> = servers.iter().map(|name| json!({"server": name})).collect();
    event(
        at,
        "summary",
        json!({"outcome": outcome, "servers": servers}),
    )
}

/// Each row's server and its stages, in drawing order.
fn rows(svg: &str) -> Vec<(String, Vec<String>)> {
    let document = roxmltree::Document::parse(svg).expect("well-formed SVG");
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

fn marks(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap();
    document
        .descendants()
        .filter_map(|node| node.attribute("data-mark"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_row_per_server_in_plan_order_with_its_stages_in_order() {
    let mut events = sequence(0.0, "app1");
    events.extend(sequence(7.0, "app2"));
    events.push(summary(14.0, "success", &["app1", "app2", "app3"]));
    let svg = svg(&events).unwrap();
    let rows = rows(&svg);
    let names: Vec<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["app1", "app2", "app3"]);
    assert_eq!(
        rows[0].1,
        [
            "checking_capacity",
            "draining",
            "waiting_sessions",
            "restarting",
            "health",
            "haproxy_checks",
            "returning"
        ]
    );
    assert_eq!(rows[1].1, rows[0].1);
    assert!(rows[2].1.is_empty(), "app3 was not reached");
    assert!(svg.contains("3 server(s), success after 14.0 s"));
}

#[test]
fn failures_rollbacks_stops_and_the_canary_analysis_are_marked() {
    let mut events = sequence(0.0, "app1");
    events.push(event(7.5, "analysis", json!({})));
    events.push(event(9.0, "analysis_verdict", json!({"verdict": "failed"})));
    events.push(event(9.1, "rollback", json!({"servers": ["app1"]})));
    events.extend(sequence(9.2, "app1"));
    events.push(stage(17.0, "app2", "restarting"));
    events.push(event(
        18.0,
        "server_failed",
        json!({"server": "app2", "stage": "restarting", "reason": "exit 1"}),
    ));
    events.push(event(
        18.5,
        "stopping",
        json!({"cause": "signal", "from": "SIGTERM"}),
    ));
    events.push(summary(19.0, "failed", &["app1", "app2"]));
    let svg = svg(&events).unwrap();
    assert_eq!(marks(&svg), ["failed", "rollback", "stop"]);
    assert!(svg.contains("canary analysis: failed"), "{svg}");
    let rows = rows(&svg);
    assert_eq!(
        rows[0].1.len(),
        14,
        "app1 twice: its rollout and its rollback"
    );
    assert_eq!(rows[1].1, ["restarting"]);
}

#[test]
fn two_hundred_servers_stay_readable() {
    let names: Vec<String> = (1..=200).map(|index| format!("app{index}")).collect();
    let mut events = Vec::new();
    for (index, name) in names.iter().enumerate() {
        events.extend(sequence(index as f64 * 0.5, name));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    events.push(summary(110.0, "success", &refs));
    let svg = svg(&events).unwrap();
    assert_eq!(rows(&svg).len(), 200);
    let document = roxmltree::Document::parse(&svg).unwrap();
    let height: f64 = document
        .root_element()
        .attribute("height")
        .unwrap()
        .parse()
        .unwrap();
    assert!(height < 2400.0, "{height}");
}

#[test]
fn events_without_a_rollout_or_with_a_bad_time_are_refused() {
    assert!(svg(&[]).is_err());
    assert!(svg(&[event(0.0, "plan_valid", json!({}))]).is_err());
    let mut bad = stage(0.0, "app1", "draining");
    bad["time"] = "yesterday".into();
    assert!(svg(&[bad]).unwrap_err().contains("yesterday"));
}
