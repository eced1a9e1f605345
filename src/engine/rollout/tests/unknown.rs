//! Commands whose outcome is unknown, an unreachable HAProxy, a reload.

use super::*;

#[test]
fn a_lost_ssh_connection_is_settled_by_checks_and_stops_the_rollout() {
    let plan = plan("");
    let engine = rollout(&plan);
    let mut world = World::new();
    let finish = world.drive(engine, &mut Vec::new(), |_, effect, _| match effect {
        Effect::Restart(_) => Some(Event::Restarted(Err(CommandFailure::Unknown(
            "connection lost".into(),
        )))),
        _ => None,
    });
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(finish.reason.unwrap().contains("outcome is unknown"));
    assert_eq!(finish.servers[0].state, ServerState::BackRestartUnknown);
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

/// See: #10, case 1: the connection is lost while the restart still runs on the host.
#[test]
fn a_lost_connection_keeps_the_server_out_until_its_host_shows_the_restart_ended() {
    let plan = plan("");
    let mut world = World::new();
    let mut reports = Vec::new();
    let finish = world.drive(
        rollout(&plan),
        &mut reports,
        |world, effect, _| match effect {
            Effect::Restart(0) => {
                world.running = Some((0, world.now + Duration::from_secs(5)));
                Some(Event::Restarted(Err(CommandFailure::Unknown(
                    "connection lost".into(),
                ))))
            }
            _ => None,
        },
    );
    assert_eq!(world.violations, Vec::<String>::new());
    assert!(
        reports
            .iter()
            .any(|report| matches!(report, Report::CommandEnded { proven: true, .. })),
        "{reports:?}"
    );
    assert!(reports.iter().any(|report| matches!(
        report,
        Report::CommandMayRun {
            what: CommandKind::Restart,
            ..
        }
    )));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(finish.servers[0].state, ServerState::BackRestartUnknown);
    assert_eq!(finish.servers[0].may_run, None, "it ended");
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

/// See: #10: a host that cannot be asked keeps the server out until the remote bound
/// (restart.timeout + the kill grace + a connection set-up) has passed.
#[test]
fn a_host_that_cannot_be_asked_keeps_the_server_out_until_the_remote_bound() {
    let plan = plan("");
    let mut world = World::new();
    world.checks_fail = true;
    let mut sent = None;
    let mut probed = None;
    let finish = world.drive(
        rollout(&plan),
        &mut Vec::new(),
        |world, effect, _| match effect {
            Effect::Restart(0) => {
                sent = Some(world.now);
                world.running = Some((0, world.now + Duration::from_secs(120)));
                Some(Event::Restarted(Err(CommandFailure::Unknown(
                    "connection lost".into(),
                ))))
            }
            Effect::Probe(0) if probed.is_none() => {
                probed = Some(world.now);
                None
            }
            _ => None,
        },
    );
    assert_eq!(world.violations, Vec::<String>::new());
    let waited = probed.unwrap() - sent.unwrap();
    assert!(
        waited >= plan.remote_bound(plan.restart.timeout),
        "probed after {waited:?}"
    );
    assert_eq!(finish.servers[0].state, ServerState::BackRestartUnknown);
}

/// An after_restart hook whose outcome is unknown holds the server out just the same.
#[test]
fn an_after_restart_hook_lost_midway_holds_the_server_out_until_it_ended() {
    let plan = plan("hooks:\n  after_restart:\n    command: /bin/true\n");
    let mut world = World::new();
    let finish = world.drive(
        rollout(&plan),
        &mut Vec::new(),
        |world, effect, _| match effect {
            Effect::Hook(HookPoint::AfterRestart, 0) => {
                world.running = Some((0, world.now + Duration::from_secs(3)));
                Some(Event::HookDone(Err(CommandFailure::Unknown(
                    "connection lost".into(),
                ))))
            }
            _ => None,
        },
    );
    assert_eq!(world.violations, Vec::<String>::new());
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(finish.servers[0].state, ServerState::BackRestartUnknown);
}

/// `abort --now` during the restart: the summary says the restart may still run, and
/// until when.
#[test]
fn abort_now_during_the_restart_says_until_when_it_may_still_run() {
    let plan = plan("");
    let mut world = World::new();
    let mut sent = None;
    let finish = world.drive_with(
        rollout(&plan),
        &mut Vec::new(),
        |world, effect, _| {
            if let Effect::Restart(0) = effect {
                sent = Some(world.now);
            }
            None
        },
        |effect| matches!(effect, Effect::Restart(0)),
        StopAt::Now,
    );
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    let may_run = finish.servers[0]
        .may_run
        .expect("the restart may still run");
    assert_eq!(may_run.what, CommandKind::Restart);
    assert!(may_run.until >= sent.unwrap() + plan.restart.timeout);
}

#[test]
fn an_haproxy_unreachable_past_its_deadline_stops_the_rollout() {
    let plan = plan("");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    let views = vec![view("app1"), view("app2"), view("app3")];
    engine.start(now);
    engine.handle(
        Lane::Rollout,
        Event::Polled(Polled::new(vec![Ok(views)])),
        now,
    );
    engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    let unreadable = || Event::Polled(Polled::new(vec![Err("connection refused".into())]));
    let actions = engine.handle(Lane::Server(0), unreadable(), now + Duration::from_secs(1));
    assert!(
        actions.contains(&Action::Run(Lane::Server(0), Effect::Wait)),
        "still within unreachable_timeout: {actions:?}"
    );
    engine.handle(Lane::Server(0), Event::Waited, now + Duration::from_secs(2));
    let actions = engine.handle(Lane::Server(0), unreadable(), now + Duration::from_secs(40));
    assert_eq!(
        actions,
        [Action::Run(
            Lane::Server(0),
            Effect::SetState(ServerName::new("app1").unwrap(), AdminTarget::Ready)
        )],
        "past it: put the server back (it was never restarted) and stop"
    );
}

#[test]
fn the_expected_state_follows_the_phase() {
    let plan = plan("");
    let mut engine = rollout(&plan);
    let now = Instant::now();
    let app1 = ServerName::new("app1").unwrap();
    let views = || {
        Event::Polled(Polled::new(vec![Ok(vec![
            view("app1"),
            view("app2"),
            view("app3"),
        ])]))
    };
    assert_eq!(engine.expected_states(), []);
    engine.start(now);
    assert_eq!(engine.expected_states(), [], "only checking capacity");
    engine.handle(Lane::Rollout, views(), now);
    assert_eq!(
        engine.expected_states(),
        [(app1.clone(), AdminTarget::Drain)]
    );
    engine.handle(Lane::Server(0), Event::Changed(Ok(())), now);
    engine.handle(Lane::Server(0), views(), now);
    assert_eq!(engine.expected_states(), [(app1, AdminTarget::Maint)]);
}

/// Property 7 and 3: a reload while app1 drains. The engine says what to put back, and the
/// old process, which still serves app1's sessions where the new socket cannot see them,
/// holds app1's restart: until the driver sees it gone (same machine), or, for a remote
/// HAProxy it cannot see, until drain.timeout decides.
#[test]
fn a_reload_while_draining_puts_the_drain_back_and_the_old_process_holds_the_restart() {
    let plan = plan("drain:\n  timeout: 5s\n");
    let app1 = ServerName::new("app1").unwrap();
    for visible in [true, false] {
        let mut world = World::new();
        let mut reloaded = false;
        let mut reapplied = Vec::new();
        let mut polls_after = 0;
        let finish = world.drive(rollout(&plan), &mut Vec::new(), |world, effect, engine| {
            // The fake world's reload: the runtime state is dropped, app1 takes traffic
            // again, and the old process is found gone after three polls.
            match effect {
                Effect::Poll if !reloaded && world.views[0].admin.draining() => {
                    reloaded = true;
                    world.set(&app1, AdminTarget::Ready);
                    reapplied = engine.reloaded(Some(OldProcess {
                        instance: 0,
                        pid: 4242,
                        visible,
                    }));
                    for (server, target) in &reapplied {
                        world.set(server, *target);
                    }
                    None
                }
                Effect::Poll if reloaded => {
                    polls_after += 1;
                    if polls_after == 3 {
                        engine.old_processes_gone(&engine.old_processes());
                    }
                    None
                }
                _ => None,
            }
        });
        assert_eq!(reapplied, [(app1.clone(), AdminTarget::Drain)]);
        let restart = world
            .effects
            .iter()
            .position(|effect| *effect == Effect::Restart(0));
        let polls_before_restart = world.effects[..restart.unwrap_or(world.effects.len())]
            .iter()
            .filter(|effect| **effect == Effect::Poll)
            .count();
        if visible {
            assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
            assert!(
                polls_before_restart >= 4,
                "held until the old process was gone"
            );
        } else {
            // drain.timeout with on_timeout: fail: back to traffic unrestarted, stopped.
            assert_eq!(
                restart, None,
                "never restarted under the old process's sessions"
            );
            assert_eq!(finish.servers[0].state, ServerState::ReturnedUnrestarted);
        }
    }
}
