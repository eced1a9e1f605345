//! The binary running in the background, for tests that act while it runs (abort it, kill
//! it, reload HAProxy under it).

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Outcome;

/// Killed if still running when dropped.
pub struct Background {
    pub(super) child: Child,
    pub(super) lines: Arc<Mutex<Vec<String>>>,
    pub(super) reader: Option<std::thread::JoinHandle<()>>,
    pub(super) stderr_reader: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stdout line (a JSON event) satisfies `condition`; panics after 30 s.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&serde_json::Value) -> bool) {
        let start = Instant::now();
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if lines
                    .iter()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .any(|event| condition(&event))
                {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; output so far: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; `code` is the negative signal number when killed by one.
    pub fn finish(mut self) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let stderr = self.stderr_reader.take().unwrap().join().unwrap();
        let stdout = self.lines.lock().unwrap().join("\n");
        Outcome {
            code: status
                .code()
                .unwrap_or_else(|| -status.signal().unwrap_or(0)),
            stdout,
            stderr,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of a JSON output, one per line, each checked against the documented schema
/// (docs/events.schema.json): a test that reads events fails on one that breaks it.
pub fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(event)
        .collect()
}

/// One line of JSON output, checked against docs/events.schema.json.
pub fn event(line: &str) -> serde_json::Value {
    let event: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
    let errors = schema_errors(&event);
    assert!(
        errors.is_empty(),
        "this event breaks docs/events.schema.json: {line}\n{}",
        errors.join("\n")
    );
    event
}

/// What in `event` breaks docs/events.schema.json (nothing: it conforms).
pub fn schema_errors(event: &serde_json::Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(super::root().join("docs/events.schema.json"))
            .expect("docs/events.schema.json");
        let schema = serde_json::from_str(&text).expect("the events schema is JSON");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("a valid JSON Schema")
    });
    schema
        .iter_errors(event)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

/// The summary, which a run's events end with.
pub fn summary_in(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .last()
        .filter(|event| event["event"] == "summary")
        .expect("a summary last")
}

/// One server's entry in a summary.
pub fn server_in<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|server| server["server"] == name)
        .unwrap_or_else(|| panic!("{name} in {summary}"))
}
