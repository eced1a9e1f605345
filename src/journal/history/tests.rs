//! Past rollouts: archived, listed newest first, pruned to the last ten; gone plans' folders
//! removed only when nothing in them can matter.

use std::time::SystemTime;

use super::*;

fn begin(time: &str, plan: &Path) -> Record {
    Record::Begin {
        time: time.to_owned(),
        plan: plan.to_owned(),
        plan_hash: "abc".into(),
        pid: 42,
        host: "ci-1".into(),
        haproxy: vec![],
        servers: vec!["app1".into(), "app2".into()],
        done_before: vec![],
        vars: Default::default(),
    }
}

fn end(outcome: &str) -> Record {
    Record::End {
        time: super::super::now(),
        outcome: outcome.to_owned(),
        summary: serde_json::json!({}),
    }
}

/// A rollout of `plan` that started at `time` and ended with `outcome` (none: unfinished).
fn rollout(dir: &Path, time: &str, plan: &Path, outcome: Option<&str>) {
    let mut journal = Journal::create(dir).unwrap();
    journal.append(&begin(time, plan)).unwrap();
    if let Some(outcome) = outcome {
        journal.append(&end(outcome)).unwrap();
    }
}

#[test]
fn each_new_rollout_archives_the_last_and_ten_are_kept_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    for minute in 10..25 {
        let outcome = if minute == 23 { "failed" } else { "success" };
        rollout(
            dir.path(),
            &format!("2026-11-30T13:{minute}:00.000Z"),
            &plan,
            Some(outcome),
        );
    }
    let rollouts = list(dir.path());
    let started: Vec<&str> = rollouts.iter().map(|past| &past.started[14..16]).collect();
    assert_eq!(
        started,
        ["24", "23", "22", "21", "20", "19", "18", "17", "16", "15"]
    );
    assert_eq!(rollouts[1].outcome.as_deref(), Some("failed"));
    assert_eq!(rollouts[0].file, dir.path().join("journal.jsonl"));
    assert_eq!(journals(&history_dir(dir.path())).len(), KEEP - 1);
}

fn age(dir: &Path) {
    let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

#[test]
fn only_finished_old_folders_of_plans_that_are_gone_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let rollouts = root.path().join("rollouts");
    let existing = root.path().join("plan.yaml");
    std::fs::write(&existing, "version: 1\n").unwrap();
    let gone = root.path().join("deleted.yaml");
    let folder = |name: &str, plan: &Path, outcome: Option<&str>, old: bool| {
        let dir = rollouts.join(name);
        rollout(&dir, "2026-10-01T00:00:00.000Z", plan, outcome);
        if old {
            age(&dir);
        }
        dir
    };
    let removable = folder("gone-done-old", &gone, Some("success"), true);
    let failed = folder("gone-failed-old", &gone, Some("failed"), true);
    let unfinished = folder("gone-unfinished-old", &gone, None, true);
    let present = folder("present-done-old", &existing, Some("success"), true);
    let recent = folder("gone-done-recent", &gone, Some("success"), false);
    let own = folder("own", &gone, Some("success"), true);
    let locked = folder("gone-done-old-locked", &gone, Some("success"), true);
    // A rollout that succeeded, then a `rollback` of it that was killed: its journal is
    // what the next `rollback` finishes from.
    let half_rolled_back = folder("gone-rollback-killed-old", &gone, Some("success"), false);
    {
        let mut journal = Journal::open(&half_rolled_back.join("journal.jsonl")).unwrap();
        journal
            .append(&begin("2026-10-02T00:00:00.000Z", &gone))
            .unwrap();
        journal
            .append(&Record::Rollback {
                time: super::super::now(),
                servers: vec!["app1".into()],
            })
            .unwrap();
    }
    age(&half_rolled_back);
    let removed = prune_gone_plans(root.path(), &own, |dir| dir == locked);
    assert_eq!(removed, std::slice::from_ref(&removable));
    assert!(!removable.exists());
    for kept in [
        failed,
        unfinished,
        present,
        recent,
        own,
        locked,
        half_rolled_back,
    ] {
        assert!(kept.exists(), "{}", kept.display());
    }
}
