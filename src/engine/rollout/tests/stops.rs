//! Interrupts, `abort --now`, `resume` and settling after a killed run.

use super::*;

#[test]
fn an_interrupt_while_draining_returns_the_server_unrestarted() {
    let plan = plan("");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    let app1 = ServerName::new("app1").unwrap();
    let mut world = World::new();
    world.sessions.push(("app1".into(), 1, usize::MAX));
    engine.start(now);
    engine.handle(
        Lane::Rollout,
        Event::Polled(Polled::new(vec![Ok(world.views.clone())])),
        now,
    );
    engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    assert_eq!(
        engine.interrupt(now),
        [],
        "delivered with the server's next result"
    );
    world.set(&app1, AdminTarget::Drain);
    let actions = engine.handle(
        Lane::Server(0),
        Event::Polled(Polled::new(vec![Ok(world.views.clone())])),
        now,
    );
    assert_eq!(
        actions,
        [Action::Run(
            Lane::Server(0),
            Effect::SetState(app1, AdminTarget::Ready)
        )]
    );
    let actions = engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    let Some(Action::Finish(finish)) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(finish.servers[0].state, ServerState::ReturnedUnrestarted);
}

#[test]
fn an_abort_during_the_restart_lets_it_finish_returns_the_healthy_server_and_starts_no_other() {
    let plan = plan("");
    let mut world = World::new();
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| matches!(effect, Effect::Restart(0)),
        StopAt::Safe,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(
        world.changes(),
        [
            "app1 drain",
            "app1 maint",
            "restart 0",
            "app1 drain",
            "app1 ready"
        ]
    );
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

#[test]
fn abort_now_leaves_the_server_in_flight_out_of_rotation() {
    let plan = plan("");
    let mut world = World::new();
    world.sessions.push(("app1".into(), 1, usize::MAX));
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| *effect == Effect::Wait,
        StopAt::Now,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(world.changes(), ["app1 drain", "app1 maint"]);
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    assert_eq!(
        finish.servers[0].restore,
        ["set server be_app/app1 state ready"]
    );
}

#[test]
fn resume_skips_done_servers_and_restarts_one_left_in_maintenance_without_leaving_it() {
    let plan = plan("");
    let mut world = World::new();
    world.set(&ServerName::new("app2").unwrap(), AdminTarget::Maint);
    let engine = resume(&plan, &[0], &[(1, RestartFact::MayHaveRun)]);
    let finish = world.drive(engine, &mut Vec::new(), |_, _, _| None);
    assert_eq!(finish.outcome, Outcome::Success);
    let changes = world.changes();
    assert_eq!(
        &changes[..3],
        ["app2 maint", "restart 1", "app2 drain"],
        "no drain before the restart"
    );
    assert!(
        !changes.iter().any(|change| change.starts_with("app1")),
        "app1 was done before"
    );
    assert_eq!(finish.servers[0].state, ServerState::DoneEarlier);
    assert_eq!(finish.servers[1].state, ServerState::Done);
    assert_eq!(finish.servers[2].state, ServerState::Done);
}

#[test]
fn settling_after_a_restart_returns_the_server_only_once_healthy_then_stops() {
    let plan = plan("");
    let mut world = World::new();
    world.set(&ServerName::new("app1").unwrap(), AdminTarget::Maint);
    let finish = run_with(
        &mut world,
        settle(&plan, &[(0, RestartFact::MayHaveRun)]),
        |_| false,
        StopAt::Never,
    );
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(world.changes(), ["app1 drain", "app1 ready"]);
    assert_eq!(finish.servers[0].state, ServerState::BackRestartUnknown);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);

    let mut world = World::new();
    world.health_fails = true;
    world.set(&ServerName::new("app1").unwrap(), AdminTarget::Maint);
    let plan = super::tests::plan("health:\n  within: 2s\n");
    let finish = run_with(
        &mut world,
        settle(&plan, &[(0, RestartFact::MayHaveRun)]),
        |_| false,
        StopAt::Never,
    );
    assert_eq!(
        world.changes(),
        Vec::<String>::new(),
        "an unhealthy server never leaves maintenance"
    );
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
}

/// A change whose record cannot be written (shared state lost its quorum) is not made, and
/// neither is the corrective one: HAProxy, read once, tells where the server is, rather than
/// reporting it unknown.
#[test]
fn a_corrective_change_that_fails_is_settled_by_what_haproxy_shows() {
    let plan = plan("");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    let app1 = ServerName::new("app1").unwrap();
    let world = World::new();
    engine.start(now);
    let refused = || Event::Changed(Err("cannot write the journal: no quorum".to_owned()));
    engine.handle(
        Lane::Rollout,
        Event::Polled(Polled::new(vec![Ok(world.views.clone())])),
        now,
    );
    let actions = engine.handle(Lane::Server(0), refused(), now);
    assert_eq!(
        actions,
        [Action::Run(
            Lane::Server(0),
            Effect::SetState(app1.clone(), AdminTarget::Ready)
        )]
    );
    let actions = engine.handle(Lane::Server(0), refused(), now);
    assert_eq!(actions, [Action::Run(Lane::Server(0), Effect::Poll)]);
    let actions = engine.handle(
        Lane::Server(0),
        Event::Polled(Polled::new(vec![Ok(world.views.clone())])),
        now,
    );
    let Some(Action::Finish(finish)) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(finish.servers[0].state, ServerState::ReturnedUnrestarted);
    let reason = finish.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("putting it ready failed too") && reason.contains("HAProxy shows it ready"),
        "{reason}"
    );
}
