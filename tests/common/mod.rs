//! A small builder that runs the real binary, in the spirit of just's `Test::new()`.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different part of the harness"
)]

mod background;
pub mod deploy;
pub mod etcd;
pub mod lab;
pub mod rollout_lab;
pub mod scenario;
pub mod sshd;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use background::{Background, event, events, schema_errors, server_in, summary_in};

/// The haproxy-rollout binary under test: cargo names it for integration tests; the lab
/// binary (examples/lab), built beside it, finds it in the folder above its own.
pub fn rollout_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_haproxy-rollout") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("haproxy-rollout")))
            .expect("the folder of the lab binary"),
    }
}

/// Where tests keep their state: cargo's temporary folder for integration tests, else the
/// system's.
pub fn scratch() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// The repository root, so tests can name files such as `plans/single.yaml`.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Run {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `rollout(["validate", "plans/single.yaml"])` runs the binary in the repository root.
pub fn rollout<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Run {
        args: args.into_iter().map(Into::into).collect(),
        env: Vec::new(),
    }
}

impl Run {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.into(), None));
        self
    }

    pub fn run(self) -> Outcome {
        let mut command = self.command();
        let output = command.output().expect("the haproxy-rollout binary runs");
        Outcome {
            code: output
                .status
                .code()
                .expect("exited, not killed by a signal"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Starts the binary in the background; its stdout lines are collected as they come.
    pub fn spawn(self) -> Background {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the haproxy-rollout binary starts");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let collected = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                collected.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text);
            text
        });
        Background {
            child,
            lines,
            reader: Some(reader),
            stderr_reader: Some(stderr_reader),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(rollout_binary());
        command
            .args(&self.args)
            .current_dir(root())
            .stdin(Stdio::null())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            // Journals and locks of tests stay inside the build directory.
            .env(
                "HAPROXY_ROLLOUT_STATE_DIR",
                scratch().join(format!("state-{}", std::process::id())),
            );
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }
}

impl Outcome {
    #[track_caller]
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Every `*.yaml` file directly in `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    files
}
