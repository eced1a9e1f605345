//! Canary servers and the pause after them.

use super::*;

#[test]
fn a_manual_canary_pauses_after_its_servers_and_resume_goes_on_without_pausing_again() {
    let plan = plan("canary:\n  servers: 1\n  pause: manual\n");
    let mut world = World::new();
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Paused);
    assert_eq!(finish.servers[0].state, ServerState::Done);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
    assert!(
        !world
            .changes()
            .iter()
            .any(|change| change.starts_with("app2"))
    );

    let engine = resume(&plan, &[0], &[]);
    let finish = world.drive(engine, &mut Vec::new(), |_, _, _| None);
    assert_eq!(finish.outcome, Outcome::Success);
    assert_eq!(finish.servers[0].state, ServerState::DoneEarlier);
    assert_eq!(finish.servers[2].state, ServerState::Done);
}

#[test]
fn a_timed_canary_waits_then_checks_the_canaries_before_going_on() {
    let plan = plan("canary:\n  servers: 2\n  pause: 30s\n");
    let mut world = World::new();
    let (finish, _) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success);
    let position = |wanted: &Effect| {
        world
            .effects
            .iter()
            .position(|effect| effect == wanted)
            .unwrap()
    };
    let app2_back = position(&Effect::SetState(
        ServerName::new("app2").unwrap(),
        AdminTarget::Ready,
    ));
    let app3_drain = position(&Effect::SetState(
        ServerName::new("app3").unwrap(),
        AdminTarget::Drain,
    ));
    let between = &world.effects[app2_back..app3_drain];
    // In the fake world a wait takes 1.1 s (1 s, plus 0.1 s every effect takes): the
    // 30 s pause is 28 waits. Then a poll, and a probe of each canary, before the next
    // server is touched.
    assert!(
        between
            .iter()
            .filter(|effect| **effect == Effect::Wait)
            .count()
            >= 28
    );
    assert!(between.contains(&Effect::Probe(0)) && between.contains(&Effect::Probe(1)));
}

#[test]
fn a_canary_that_goes_down_during_the_pause_stops_the_rollout() {
    let plan = plan("canary:\n  servers: 1\n  pause: 5s\n");
    let engine = rollout(&plan);
    let mut world = World::new();
    let finish = world.drive(engine, &mut Vec::new(), |world, effect, engine| {
        if *effect == Effect::Wait && engine.results[0].state == ServerState::Done {
            world.views[0].status = "DOWN".into();
            world.views[0].operational = crate::haproxy::OpState::Stopped;
        }
        None
    });
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(finish.reason.unwrap().contains("canary check failed"));
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}
