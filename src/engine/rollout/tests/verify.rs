//! `verify`: after its restart and health check, a server takes traffic only once it answers
//! what this rollout deploys.

use super::*;

const VERIFY: &str = "vars:\n  version: \"2\"\nverify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n  timeout: 1s\n";

fn versioned() -> Plan {
    crate::plan::parse(&format!("{PLAN}{VERIFY}health:\n  within: 5s\n")).unwrap()
}

/// The changes and reads of one server, in order.
fn sequence_of(world: &World, index: usize, name: &str) -> Vec<String> {
    world
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::SetState(server, target) if server.as_str() == name => {
                Some(format!("state {}", target.as_str()))
            }
            Effect::Restart(of) if *of == index => Some("restart".to_owned()),
            Effect::Probe(of) if *of == index => Some("probe".to_owned()),
            Effect::Verify(of) if *of == index => Some("verify".to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_server_leaves_maintenance_only_after_it_answers_the_expected_version() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(world.versions, ["2", "2", "2"]);
    assert_eq!(
        sequence_of(&world, 0, "app1"),
        [
            "state drain",
            "state maint",
            "restart",
            "probe",
            "verify",
            "state drain",
            "state ready"
        ]
    );
    let verified: Vec<&Report> = reports
        .iter()
        .filter(|report| matches!(report, Report::Verified { .. }))
        .collect();
    assert_eq!(verified.len(), 3);
    assert!(matches!(
        verified[0],
        Report::Verified { server, answer } if server.as_str() == "app1" && answer == "2"
    ));
}

#[test]
fn an_old_process_still_answering_is_read_again_until_the_new_one_answers() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    world.old_answers = vec![(0, 2)];
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    let app1 = sequence_of(&world, 0, "app1");
    assert_eq!(
        app1.iter().filter(|step| *step == "verify").count(),
        3,
        "{app1:?}"
    );
    assert_eq!(app1.last().map(String::as_str), Some("state ready"));
}

#[test]
fn a_restart_that_leaves_the_old_version_fails_the_server_out_of_rotation() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    world.stale_restarts = vec![0];
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
    assert_eq!(finish.servers[2].state, ServerState::Untouched);
    let reason = finish.reason.unwrap();
    assert!(
        reason.contains(r#"verify: it answers "1", not "2" within 5s of its restart"#),
        "{reason}"
    );
    // Never back in traffic, not even draining: it stays in maintenance.
    assert_eq!(
        sequence_of(&world, 0, "app1")
            .into_iter()
            .filter(|step| step.starts_with("state"))
            .collect::<Vec<_>>(),
        ["state drain", "state maint"]
    );
    assert!(reports.iter().any(|report| matches!(
        report,
        Report::ServerFailed {
            stage: Stage::Verifying,
            ..
        }
    )));
    assert_eq!(world.versions, ["1", "1", "1"], "nothing else restarted");
}

#[test]
fn a_second_apply_of_the_same_version_changes_nothing() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    world.versions = vec!["2".into(); 3];
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(
        world.changes(),
        Vec::<String>::new(),
        "nothing drained or restarted"
    );
    assert!(
        finish
            .servers
            .iter()
            .all(|server| server.state == ServerState::Current)
    );
    let current: Vec<&str> = reports
        .iter()
        .filter_map(|report| match report {
            Report::AlreadyCurrent { server, answer } if answer == "2" => Some(server.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(current, ["app1", "app2", "app3"]);
    // One read covered all three.
    let reads = world
        .effects
        .iter()
        .filter(|effect| matches!(effect, Effect::ReadCurrent(_)))
        .count();
    assert_eq!(reads, 1);
}

#[test]
fn only_the_servers_that_do_not_answer_the_version_are_deployed() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    world.versions[1] = "2".into();
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(world.versions, ["2", "2", "2"]);
    assert_eq!(finish.servers[1].state, ServerState::Current);
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert!(
        world
            .changes()
            .iter()
            .all(|change| !change.contains("app2") && change != "restart 1"),
        "{:?}",
        world.changes()
    );
    assert!(reports.iter().any(|report| matches!(
        report,
        Report::Running { server, answer: Some(answer), .. } if server.as_str() == "app1" && answer == "1"
    )));
}

#[test]
fn a_current_server_is_skipped_before_its_capacity_check() {
    // app2 is DOWN: draining app1 would leave no server in rotation. app1 already runs the
    // version, so it is never checked, and app2 (in no one's way) is deployed.
    let plan = crate::plan::parse(&format!(
        "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
         backends: [be_app]\nservers:\n  - name: app1\n  - name: app2\n\
         restart:\n  command: /bin/true\n{VERIFY}"
    ))
    .unwrap();
    let mut world = World::with(2);
    world.deploys = Some("2".into());
    world.versions[0] = "2".into();
    world.views[1].status = "DOWN".into();
    world.views[1].operational = OpState::Stopped;
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(finish.servers[0].state, ServerState::Current);
    assert_eq!(world.versions, ["2", "2"]);
}

#[test]
fn a_server_that_cannot_be_read_is_deployed_and_said_so() {
    let plan = versioned();
    let mut world = World::new();
    world.deploys = Some("2".into());
    let mut reports = Vec::new();
    let finish = world.drive(
        rollout(&plan),
        &mut reports,
        |world, effect, _| match effect {
            Effect::ReadCurrent(servers) => Some(Event::CurrentRead(
                servers
                    .iter()
                    .map(|index| {
                        if *index == 2 {
                            Err("GET http://10.0.0.3:8080/version: connection refused".to_owned())
                        } else {
                            Ok(world.versions[*index].clone())
                        }
                    })
                    .collect(),
            )),
            _ => None,
        },
    );
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(world.versions, ["2", "2", "2"]);
    assert!(reports.iter().any(|report| matches!(
        report,
        Report::Running { server, answer: None, error: Some(error) }
            if server.as_str() == "app3" && error.contains("connection refused")
    )));
}

#[test]
fn without_skip_current_every_server_is_deployed_and_its_previous_still_read() {
    let plan = crate::plan::parse(&format!("{PLAN}{VERIFY}skip_current: false\n")).unwrap();
    let mut world = World::new();
    world.deploys = Some("2".into());
    world.versions = vec!["2".into(); 3];
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert!(
        finish
            .servers
            .iter()
            .all(|server| server.state == ServerState::Done
                && server.previous.as_deref() == Some("2")),
        "{finish:?}"
    );
    assert_eq!(
        world
            .changes()
            .iter()
            .filter(|change| change.starts_with("restart"))
            .count(),
        3
    );
}

#[test]
fn in_batches_no_server_is_drained_before_what_it_runs_was_read() {
    let names: String = (1..=20).map(|n| format!("  - name: app{n}\n")).collect();
    let plan = crate::plan::parse(&format!(
        "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
         backends: [be_app]\nservers:\n{names}restart:\n  command: /bin/true\n\
         capacity:\n  max_unavailable: 5\n{VERIFY}"
    ))
    .unwrap();
    let mut world = World::with(20);
    world.deploys = Some("2".into());
    world.versions[17] = "2".into();
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    let mut read = [false; 20];
    for effect in &world.effects {
        match effect {
            Effect::ReadCurrent(servers) => servers.iter().for_each(|index| read[*index] = true),
            Effect::SetState(server, AdminTarget::Drain) => {
                let index: usize = server.as_str()[3..].parse::<usize>().unwrap() - 1;
                assert!(read[index], "{server} drained before it was read");
            }
            _ => {}
        }
    }
    assert_eq!(finish.servers[17].state, ServerState::Current);
    assert!(world.versions.iter().all(|version| version == "2"));
    assert!(world.most_out <= 5, "{} out at once", world.most_out);
}
