//! Rollback: the servers a rollout changed go back to what they ran before, newest first,
//! through the same safe sequence and under the same limits.

use super::*;

const ROLLBACK: &str = "vars:\n  version: \"2\"\nverify:\n  url: http://{addr}:{port}/version\n  expect: \"{version}\"\n\
    rollback:\n  command: deploy {previous}\n";

fn rollback_plan(extra: &str) -> Plan {
    crate::plan::parse(&format!("{PLAN}{ROLLBACK}{extra}"))
        .unwrap()
        .for_rollback()
        .unwrap()
}

fn rollback(plan: &Plan, servers: &[(usize, &str)]) -> Rollout {
    let servers: Vec<(usize, Option<String>)> = servers
        .iter()
        .map(|(index, previous)| (*index, Some((*previous).to_owned())))
        .collect();
    Rollout::rollback(plan, topology(plan), limits(plan), &servers, &[])
}

/// Rolls app3, app2 and app1 back to "1", newest first, in a world where they run
/// `versions`, once `prepare` set the world up.
fn roll_back_all(
    plan: &Plan,
    versions: [&str; 3],
    prepare: impl FnOnce(&mut World),
) -> (World, Finish, Vec<Report>) {
    let mut world = World::new();
    world.versions = versions.map(str::to_owned).to_vec();
    world.deploys = Some("1".into());
    prepare(&mut world);
    let mut reports = Vec::new();
    let finish = world.drive(
        rollback(plan, &[(2, "1"), (1, "1"), (0, "1")]),
        &mut reports,
        |_, _, _| None,
    );
    (world, finish, reports)
}

/// The order in which servers were restarted (their rollback command run).
fn restarted(world: &World) -> Vec<usize> {
    world
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Restart(index) => Some(*index),
            _ => None,
        })
        .collect()
}

#[test]
fn every_server_goes_back_newest_first_one_at_a_time() {
    let plan = rollback_plan("");
    assert_eq!(plan.restart.command.as_str(), "deploy {previous}");
    let (world, finish, reports) = roll_back_all(&plan, ["2"; 3], |_| {});
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(restarted(&world), [2, 1, 0]);
    assert_eq!(world.versions, ["1", "1", "1"]);
    assert_eq!(world.most_out, 1, "one at a time");
    assert!(world.fewest_up >= 2);
    // Each was verified against what it ran before.
    let verified = reports
        .iter()
        .filter(|report| matches!(report, Report::Verified { answer, .. } if answer == "1"))
        .count();
    assert_eq!(verified, 3);
    // Drained before each rollback command, like any restart.
    for name in ["app1", "app2", "app3"] {
        let drained = world
            .changes()
            .iter()
            .position(|c| *c == format!("{name} drain"));
        let index: usize = name[3..].parse::<usize>().unwrap() - 1;
        let restart = world
            .changes()
            .iter()
            .position(|c| *c == format!("restart {index}"));
        assert!(drained < restart, "{name}: {:?}", world.changes());
    }
}

#[test]
fn a_server_left_in_maintenance_is_rolled_back_without_returning_to_traffic_first() {
    let plan = rollback_plan("");
    let mut world = World::new();
    world.versions = vec!["2".into(), "2".into(), "1".into()];
    world.deploys = Some("1".into());
    // app2 failed its verify and was left in maintenance.
    world.set(&ServerName::new("app2").unwrap(), AdminTarget::Maint);
    let mut reports = Vec::new();
    let finish = world.drive(
        rollback(&plan, &[(1, "1"), (0, "1")]),
        &mut reports,
        |_, _, _| None,
    );
    let found: Vec<(&str, &str)> = reports
        .iter()
        .filter_map(|report| match report {
            Report::Found {
                server, decision, ..
            } => Some((server.as_str(), decision.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "app2",
                "its rollback command runs once no session is left on it"
            ),
            (
                "app1",
                "it is rolled back like any server: capacity check, drain, 0 sessions, the rollback command"
            )
        ]
    );
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(restarted(&world), [1, 0]);
    let app2: Vec<String> = world
        .changes()
        .into_iter()
        .take_while(|change| change != "restart 1")
        .filter(|change| change.starts_with("app2") && change != "app2 maint")
        .collect();
    assert_eq!(
        app2,
        Vec::<String>::new(),
        "app2 stays in maintenance until its rollback ran"
    );
    assert_eq!(world.versions, ["1", "1", "1"]);
    assert!(world.views.iter().all(|view| view.admin.ready()));
}

#[test]
fn a_server_already_back_on_its_previous_version_is_left_alone() {
    let plan = rollback_plan("");
    let (world, finish, _) = roll_back_all(&plan, ["2", "1", "2"], |_| {});
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert_eq!(restarted(&world), [2, 0]);
    assert_eq!(finish.servers[1].state, ServerState::RolledBack);
    assert_eq!(finish.servers[0].state, ServerState::RolledBack);
}

#[test]
fn a_failing_rollback_command_stops_safely_and_touches_nothing_else() {
    let plan = rollback_plan("");
    let (world, finish, _) =
        roll_back_all(&plan, ["2"; 3], |world| world.failing_restarts = vec![2]);
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(restarted(&world), [2]);
    assert_eq!(finish.servers[2].state, ServerState::OutOfRotation);
    assert!(
        finish
            .reason
            .as_deref()
            .unwrap()
            .contains("the restart failed"),
        "{finish:?}"
    );
    assert_eq!(world.versions, ["2", "2", "2"]);
}

#[test]
fn rollbacks_keep_max_unavailable_and_min_up() {
    let plan = rollback_plan("capacity:\n  max_unavailable: 2\n  min_up: 1\n");
    let (world, finish, _) = roll_back_all(&plan, ["2"; 3], |_| {});
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert!(world.most_out <= 2, "{}", world.most_out);
    assert!(world.fewest_up >= 1, "{}", world.fewest_up);
    assert_eq!(world.versions, ["1", "1", "1"]);
}
