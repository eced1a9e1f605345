//! A picture of a rollout: from its JSON events (docs/events.md), a self-contained SVG with
//! one row per server, each stage a coloured bar on a time axis, failures, rollbacks, stops
//! and the canary analysis marked, and a legend. The same events whether they come from a
//! running `apply --timeline` or a saved stream (`timeline EVENTS.jsonl FILE.svg`).

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;

/// Each stage's colour and its name in the legend, in the order a server goes through them.
const STAGES: [(&str, &str, &str); 12] = [
    ("checking_capacity", "#cfd8dc", "capacity check"),
    ("hook_before_drain", "#bcaaa4", "before_drain hook"),
    ("draining", "#ffcc80", "draining"),
    ("waiting_sessions", "#ffa726", "waiting for 0 sessions"),
    ("restarting", "#ef5350", "restarting"),
    ("hook_after_restart", "#a1887f", "after_restart hook"),
    ("health", "#42a5f5", "health endpoint"),
    ("verifying", "#26a69a", "verifying"),
    ("haproxy_checks", "#7e57c2", "HAProxy's checks"),
    ("returning", "#66bb6a", "returning to traffic"),
    ("hook_after_ready", "#8d6e63", "after_ready hook"),
    ("hook_on_failure", "#6d4c41", "on_failure hook"),
];

const CHART_WIDTH: f64 = 900.0;
const TOP: f64 = 64.0;

/// One stretch of one server in one stage.
struct Bar {
    row: usize,
    stage: String,
    start: f64,
    end: f64,
}

/// Something that happened at a moment: on a server's row, or across the whole chart.
struct Mark {
    row: Option<usize>,
    at: f64,
    kind: &'static str,
    text: String,
}

/// The picture of the events of one rollout. Errors when they hold no rollout (no stage,
/// no summary) or a time that is not RFC 3339.
pub fn svg(events: &[Value]) -> Result<String, String> {
    let times: Vec<SystemTime> = events
        .iter()
        .map(|event| {
            let text = event["time"].as_str().ok_or("an event without its time")?;
            humantime::parse_rfc3339(text).map_err(|error| format!("time {text:?}: {error}"))
        })
        .collect::<Result<_, String>>()?;
    let Some(&first) = times.iter().min() else {
        return Err("no events".to_owned());
    };
    let seconds = |time: SystemTime| {
        time.duration_since(first)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64())
    };
    let mut rows: Vec<String> = events
        .iter()
        .rev()
        .find(|event| event["event"] == "summary")
        .and_then(|summary| summary["servers"].as_array())
        .map(|servers| {
            servers
                .iter()
                .filter_map(|server| Some(server["server"].as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut open: Vec<Option<(String, f64)>> = vec![None; rows.len()];
    let (mut bars, mut marks) = (Vec::new(), Vec::new());
    let mut analysis: Option<(f64, Option<(f64, String)>)> = None;
    let mut end = 0.0_f64;
    for (event, time) in events.iter().zip(&times) {
        let at = seconds(*time);
        end = end.max(at);
        let kind = event["event"].as_str().unwrap_or_default();
        let row = event["server"].as_str().map(|server| {
            rows.iter()
                .position(|name| name == server)
                .unwrap_or_else(|| {
                    rows.push(server.to_owned());
                    open.push(None);
                    rows.len() - 1
                })
        });
        let mut close = |row: usize, bars: &mut Vec<Bar>| {
            if let Some((stage, start)) = open[row].take() {
                bars.push(Bar {
                    row,
                    stage,
                    start,
                    end: at,
                });
            }
        };
        match (kind, row) {
            ("stage", Some(row)) => {
                close(row, &mut bars);
                open[row] = Some((event["stage"].as_str().unwrap_or("").to_owned(), at));
            }
            ("server_done", Some(row)) => close(row, &mut bars),
            ("server_failed", Some(row)) => {
                close(row, &mut bars);
                marks.push(Mark {
                    row: Some(row),
                    at,
                    kind: "failed",
                    text: format!("failed: {}", event["reason"].as_str().unwrap_or("")),
                });
            }
            ("already_current", Some(row)) => marks.push(Mark {
                row: Some(row),
                at,
                kind: "current",
                text: "already current: not touched".to_owned(),
            }),
            ("rollback", _) => marks.push(Mark {
                row: None,
                at,
                kind: "rollback",
                text: "rollback".to_owned(),
            }),
            ("stopping", _) => marks.push(Mark {
                row: None,
                at,
                kind: "stop",
                text: format!("stop: {}", event["from"].as_str().unwrap_or("")),
            }),
            ("analysis", _) => {
                analysis.get_or_insert((at, None));
            }
            ("analysis_verdict", _) => {
                let start = analysis.map_or(at, |(start, _)| start);
                let verdict = event["verdict"].as_str().unwrap_or("").to_owned();
                analysis = Some((start, Some((at, verdict))));
            }
            _ => {}
        }
    }
    for (row, open) in open.iter_mut().enumerate() {
        if let Some((stage, start)) = open.take() {
            bars.push(Bar {
                row,
                stage,
                start,
                end,
            });
        }
    }
    if rows.is_empty() {
        return Err("no server in these events: not a rollout's".to_owned());
    }
    let outcome = events
        .iter()
        .rev()
        .find(|event| event["event"] == "summary")
        .and_then(|summary| summary["outcome"].as_str())
        .unwrap_or("unfinished");
    let title = format!(
        "{} server(s), {outcome} after {end:.1} s, from {}",
        rows.len(),
        humantime::format_rfc3339_seconds(first)
    );
    Ok(draw(&title, &rows, &bars, &marks, analysis, end))
}

fn colour(stage: &str) -> &'static str {
    STAGES
        .iter()
        .find(|(key, ..)| *key == stage)
        .map_or("#9e9e9e", |(_, colour, _)| colour)
}

/// A tick step that gives at most ten ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 15] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    STEPS
        .into_iter()
        .find(|step| span / step <= 10.0)
        .unwrap_or(7200.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn draw(
    title: &str,
    rows: &[String],
    bars: &[Bar],
    marks: &[Mark],
    analysis: Option<(f64, Option<(f64, String)>)>,
    end: f64,
) -> String {
    let row_height = if rows.len() > 60 { 10.0 } else { 18.0 };
    let font = if rows.len() > 60 { 9.0 } else { 12.0 };
    let label_width = rows
        .iter()
        .map(|name| name.len())
        .max()
        .map_or(60.0, |longest| {
            (longest as f64 * font * 0.62 + 16.0).clamp(60.0, 240.0)
        });
    let span = end.max(0.001);
    let x = |at: f64| label_width + at / span * CHART_WIDTH;
    let y = |row: usize| TOP + row as f64 * row_height;
    let chart_bottom = y(rows.len());
    let used: Vec<&(&str, &str, &str)> = STAGES
        .iter()
        .filter(|(key, ..)| bars.iter().any(|bar| bar.stage == *key))
        .collect();
    let legend_top = chart_bottom + 34.0;
    let width = label_width + CHART_WIDTH + 24.0;
    let height = legend_top + 22.0 * (used.len().div_ceil(4) as f64 + 1.0) + 8.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="{font}">"#
    );
    let _ = writeln!(
        out,
        r#"<title>haproxy-rollout: {0}</title><rect width="100%" height="100%" fill="white"/><text x="8" y="20" font-size="14" font-weight="bold">{0}</text>"#,
        escape(title)
    );
    // The time axis: a tick and a grid line every step.
    let step = tick_step(span);
    let _ = writeln!(out, r##"<g class="axis" stroke="#e0e0e0">"##);
    let mut tick = 0.0;
    while tick <= span + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{chart_bottom:.1}"/><text x="{0:.1}" y="{2:.1}" fill="#424242" stroke="none" text-anchor="middle">{tick}s</text>"##,
            x(tick),
            TOP - 6.0,
            TOP - 10.0,
        );
        tick = ((tick + step) * 1000.0).round() / 1000.0;
    }
    let _ = writeln!(out, "</g>");
    if let Some((start, verdict)) = &analysis {
        let (stop, text) = verdict
            .as_ref()
            .map_or((end, "canary analysis".to_owned()), |(at, verdict)| {
                (*at, format!("canary analysis: {verdict}"))
            });
        let _ = writeln!(
            out,
            r##"<g class="analysis"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fff59d" fill-opacity="0.5"/><text x="{:.1}" y="{:.1}" fill="#827717">{}</text></g>"##,
            x(*start),
            TOP - 4.0,
            (x(stop) - x(*start)).max(1.0),
            chart_bottom - TOP + 4.0,
            x(*start) + 2.0,
            TOP - 24.0,
            escape(&text)
        );
    }
    for (row, name) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<g class="row" data-server="{name}"><text x="{:.1}" y="{:.1}" text-anchor="end">{name}</text>"#,
            label_width - 8.0,
            y(row) + row_height * 0.72,
            name = escape(name)
        );
        for bar in bars.iter().filter(|bar| bar.row == row) {
            let _ = writeln!(
                out,
                r#"<rect class="stage" data-stage="{stage}" x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"><title>{name}: {stage} {:.2}s to {:.2}s ({:.2}s)</title></rect>"#,
                x(bar.start),
                y(row) + 2.0,
                (x(bar.end) - x(bar.start)).max(0.5),
                row_height - 4.0,
                colour(&bar.stage),
                bar.start,
                bar.end,
                bar.end - bar.start,
                stage = escape(&bar.stage),
                name = escape(name)
            );
        }
        for mark in marks.iter().filter(|mark| mark.row == Some(row)) {
            let (cx, cy) = (x(mark.at), y(row) + row_height / 2.0);
            let shape = match mark.kind {
                "failed" => format!(
                    r##"<path d="M{0:.1} {1:.1} l8 8 m0 -8 l-8 8" stroke="#b71c1c" stroke-width="2.5"/>"##,
                    cx - 4.0,
                    cy - 4.0
                ),
                _ => format!(r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="#90a4ae"/>"##),
            };
            let _ = writeln!(
                out,
                r#"<g class="mark" data-mark="{}">{shape}<title>{}</title></g>"#,
                mark.kind,
                escape(&mark.text)
            );
        }
        let _ = writeln!(out, "</g>");
    }
    for mark in marks.iter().filter(|mark| mark.row.is_none()) {
        let colour = if mark.kind == "rollback" {
            "#6a1b9a"
        } else {
            "#b71c1c"
        };
        let _ = writeln!(
            out,
            r#"<g class="mark" data-mark="{}"><line x1="{2:.1}" y1="{3:.1}" x2="{2:.1}" y2="{4:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{5:.1}" y="{6:.1}" fill="{colour}">{1}</text></g>"#,
            mark.kind,
            escape(&mark.text),
            x(mark.at),
            TOP - 4.0,
            chart_bottom,
            x(mark.at) + 3.0,
            chart_bottom + 14.0,
        );
    }
    // The legend: the stages drawn, then the marks.
    let _ = writeln!(out, r#"<g class="legend">"#);
    let mut entries: Vec<(String, String)> = used
        .iter()
        .map(|(_, colour, name)| ((*colour).to_owned(), (*name).to_owned()))
        .collect();
    let marked = |kind: &str| marks.iter().any(|mark| mark.kind == kind);
    if marked("failed") {
        entries.push(("#b71c1c".to_owned(), "✕ failed".to_owned()));
    }
    if marked("stop") {
        entries.push(("#b71c1c".to_owned(), "┆ asked to stop".to_owned()));
    }
    if marked("rollback") {
        entries.push(("#6a1b9a".to_owned(), "┆ rollback starts".to_owned()));
    }
    if marked("current") {
        entries.push(("#90a4ae".to_owned(), "● already current".to_owned()));
    }
    if analysis.is_some() {
        entries.push(("#fff59d".to_owned(), "canary analysis".to_owned()));
    }
    for (index, (colour, name)) in entries.iter().enumerate() {
        let (left, top) = (
            label_width + (index % 4) as f64 * 220.0,
            legend_top + (index / 4) as f64 * 22.0,
        );
        let _ = writeln!(
            out,
            r#"<rect x="{left:.1}" y="{top:.1}" width="14" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + 20.0,
            top + 10.0,
            escape(name)
        );
    }
    let _ = writeln!(out, "</g>\n</svg>");
    out
}

#[cfg(test)]
mod tests;
