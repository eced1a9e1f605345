//! Past rollouts: when a plan's next rollout starts, the journal of its last one moves to
//! `history/` in the plan's folder, where the newest stay (`KEEP` rollouts in all); and the folders of plans
//! that are gone are removed once nothing in them can matter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Journal, Record};

/// Rollouts kept per plan: the last one's journal, and `KEEP - 1` before it in history.
pub const KEEP: usize = 10;

/// A plan's folder is removed when its plan file is gone, its last rollout finished, no
/// one holds its lock, and nothing in it changed for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// One past rollout of a plan, from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    pub started: String,
    /// `success`, `failed`, `interrupted`, `paused`; `None` if it never wrote its end.
    pub outcome: Option<String>,
    /// Runs it took (a resume adds one).
    pub runs: usize,
    pub servers: usize,
    pub rolled_back: bool,
    pub file: PathBuf,
}

fn history_dir(dir: &Path) -> PathBuf {
    dir.join("history")
}

/// Moves the plan's last journal, if any, into its history, named after when it started,
/// then keeps the newest `KEEP`.
pub fn archive(dir: &Path) -> std::io::Result<()> {
    let current = dir.join("journal.jsonl");
    if !current.exists() {
        return Ok(());
    }
    let history = history_dir(dir);
    super::private_dir(&history)?;
    let started = Journal::read(&current)
        .ok()
        .and_then(|records| {
            records.into_iter().find_map(|record| match record {
                Record::Begin { time, .. } => Some(time),
                _ => None,
            })
        })
        .unwrap_or_else(super::now);
    let mut target = history.join(format!("{started}.jsonl"));
    let mut again = 1;
    while target.exists() {
        again += 1;
        target = history.join(format!("{started}-{again}.jsonl"));
    }
    std::fs::rename(&current, &target)?;
    prune(&history)
}

/// The journals in `history`, newest first (their names start with when they started).
fn journals(history: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(history)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "jsonl")
        })
        .collect();
    files.sort();
    files.reverse();
    files
}

fn prune(history: &Path) -> std::io::Result<()> {
    for old in journals(history).into_iter().skip(KEEP - 1) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// The plan's rollouts, newest first: its last one (still in `journal.jsonl`), then its
/// history.
pub fn list(dir: &Path) -> Vec<Past> {
    std::iter::once(dir.join("journal.jsonl"))
        .chain(journals(&history_dir(dir)))
        .filter_map(|file| past_of(Journal::read(&file).ok()?, file))
        .collect()
}

/// What a rollout's journal says of it; `None` if no run began.
pub fn past_of(records: Vec<Record>, file: PathBuf) -> Option<Past> {
    let mut past = Past {
        started: String::new(),
        outcome: None,
        runs: 0,
        servers: 0,
        rolled_back: false,
        file,
    };
    for record in records {
        match record {
            Record::Begin { time, servers, .. } => {
                if past.runs == 0 {
                    past.started = time;
                    past.servers = servers.len();
                }
                past.runs += 1;
            }
            Record::Rollback { .. } => past.rolled_back = true,
            Record::End { outcome, .. } => past.outcome = Some(outcome),
            _ => {}
        }
    }
    (past.runs > 0).then_some(past)
}

/// Removes the folders of plans that are gone (under `root/rollouts`), except `keep` (the
/// plan being run) and any whose rollout could still matter: `locked` (its lock is held), a
/// last rollout that did not finish (its journal is what `resume` and `abort` read), or a
/// change within `STALE_AFTER`. Returns the folders removed.
pub fn prune_gone_plans(root: &Path, keep: &Path, locked: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("rollouts")) else {
        return removed;
    };
    for dir in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
        if dir == keep || !dir.is_dir() || locked(&dir) || !gone(&dir) {
            continue;
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

fn gone(dir: &Path) -> bool {
    let journal = dir.join("journal.jsonl");
    let Ok(records) = Journal::read(&journal) else {
        // No journal: nothing to resume; gone when old enough.
        return untouched_for(dir, STALE_AFTER);
    };
    let plan = records.iter().find_map(|record| match record {
        Record::Begin { plan, .. } => Some(plan.clone()),
        _ => None,
    });
    // What resume, abort and rollback would pick up (a stopped, paused, killed or
    // half-rolled-back rollout): the same judgement they make, not another one.
    let finished = super::interrupted(&records).is_none();
    finished && plan.is_some_and(|plan| !plan.exists()) && untouched_for(dir, STALE_AFTER)
}

/// Nothing in `dir` (or its history) changed for `age`.
fn untouched_for(dir: &Path, age: Duration) -> bool {
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .chain(std::fs::read_dir(history_dir(dir)).into_iter().flatten())
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max();
    newest.is_some_and(|newest| newest.elapsed().is_ok_and(|elapsed| elapsed >= age))
}

#[cfg(test)]
mod tests;
