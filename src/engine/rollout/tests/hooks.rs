//! Hooks at their points around each server.

use super::*;

#[test]
fn hooks_run_at_their_points_around_each_server() {
    let mut world = World::new();
    let (finish, _) = world.run(&plan(HOOKS));
    assert_eq!(finish.outcome, Outcome::Success);
    let changes = world.changes();
    assert_eq!(
        &changes[..7],
        [
            "before_drain 0",
            "app1 drain",
            "app1 maint",
            "restart 0",
            "after_restart 0",
            "app1 drain",
            "app1 ready"
        ]
    );
    assert_eq!(changes[7], "after_ready 0");
    assert!(
        !changes
            .iter()
            .any(|change| change.starts_with("on_failure")),
        "nothing failed"
    );
}

#[test]
fn a_failing_after_restart_hook_stops_with_the_server_out_and_runs_on_failure() {
    let mut world = World::new();
    world.failing_hooks.push((HookPoint::AfterRestart, 2));
    let (finish, _) = world.run(&plan(HOOKS));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(
        finish
            .reason
            .as_deref()
            .unwrap()
            .contains("its after_restart hook failed: exit 1")
    );
    let changes = world.changes();
    assert_eq!(
        &changes[changes.len() - 2..],
        ["after_restart 2", "on_failure 2"]
    );
    assert_eq!(finish.servers[2].state, ServerState::OutOfRotation);
    assert_eq!(finish.servers[1].state, ServerState::Done);
}

#[test]
fn a_failing_before_drain_hook_touches_nothing() {
    let mut world = World::new();
    world.failing_hooks.push((HookPoint::BeforeDrain, 0));
    let (finish, _) = world.run(&plan(HOOKS));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(world.changes(), ["before_drain 0", "on_failure 0"]);
    assert_eq!(finish.servers[0].state, ServerState::Untouched);
}

#[test]
fn abort_now_during_the_after_ready_hook_leaves_the_checked_server_in_traffic() {
    let plan = plan(HOOKS);
    let mut world = World::new();
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| *effect == Effect::Hook(HookPoint::AfterReady, 0),
        StopAt::Now,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert!(finish.servers[0].restore.is_empty());
    assert_eq!(
        world.changes().last().map(String::as_str),
        Some("after_ready 0"),
        "no change after it"
    );
}

#[test]
fn a_failing_after_ready_hook_stops_but_leaves_the_checked_server_in_traffic() {
    let mut world = World::new();
    world.failing_hooks.push((HookPoint::AfterReady, 0));
    let (finish, _) = world.run(&plan(HOOKS));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(
        world.changes().last().map(String::as_str),
        Some("on_failure 0")
    );
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}
