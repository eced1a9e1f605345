//! Several servers at once: both bounds at every step, failures and stops in a batch.

use super::*;

#[test]
fn batches_keep_both_bounds_at_every_step_and_restart_every_server() {
    let plan = plan_of(10, "capacity:\n  max_unavailable: 3\n  min_up: 6\n");
    let mut world = World::with(10);
    world.sessions.push(("app2".into(), 1, 4));
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success);
    assert!(finish.servers.iter().all(|s| s.state == ServerState::Done));
    assert_eq!(world.most_out, 3, "three at once, never more");
    assert!(
        world.fewest_up >= 7,
        "fewest in rotation: {}",
        world.fewest_up
    );
    let restarts = world
        .changes()
        .iter()
        .filter(|c| c.starts_with("restart"))
        .count();
    assert_eq!(restarts, 10);
}

#[test]
fn min_up_holds_a_batch_smaller_than_max_unavailable() {
    // Ten servers, at least seven others in rotation at each drain: the fourth would leave
    // six, so three out at most.
    let plan = plan_of(10, "capacity:\n  max_unavailable: 5\n  min_up: 7\n");
    let mut world = World::with(10);
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success);
    assert_eq!(world.most_out, 3, "{reports:?}");
    assert!(world.fewest_up >= 7);
    assert!(
        reports
            .iter()
            .any(|report| matches!(report, Report::WaitingForCapacity { .. })),
        "the fourth server waited for room"
    );
}

#[test]
fn the_next_server_starts_only_after_the_one_before_is_drained() {
    let plan = plan_of(4, "capacity:\n  max_unavailable: 4\n");
    let mut world = World::with(4);
    world.run(&plan);
    let changes = world.changes();
    for server in ["app1", "app2", "app3"] {
        let next = format!("app{}", server[3..].parse::<usize>().unwrap() + 1);
        let drained = changes.iter().position(|c| *c == format!("{server} drain"));
        let next_drained = changes.iter().position(|c| *c == format!("{next} drain"));
        assert!(drained < next_drained, "{changes:?}");
    }
}

#[test]
fn a_failure_in_a_batch_stops_new_starts_and_lets_the_others_finish() {
    let plan = plan_of(10, "capacity:\n  max_unavailable: 3\n  min_up: 2\n");
    let mut world = World::with(10);
    world.failing_restarts.push(1);
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(finish.reason.unwrap().contains("the restart failed"));
    assert_eq!(finish.servers[1].state, ServerState::OutOfRotation);
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert_eq!(
        finish.servers[2].state,
        ServerState::Done,
        "in flight: finished"
    );
    assert!(
        finish.servers[3..]
            .iter()
            .all(|server| server.state == ServerState::Untouched),
        "{:?}",
        finish.servers
    );
}

#[test]
fn an_interrupt_stops_every_server_in_flight_at_its_own_safe_point() {
    let plan = plan_of(6, "capacity:\n  max_unavailable: 3\n");
    let mut world = World::with(6);
    world.sessions.push(("app3".into(), 1, usize::MAX));
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| matches!(effect, Effect::Restart(1)),
        StopAt::Safe,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(
        finish.servers[1].state,
        ServerState::Done,
        "its restart went on"
    );
    assert_eq!(
        finish.servers[2].state,
        ServerState::ReturnedUnrestarted,
        "still draining: back unrestarted"
    );
    assert!(
        finish.servers[3..]
            .iter()
            .all(|s| s.state == ServerState::Untouched)
    );
}

#[test]
fn abort_now_leaves_every_server_in_flight_out_of_rotation() {
    let plan = plan_of(6, "capacity:\n  max_unavailable: 3\n");
    let mut world = World::with(6);
    world.sessions.push(("app3".into(), 1, usize::MAX));
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| matches!(effect, Effect::Restart(1)),
        StopAt::Now,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    for index in [1, 2] {
        assert_eq!(finish.servers[index].state, ServerState::OutOfRotation);
        assert_eq!(finish.servers[index].restore.len(), 1);
    }
}

#[test]
fn a_percentage_is_of_each_backend_rounded_down_and_at_least_one() {
    let plan = plan_of(3, "capacity:\n  max_unavailable: 10%\n");
    let topology = topology(&plan);
    let be_app = BackendName::new("be_app").unwrap();
    let of =
        |size| Limits::new(plan.capacity.max_unavailable, &topology, |_, _| size).of(0, &be_app);
    assert_eq!(of(200), 20);
    assert_eq!(of(19), 1);
    assert_eq!(of(3), 1);
    let count = |text: &str| {
        let plan = plan_of(3, &format!("capacity:\n  max_unavailable: {text}\n"));
        Limits::new(plan.capacity.max_unavailable, &topology, |_, _| 3)
    };
    assert_eq!(count("1").most_at_once(), 1);
    assert_eq!(count("2").most_at_once(), 2);
    assert_eq!(count("100%").most_at_once(), 3);
}

#[test]
fn resume_redoes_every_server_left_in_maintenance_first() {
    let plan = plan_of(6, "capacity:\n  max_unavailable: 3\n");
    let mut world = World::with(6);
    for name in ["app2", "app3"] {
        world.set(&ServerName::new(name).unwrap(), AdminTarget::Maint);
    }
    let engine = resume(
        &plan,
        &[0],
        &[(1, RestartFact::MayHaveRun), (2, RestartFact::MayHaveRun)],
    );
    let (finish, changes) = {
        let finish = world.drive(engine, &mut Vec::new(), |_, _, _| None);
        (finish, world.changes())
    };
    assert_eq!(finish.outcome, Outcome::Success);
    assert_eq!(&changes[..2], ["app2 maint", "app3 maint"], "{changes:?}");
    assert!(
        !changes.contains(&"app2 drain".to_owned()) || {
            let drain = changes.iter().position(|c| c == "app2 drain").unwrap();
            changes.iter().position(|c| c == "restart 1").unwrap() < drain
        }
    );
    assert!(
        finish.servers[1..]
            .iter()
            .all(|s| s.state == ServerState::Done)
    );
}

#[test]
fn no_server_starts_while_one_in_flight_is_stopping_on_a_failure() {
    let plan = plan_of(
        4,
        "capacity:\n  max_unavailable: 2\ndrain:\n  timeout: 3s\n  on_timeout: fail\n",
    );
    let mut engine = rollout(&plan);
    let now = Instant::now();
    let all_up = || Event::Polled(Polled::new(vec![Ok(World::with(4).views)]));
    engine.start(now);
    engine.handle(Lane::Rollout, only_app1_fits(), now);
    let actions = engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    assert!(
        actions.contains(&Action::Run(Lane::Rollout, Effect::Poll)),
        "app1 is drained: app2's capacity check begins: {actions:?}"
    );
    // app1's drain times out while app2's capacity poll is under way.
    let mut busy = World::with(4);
    busy.views[0].sessions = 1;
    let actions = engine.handle(
        Lane::Server(0),
        Event::Polled(Polled::new(vec![Ok(busy.views)])),
        now + Duration::from_secs(4),
    );
    assert!(
        actions.contains(&Action::Run(
            Lane::Server(0),
            Effect::SetState(ServerName::new("app1").unwrap(), AdminTarget::Ready)
        )),
        "{actions:?}"
    );
    let actions = engine.handle(Lane::Rollout, all_up(), now + Duration::from_secs(4));
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Run(Lane::Server(1), _))),
        "app2 started while app1 was stopping on a failure: {actions:?}"
    );
    let actions = engine.handle(
        Lane::Server(0),
        Event::Changed(Ok(())),
        now + Duration::from_secs(4),
    );
    let Some(Action::Finish(finish)) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

#[test]
fn the_on_failure_hook_runs_once_when_two_servers_of_a_batch_fail() {
    let plan = plan_of(6, &format!("capacity:\n  max_unavailable: 3\n{HOOKS}"));
    let mut world = World::with(6);
    world.failing_restarts.extend([0, 1]);
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Failed);
    let reason = finish.reason.unwrap();
    assert!(
        reason.matches("the restart failed").count() == 2,
        "{reason}"
    );
    let hooks: Vec<String> = world
        .changes()
        .into_iter()
        .filter(|change| change.starts_with("on_failure"))
        .collect();
    assert_eq!(
        hooks,
        ["on_failure 0"],
        "once, for the first server that failed"
    );
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    assert_eq!(finish.servers[1].state, ServerState::OutOfRotation);
}

#[test]
fn a_stalled_driver_leaves_every_server_in_flight_out_of_rotation_and_says_so() {
    let plan = plan_of(4, "capacity:\n  max_unavailable: 2\n");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    engine.start(now);
    engine.handle(Lane::Rollout, only_app1_fits(), now);
    engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    let actions = engine.stalled(now);
    assert_eq!(
        actions,
        [Action::Run(
            Lane::Server(0),
            Effect::SetState(ServerName::new("app1").unwrap(), AdminTarget::Maint)
        )]
    );
    let actions = engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    let Some(Action::Finish(finish)) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(finish.reason.as_deref().unwrap().contains("internal error"));
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    assert_eq!(
        finish.servers[0].restore,
        ["set server be_app/app1 state ready"]
    );
}

/// A first read where app3 and app4 are DOWN: with `min_up: 1`, app1 may go (app2 stays),
/// app2 may not (app1, counted out, would leave none).
fn only_app1_fits() -> Event {
    let mut world = World::with(4);
    for view in &mut world.views[2..] {
        view.status = "DOWN".into();
        view.operational = OpState::Stopped;
    }
    Event::Polled(Polled::new(vec![Ok(world.views)]))
}

#[test]
fn one_read_starts_every_server_that_fits_counting_each_started_as_out() {
    let plan = plan_of(6, "capacity:\n  max_unavailable: 3\n");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    engine.start(now);
    let started = |actions: &[Action]| -> Vec<usize> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Run(Lane::Server(index), Effect::SetState(_, AdminTarget::Drain)) => {
                    Some(*index)
                }
                _ => None,
            })
            .collect()
    };
    // All six up: three start from one read, the limit.
    let actions = engine.handle(
        Lane::Rollout,
        Event::Polled(Polled::new(vec![Ok(World::with(6).views)])),
        now,
    );
    assert_eq!(started(&actions), [0, 1, 2], "{actions:?}");

    // Three up of four, `min_up: 2`: app1 leaves two; app2 would leave one once app1 is
    // counted out, though the read still shows app1 in rotation.
    let plan = plan_of(4, "capacity:\n  max_unavailable: 3\n  min_up: 2\n");
    let mut engine = rollout(&plan);
    engine.start(now);
    let mut world = World::with(4);
    world.views[3].status = "DOWN".into();
    world.views[3].operational = OpState::Stopped;
    let actions = engine.handle(
        Lane::Rollout,
        Event::Polled(Polled::new(vec![Ok(world.views)])),
        now,
    );
    assert_eq!(started(&actions), [0], "{actions:?}");
}
