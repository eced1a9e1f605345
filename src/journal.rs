//! The journal: every state change a rollout makes is written (and fsynced) before it is
//! made, and its result after, so an interrupted rollout can be resumed or cleaned up.
//!
//! One JSON object per line in `journal.jsonl`, in the rollout's state directory
//! (`$XDG_STATE_HOME/haproxy-rollout/rollouts/<id>/`, files mode 0600).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The state directory: `--state-dir`, else `$XDG_STATE_HOME/haproxy-rollout`, else
/// `~/.local/state/haproxy-rollout`.
pub fn state_root(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_owned();
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir).join("haproxy-rollout");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/state/haproxy-rollout")
}

/// Creates a directory (and its parents) readable by its owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Where one plan's rollout keeps its journal and lock: named after the plan file's
/// absolute path, so the same plan always finds its own.
pub fn rollout_dir(root: &Path, plan_file: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::fs::canonicalize(plan_file)?;
    let id = &sha256_hex(absolute.as_os_str().as_encoded_bytes())[..16];
    Ok(root.join("rollouts").join(id))
}

/// One HAProxy process as the rollout first saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub haproxy: String,
    pub pid: u32,
    pub start_time_sec: Option<u64>,
}

/// A state change the rollout makes, or the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Drain,
    Maint,
    Ready,
    ShutdownSessions,
    Restart,
    BeforeDrainHook,
    AfterRestartHook,
    AfterReadyHook,
    /// `verify` read what the server runs after its restart (an outcome only: reading
    /// changes nothing). Failed, the restart did not deploy what it should have.
    Verify,
}

impl Change {
    /// A command run on the server's host (or here, for a local hook), not a state change.
    pub fn is_command(self) -> bool {
        matches!(
            self,
            Change::Restart
                | Change::BeforeDrainHook
                | Change::AfterRestartHook
                | Change::AfterReadyHook
        )
    }
}

/// A command sent to a host: where, the marker that proves whether it still runs, and the
/// time until which it may run whatever happens to the connection (its remote bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCommand {
    /// `None`: this machine (a local hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub marker: String,
    pub until: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Begin {
        time: String,
        plan: PathBuf,
        plan_hash: String,
        pid: u32,
        host: String,
        haproxy: Vec<ProcessIdentity>,
        servers: Vec<String>,
        /// The servers an earlier, interrupted run finished (on `resume`).
        #[serde(default)]
        done_before: Vec<String>,
        /// The values of the plan's vars this run started with.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        vars: std::collections::BTreeMap<String, String>,
    },
    /// About to make `change` on `server` (written before it is made).
    Intent {
        time: String,
        server: String,
        change: Change,
        /// For a command: where it runs and until when it may.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<SentCommand>,
    },
    /// The change was made (or failed).
    Outcome {
        time: String,
        server: String,
        change: Change,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// A command whose outcome is unknown (the connection was lost): it may still run
        /// until the `until` of its intent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        may_still_run: bool,
    },
    /// A command whose outcome was unknown can no longer run: its host showed it ended
    /// (`proven`), or its remote bound passed.
    CommandEnded {
        time: String,
        server: String,
        proven: bool,
    },
    ServerDone {
        time: String,
        server: String,
    },
    /// The canaries are back and the rollout waits for `resume`.
    Paused {
        time: String,
    },
    /// What `verify` read on a server before this rollout touched it: what a rollback puts
    /// back (`{previous}`).
    Read {
        time: String,
        server: String,
        answer: String,
    },
    /// From here on, the restarts of this journal roll the rollout's servers back (in this
    /// order) to what they ran before it.
    Rollback {
        time: String,
        servers: Vec<String>,
    },
    /// The canaries' analysis ended: `passed`, `failed` or `inconclusive`.
    Analysis {
        time: String,
        verdict: String,
        requests: u64,
        errors: u64,
    },
    /// HAProxy reloaded; `reapplied` is the state put back on the server in flight.
    Reload {
        time: String,
        haproxy: String,
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reapplied: Option<String>,
    },
    End {
        time: String,
        outcome: String,
        summary: serde_json::Value,
    },
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The journal file could not be written (a full disk): the rollout stops, and still
    /// puts the server in flight in a safe state.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Shared state: the write was not made while this process provably held its lock (it
    /// lost its lease, or etcd did not answer). Another command may be in charge now:
    /// nothing at all is changed without its record.
    #[error("{0}")]
    Fenced(String),
}

impl WriteError {
    /// A change in the safe direction (maintenance, back to ready) may still be made.
    pub fn allows_safe_changes(&self) -> bool {
        matches!(self, WriteError::Io(_))
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// An open journal; every append is fsynced before it returns.
pub struct Journal {
    file: File,
    pub path: PathBuf,
}

impl Journal {
    /// Starts a new journal in `dir`; the previous one (a finished rollout) joins the
    /// plan's history, which keeps the newest `history::KEEP`.
    pub fn create(dir: &Path) -> std::io::Result<Journal> {
        private_dir(dir)?;
        history::archive(dir)?;
        Self::open(&dir.join("journal.jsonl"))
    }

    /// Appends to an existing journal (resume, abort of an interrupted rollout).
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // The directory entry must be durable too.
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Journal {
            file,
            path: path.to_owned(),
        })
    }

    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let length = self.file.metadata()?.len();
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if written.is_err() {
            // A part of a record (a full disk) must not glue itself to the next one.
            let _ = self.file.set_len(length);
        }
        written
    }

    /// Every complete record; a torn line (a crash mid-write) is skipped.
    pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
        Ok(Self::read_all(path)?.records)
    }

    /// Every complete record, and the last torn line, if any.
    pub fn read_all(path: &Path) -> std::io::Result<Story> {
        let reader = BufReader::new(File::open(path)?);
        let mut story = Story::default();
        for line in reader.lines() {
            let line = line?;
            match serde_json::from_str(&line) {
                Ok(record) => story.records.push(record),
                Err(_) if line.trim().is_empty() => {}
                Err(_) => story.torn = Some(Torn { text: line }),
            }
        }
        Ok(story)
    }
}

/// What a journal holds.
#[derive(Debug, Default)]
pub struct Story {
    pub records: Vec<Record>,
    /// A record that was not written whole (a crash or a full disk while writing).
    pub torn: Option<Torn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub text: String,
}

impl Torn {
    /// The server the torn record names, when that much of it was written.
    pub fn server(&self) -> Option<&str> {
        let rest = self.text.split_once("\"server\":\"")?.1;
        let name = rest.split_once('"')?.0;
        crate::plan::ServerName::new(name).ok().map(|_| name)
    }
}

/// What a journal says about a rollout that did not reach its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub plan: PathBuf,
    pub plan_hash: String,
    pub started: String,
    pub pid: u32,
    pub host: String,
    /// Servers restarted and back, in order.
    pub done: Vec<String>,
    /// The servers it was working on (several when it ran in batches), in the order they
    /// started.
    pub in_flight: Vec<InFlight>,
    /// Paused on purpose after its canaries, rather than interrupted.
    pub paused: bool,
    /// It ended, but not with success (it failed, or was aborted): `resume` continues it.
    pub stopped: Option<String>,
    /// A rollback of it began: it is not to be resumed, only rolled back (again).
    pub rolled_back: bool,
    /// The canaries' analysis passed: a resumed rollout does not judge them again.
    pub analysis_passed: bool,
}

impl Interrupted {
    /// How it stands, in words: `stopped (failed)`, `paused after its canaries`,
    /// `interrupted`.
    pub fn standing(&self) -> String {
        match (&self.stopped, self.paused) {
            (Some(outcome), _) => format!("stopped ({outcome})"),
            (None, true) => "paused after its canaries".to_owned(),
            (None, false) => "interrupted".to_owned(),
        }
    }

    /// Besides `resume PLAN`, what may follow it: `apply --fresh` after a stop (its
    /// servers were left in a reported state), `abort` otherwise.
    pub fn other_way(&self, plan: &Path) -> String {
        if self.rolled_back {
            return format!(
                "it was rolled back: `haproxy-rollout rollback {plan}` finishes the rollback, `haproxy-rollout apply --fresh {plan}` deploys again",
                plan = plan.display()
            );
        }
        match self.stopped {
            Some(_) => format!(
                "or start over (restarting the servers it finished) with `haproxy-rollout apply --fresh {}`",
                plan.display()
            ),
            None => format!(
                "or clean up with `haproxy-rollout abort {}`",
                plan.display()
            ),
        }
    }
}

/// A server the rollout was working on when it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub server: String,
    /// Changes made (their outcome was recorded as ok), in order.
    pub applied: Vec<Change>,
    /// A change that was about to be made, or being made, when the rollout stopped: it may
    /// or may not have happened.
    pub pending: Option<Change>,
    /// A command sent to its host that nothing proved ended: it may still run until its
    /// recorded bound.
    pub unfinished: Option<(Change, SentCommand)>,
    /// Its last restart exited 0.
    pub restart_succeeded: bool,
}

impl InFlight {
    /// The restart was asked for: it may have run, fully or in part.
    pub fn restart_attempted(&self) -> bool {
        self.applied.contains(&Change::Restart) || self.pending == Some(Change::Restart)
    }

    /// The last admin state this rollout set on the server.
    pub fn last_state(&self) -> Option<Change> {
        self.applied
            .iter()
            .rev()
            .find(|change| matches!(change, Change::Drain | Change::Maint | Change::Ready))
            .copied()
    }
}

/// Reads the story of the last rollout: `None` when it ended with success (or never began).
/// A rollout that stopped (failed, aborted) is returned with `stopped` set: what it finished
/// and what it left in flight stay facts for `resume`, across every run that continued it.
/// The values of the plan's vars the last run in the journal started with; `None` when no
/// run began.
pub fn started_with(records: &[Record]) -> Option<std::collections::BTreeMap<String, String>> {
    records.iter().rev().find_map(|record| match record {
        Record::Begin { vars, .. } => Some(vars.clone()),
        _ => None,
    })
}

/// The servers the rollout of this journal changed (its restart was sent), newest first,
/// each with what `verify` read on it before the rollout touched it (`None`: never read).
/// Only the rollout counts: what a rollback of it did comes after its first `Rollback`.
pub fn changed_servers(records: &[Record]) -> Vec<(String, Option<String>)> {
    let mut changed: Vec<String> = Vec::new();
    let mut read: Vec<(&str, &str)> = Vec::new();
    for record in records {
        match record {
            Record::Rollback { .. } => break,
            Record::Read { server, answer, .. } if !read.iter().any(|(of, _)| of == server) => {
                read.push((server, answer));
            }
            Record::Intent {
                server,
                change: Change::Restart,
                ..
            } if !changed.contains(server) => changed.push(server.clone()),
            _ => {}
        }
    }
    changed
        .into_iter()
        .rev()
        .map(|server| {
            let previous = read
                .iter()
                .find(|(of, _)| *of == server)
                .map(|(_, answer)| (*answer).to_owned());
            (server, previous)
        })
        .collect()
}

pub fn interrupted(records: &[Record]) -> Option<Interrupted> {
    let mut result: Option<Interrupted> = None;
    for record in records {
        match record {
            Record::Begin {
                time,
                plan,
                plan_hash,
                pid,
                host,
                done_before,
                ..
            } => {
                // A run that continues this rollout: servers the earlier runs left in flight
                // are still in flight until this run says otherwise.
                let earlier = result.take();
                let rolled_back = earlier.as_ref().is_some_and(|earlier| earlier.rolled_back);
                let analysis_passed = earlier
                    .as_ref()
                    .is_some_and(|earlier| earlier.analysis_passed);
                let in_flight = earlier
                    .map(|earlier| earlier.in_flight)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|flight| !done_before.contains(&flight.server))
                    .collect();
                result = Some(Interrupted {
                    plan: plan.clone(),
                    plan_hash: plan_hash.clone(),
                    started: time.clone(),
                    pid: *pid,
                    host: host.clone(),
                    done: done_before.clone(),
                    in_flight,
                    paused: false,
                    stopped: None,
                    rolled_back,
                    analysis_passed,
                });
            }
            Record::Intent {
                server,
                change,
                command,
                ..
            } => {
                let state = result.as_mut()?;
                let index = match state
                    .in_flight
                    .iter()
                    .position(|flight| &flight.server == server)
                {
                    Some(index) => index,
                    None => {
                        state.in_flight.push(InFlight {
                            server: server.clone(),
                            applied: Vec::new(),
                            pending: None,
                            unfinished: None,
                            restart_succeeded: false,
                        });
                        state.in_flight.len() - 1
                    }
                };
                state.in_flight[index].pending = Some(*change);
                if *change == Change::Restart {
                    state.in_flight[index].restart_succeeded = false;
                }
                if let Some(command) = command {
                    state.in_flight[index].unfinished = Some((*change, command.clone()));
                }
            }
            Record::CommandEnded { server, .. } => {
                let state = result.as_mut()?;
                if let Some(in_flight) = state
                    .in_flight
                    .iter_mut()
                    .find(|flight| &flight.server == server)
                {
                    in_flight.unfinished = None;
                }
            }
            Record::Outcome {
                server,
                change,
                ok,
                may_still_run,
                ..
            } => {
                let state = result.as_mut()?;
                if let Some(in_flight) = state
                    .in_flight
                    .iter_mut()
                    .find(|flight| &flight.server == server)
                {
                    in_flight.pending = None;
                    if !*may_still_run
                        && in_flight
                            .unfinished
                            .as_ref()
                            .is_some_and(|(sent, _)| sent == change)
                    {
                        in_flight.unfinished = None;
                    }
                    if *ok && *change == Change::Restart {
                        in_flight.restart_succeeded = true;
                    }
                    if !*ok && *change == Change::Verify {
                        // It exited 0 but left the wrong version: a resume redoes it.
                        in_flight.restart_succeeded = false;
                        continue;
                    }
                    if *ok {
                        in_flight.applied.push(*change);
                    } else if *change == Change::Restart {
                        // A failed restart may still have done part of its work.
                        in_flight.applied.push(Change::Restart);
                    }
                }
            }
            Record::ServerDone { server, .. } => {
                let state = result.as_mut()?;
                state.done.push(server.clone());
                state.in_flight.retain(|flight| &flight.server != server);
            }
            Record::Paused { .. } => {
                let state = result.as_mut()?;
                state.paused = true;
                state.in_flight.clear();
            }
            Record::Rollback { .. } => {
                if let Some(state) = result.as_mut() {
                    state.rolled_back = true;
                }
            }
            Record::Analysis { verdict, .. } => {
                if let Some(state) = result.as_mut() {
                    state.analysis_passed = verdict == "passed";
                }
            }
            Record::Reload { .. } | Record::Read { .. } => {}
            Record::End { outcome, .. } if outcome == "success" => result = None,
            Record::End { outcome, .. } => {
                let state = result.as_mut()?;
                state.stopped = Some(outcome.clone());
            }
        }
    }
    result
}

pub mod history;

#[cfg(test)]
mod tests;
