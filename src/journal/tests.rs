//! The journal on disk: records, torn lines, and what an interrupted rollout left.

use super::*;

fn intent(server: &str, change: Change) -> Record {
    Record::Intent {
        time: now(),
        server: server.into(),
        change,
        command: None,
    }
}

fn outcome(server: &str, change: Change) -> Record {
    Record::Outcome {
        time: now(),
        server: server.into(),
        change,
        ok: true,
        error: None,
        may_still_run: false,
    }
}

fn begin() -> Record {
    begin_after(&[])
}

/// The beginning of a run that continues a rollout whose servers `done` are done.
fn begin_after(done: &[&str]) -> Record {
    Record::Begin {
        time: now(),
        plan: "/plans/p.yaml".into(),
        plan_hash: "abc".into(),
        pid: 42,
        host: "ci-1".into(),
        haproxy: vec![],
        servers: vec!["app1".into(), "app2".into()],
        done_before: done.iter().map(|server| (*server).to_owned()).collect(),
        vars: [("version".to_owned(), format!("{}", done.len() + 1))].into(),
    }
}

#[test]
fn a_journal_survives_reopening_and_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::create(dir.path()).unwrap();
    journal.append(&begin()).unwrap();
    journal.append(&intent("app1", Change::Drain)).unwrap();
    drop(journal);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("journal.jsonl"))
        .unwrap();
    file.write_all(b"{\"record\":\"outc").unwrap();
    let story = Journal::read_all(&dir.path().join("journal.jsonl")).unwrap();
    assert_eq!(story.records.len(), 2);
    assert_eq!(
        story.torn.map(|torn| torn.text),
        Some("{\"record\":\"outc".into())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("journal.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_interrupted_rollout_names_the_done_servers_and_the_one_in_flight() {
    let records = vec![
        begin(),
        intent("app1", Change::Drain),
        outcome("app1", Change::Drain),
        intent("app1", Change::Maint),
        outcome("app1", Change::Maint),
        intent("app1", Change::Restart),
        outcome("app1", Change::Restart),
        Record::ServerDone {
            time: now(),
            server: "app1".into(),
        },
        intent("app2", Change::Drain),
        outcome("app2", Change::Drain),
        intent("app2", Change::Maint),
    ];
    let state = interrupted(&records).unwrap();
    assert_eq!(state.done, ["app1"]);
    let [in_flight] = &state.in_flight[..] else {
        panic!("{:?}", state.in_flight)
    };
    assert_eq!(in_flight.server, "app2");
    assert_eq!(in_flight.applied, [Change::Drain]);
    assert_eq!(in_flight.pending, Some(Change::Maint));
    assert!(!in_flight.restart_attempted());
}

#[test]
fn a_torn_record_names_its_server_when_that_much_was_written() {
    let torn = |text: &str| Torn { text: text.into() };
    assert_eq!(
        torn(r#"{"record":"intent","time":"t","server":"app2","cha"#).server(),
        Some("app2")
    );
    assert_eq!(
        torn(r#"{"record":"intent","time":"t","server":"ap"#).server(),
        None
    );
    assert_eq!(torn(r#"{"record":"outc"#).server(), None);
}

#[test]
fn a_stopped_rollout_keeps_its_facts_across_the_runs_that_continue_it() {
    let end = |outcome: &str| Record::End {
        time: now(),
        outcome: outcome.into(),
        summary: serde_json::json!({}),
    };
    let mut records = vec![
        begin(),
        intent("app1", Change::Drain),
        outcome("app1", Change::Drain),
        Record::ServerDone {
            time: now(),
            server: "app1".into(),
        },
        intent("app2", Change::Drain),
        outcome("app2", Change::Drain),
        intent("app2", Change::Maint),
        outcome("app2", Change::Maint),
        end("failed"),
    ];
    let state = interrupted(&records).unwrap();
    assert_eq!(state.stopped.as_deref(), Some("failed"));
    assert_eq!(state.done, ["app1"]);
    assert_eq!(state.in_flight[0].server, "app2");
    // A resume that died before it touched app2: app2 is still in flight.
    records.push(begin_after(&["app1"]));
    let state = interrupted(&records).unwrap();
    assert_eq!(state.stopped, None);
    assert_eq!(state.in_flight[0].server, "app2");
    assert_eq!(state.in_flight[0].last_state(), Some(Change::Maint));
    records.push(end("success"));
    assert_eq!(interrupted(&records), None);
}

#[test]
fn a_rollout_that_ended_is_not_interrupted() {
    let records = vec![
        begin(),
        Record::End {
            time: now(),
            outcome: "success".into(),
            summary: serde_json::json!({}),
        },
    ];
    assert_eq!(interrupted(&records), None);
}

#[test]
fn the_values_of_vars_are_those_the_last_run_started_with() {
    assert_eq!(started_with(&[]), None);
    let records = [begin(), begin_after(&["app1"])];
    assert_eq!(
        started_with(&records),
        Some([("version".to_owned(), "2".to_owned())].into())
    );
    let line = serde_json::to_string(&records[0]).unwrap();
    assert!(line.contains(r#""vars":{"version":"1"}"#), "{line}");
}

fn read(server: &str, answer: &str) -> Record {
    Record::Read {
        time: now(),
        server: server.into(),
        answer: answer.into(),
    }
}

#[test]
fn the_servers_a_rollout_changed_come_newest_first_with_what_they_ran_before() {
    let records = vec![
        begin(),
        read("app1", "1"),
        read("app2", "1"),
        read("app3", "1"),
        intent("app1", Change::Drain),
        intent("app1", Change::Restart),
        outcome("app1", Change::Restart),
        intent("app2", Change::Restart),
        // A resumed run reads again and restarts again: the first answer counts, once.
        begin_after(&["app1"]),
        read("app2", "2"),
        intent("app2", Change::Restart),
        intent("app3", Change::Drain),
    ];
    assert_eq!(
        changed_servers(&records),
        [
            ("app2".to_owned(), Some("1".to_owned())),
            ("app1".to_owned(), Some("1".to_owned()))
        ],
        "app3 was drained, never restarted: not changed"
    );
    let mut rolled = records.clone();
    rolled.push(Record::Rollback {
        time: now(),
        servers: vec!["app2".into(), "app1".into()],
    });
    rolled.push(read("app2", "2"));
    rolled.push(intent("app2", Change::Restart));
    assert_eq!(changed_servers(&rolled), changed_servers(&records));
    let interrupted = interrupted(&rolled).unwrap();
    assert!(interrupted.rolled_back);
}

#[test]
fn a_restart_whose_version_failed_verify_is_not_a_successful_restart() {
    let mut failed_verify = outcome("app1", Change::Verify);
    if let Record::Outcome { ok, .. } = &mut failed_verify {
        *ok = false;
    }
    let records = vec![
        begin(),
        intent("app1", Change::Drain),
        outcome("app1", Change::Drain),
        intent("app1", Change::Maint),
        outcome("app1", Change::Maint),
        intent("app1", Change::Restart),
        outcome("app1", Change::Restart),
        failed_verify,
    ];
    let interrupted = interrupted(&records).unwrap();
    let app1 = &interrupted.in_flight[0];
    assert!(!app1.restart_succeeded, "resume redoes it");
    assert!(app1.restart_attempted());
    assert_eq!(app1.last_state(), Some(Change::Maint));
}
