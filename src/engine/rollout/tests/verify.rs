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
