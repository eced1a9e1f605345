//! Each server's sequence, capacity, and how a single failure ends a rollout.

use super::*;

#[test]
fn each_server_goes_drain_maint_restart_drain_ready_in_plan_order() {
    let mut world = World::new();
    let (finish, _) = world.run(&plan(""));
    assert_eq!(finish.outcome, Outcome::Success);
    let expected: Vec<String> = ["app1", "app2", "app3"]
        .iter()
        .enumerate()
        .flat_map(|(index, server)| {
            vec![
                format!("{server} drain"),
                format!("{server} maint"),
                format!("restart {index}"),
                format!("{server} drain"),
                format!("{server} ready"),
            ]
        })
        .collect();
    assert_eq!(world.changes(), expected);
    assert!(
        finish
            .servers
            .iter()
            .all(|server| server.state == ServerState::Done)
    );
}

#[test]
fn the_restart_waits_for_sessions_to_end() {
    let mut world = World::new();
    world.sessions.push(("app1".into(), 2, 3));
    let (finish, reports) = world.run(&plan(""));
    assert_eq!(finish.outcome, Outcome::Success);
    assert!(reports.contains(&Report::SessionsLeft {
        server: ServerName::new("app1").unwrap(),
        sessions: 2
    }));
    // Three polls saw sessions; only then maintenance and the restart.
    let polls_before_maint = world
        .effects
        .iter()
        .take_while(|effect| !matches!(effect, Effect::SetState(_, AdminTarget::Maint)))
        .filter(|effect| **effect == Effect::Poll)
        .count();
    assert!(polls_before_maint >= 4, "{:?}", world.effects);
}

#[test]
fn too_few_servers_up_means_nothing_is_touched() {
    let mut world = World::new();
    world.views[1].status = "DOWN".into();
    world.views[1].operational = OpState::Stopped;
    let (finish, _) = world.run(&plan("capacity:\n  min_up: 2\n"));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(world.changes().is_empty(), "{:?}", world.changes());
    assert!(finish.reason.unwrap().contains(
        "1 other server(s) in rotation besides app1; min_up 2; out of rotation there: app2 (DOWN)"
    ));
}

#[test]
fn weight_zero_and_up_going_down_do_not_count_as_capacity() {
    let mut world = World::new();
    world.views[1].weight = 0;
    world.views[2].status = "UP 1/2".into();
    let (finish, _) = world.run(&plan(""));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert!(world.changes().is_empty());
}

#[test]
fn a_failed_restart_stops_everything_and_leaves_the_server_out() {
    let mut world = World::new();
    world.restart_fails = Some("exit 3".into());
    let (finish, _) = world.run(&plan(""));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(world.changes(), ["app1 drain", "app1 maint", "restart 0"]);
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
    assert_eq!(
        finish.servers[0].restore,
        ["set server be_app/app1 state ready"]
    );
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

#[test]
fn an_unhealthy_application_never_leaves_maintenance() {
    let mut world = World::new();
    world.health_fails = true;
    let (finish, _) = world.run(&plan("health:\n  within: 5s\n"));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(world.changes(), ["app1 drain", "app1 maint", "restart 0"]);
    assert!(finish.reason.unwrap().contains("GET answered 503"));
}

/// See: #13, the health wait costs a whole poll interval after each restart.
#[test]
fn a_refused_health_probe_is_retried_sooner_and_sooner_up_to_the_poll_interval() {
    let mut world = World::new();
    world.refused_probes = 6;
    let (finish, _) = world.run(&plan("poll_interval: 200ms\n"));
    assert_eq!(finish.outcome, Outcome::Success);
    let backoffs: Vec<u128> = world
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Backoff(wait) => Some(wait.as_millis()),
            _ => None,
        })
        .collect();
    // Per server: 10, 20, 40, 80, 160 ms, then never longer than the poll interval.
    assert_eq!(backoffs[..6], [10, 20, 40, 80, 160, 200]);
    assert_eq!(backoffs.len(), 6 * finish.servers.len());
}

/// See: #13, waits that say why they still wait: once per reason, not once per probe.
#[test]
fn a_wait_reports_its_limit_and_each_new_reason_once() {
    let mut world = World::new();
    world.refused_probes = 6;
    let (_, reports) = world.run(&plan("health:\n  within: 7s\n"));
    let health_limit = reports.iter().find_map(|report| match report {
        Report::Stage {
            server,
            stage: Stage::WaitingForHealth,
            within,
        } if server.as_str() == "app1" => Some(*within),
        _ => None,
    });
    assert_eq!(health_limit, Some(Some(Duration::from_secs(7))));
    let waits: Vec<&str> = reports
        .iter()
        .filter_map(|report| match report {
            Report::Waiting {
                server,
                stage: Stage::WaitingForHealth,
                last,
            } if server.as_str() == "app1" => Some(last.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(waits, ["connection refused"]);
}

#[test]
fn drain_timeout_fail_returns_the_server_unrestarted() {
    let mut world = World::new();
    world.sessions.push(("app1".into(), 1, usize::MAX));
    let (finish, _) = world.run(&plan("drain:\n  timeout: 3s\n  on_timeout: fail\n"));
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(world.changes(), ["app1 drain", "app1 ready"]);
    assert_eq!(finish.servers[0].state, ServerState::ReturnedUnrestarted);
    assert!(finish.servers[0].restore.is_empty());
}

#[test]
fn drain_timeout_force_cuts_sessions_reports_them_and_goes_on() {
    let mut world = World::new();
    world.sessions.push(("app1".into(), 4, usize::MAX));
    let (finish, reports) = world.run(&plan("drain:\n  timeout: 3s\n  on_timeout: force\n"));
    assert_eq!(finish.outcome, Outcome::Success);
    assert_eq!(
        &world.changes()[..4],
        ["app1 drain", "app1 maint", "app1 shutdown", "restart 0"]
    );
    assert_eq!(finish.servers[0].sessions_cut, Some(4));
    assert!(reports.contains(&Report::SessionsCut {
        server: ServerName::new("app1").unwrap(),
        sessions: 4
    }));
}

#[test]
fn status_up_n_m_is_not_back() {
    // After `ready`, a server that shows `UP 1/2` has not passed HAProxy's checks.
    let plan = plan("ready:\n  timeout: 2s\n");
    let mut world = World::new();
    let finish = world.drive(rollout(&plan), &mut Vec::new(), |world, effect, _| {
        // The clock stands still: only the checks can end the wait.
        world.now -= Duration::from_millis(100);
        if *effect == Effect::SetState(ServerName::new("app1").unwrap(), AdminTarget::Ready) {
            world.set(&ServerName::new("app1").unwrap(), AdminTarget::Ready);
            world.views[0].status = "UP 1/2".into();
            return Some(Event::Changed(Ok(())));
        }
        if *effect == Effect::Wait {
            if world.effects.len() > 200 {
                // Long after: the checks passed.
                world.views[0].status = "UP".into();
            }
            return Some(Event::Waited);
        }
        None
    });
    assert_eq!(finish.outcome, Outcome::Success);
    let ready = world
        .effects
        .iter()
        .position(|effect| {
            *effect == Effect::SetState(ServerName::new("app1").unwrap(), AdminTarget::Ready)
        })
        .unwrap();
    assert!(
        world.effects[ready..]
            .iter()
            .take_while(
                |effect| !matches!(effect, Effect::SetState(server, _) if server.as_str() == "app2")
            )
            .filter(|effect| **effect == Effect::Poll)
            .count()
            > 50,
        "app1 counted as back only once exactly UP"
    );
}
