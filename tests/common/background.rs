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

/// The events of a JSON output, one per line.
pub fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}
