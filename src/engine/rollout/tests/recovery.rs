//! Every starting point of a recovery keeps properties 3, 9 and 10 (docs/safety.md).

use super::*;

/// The live state a recovery starts from, in the fake world.
#[derive(Debug, Clone, Copy)]
enum Found {
    Ready,
    /// Draining, with two sessions left for three polls.
    Draining,
    Maintenance,
    /// In maintenance, with a session left for three polls.
    MaintenanceWithSessions,
}

/// See: #10. Every recovery starting point: each mode × each live admin state × each fact
/// about the restart × each command that may still run. In every cell no restart starts
/// with sessions on the server or while it may take traffic, no server leaves maintenance
/// (nor is probed) while a command may still run, settling restarts nothing, and the
/// server's reported state is what the fake HAProxy shows at the end.
#[test]
fn every_recovery_starting_point_keeps_properties_3_9_and_10() {
    let plan = plan(
        "hooks:\n  after_restart:\n    command: /bin/true\n  before_drain:\n    command: /bin/true\n",
    );
    let app2 = ServerName::new("app2").unwrap();
    let mut cells = 0;
    for mode in [Mode::Resume, Mode::Settle] {
        for found in [
            Found::Ready,
            Found::Draining,
            Found::Maintenance,
            Found::MaintenanceWithSessions,
        ] {
            for restart in [
                RestartFact::NotSent,
                RestartFact::Succeeded,
                RestartFact::MayHaveRun,
            ] {
                for what in [
                    None,
                    Some(CommandKind::Restart),
                    Some(CommandKind::Hook(HookPoint::AfterRestart)),
                    Some(CommandKind::Hook(HookPoint::BeforeDrain)),
                ] {
                    cells += 1;
                    let cell = format!("{mode:?} {found:?} {restart:?} {what:?}");
                    let mut world = World::new();
                    match found {
                        Found::Ready => {}
                        Found::Draining => {
                            world.set(&app2, AdminTarget::Drain);
                            world.sessions.push(("app2".into(), 2, 3));
                        }
                        Found::Maintenance => world.set(&app2, AdminTarget::Maint),
                        Found::MaintenanceWithSessions => {
                            world.set(&app2, AdminTarget::Maint);
                            world.sessions.push(("app2".into(), 1, 3));
                        }
                    }
                    let may_run = what.map(|what| MayRun {
                        what,
                        until: world.now + Duration::from_secs(4),
                    });
                    if may_run.is_some() {
                        world.running = Some((1, world.now + Duration::from_secs(3)));
                    }
                    let engine = Rollout::recover(
                        &plan,
                        topology(&plan),
                        limits(&plan),
                        mode,
                        &[0],
                        vec![Recovered {
                            index: 1,
                            restart,
                            may_run,
                        }],
                    );
                    let mut reports = Vec::new();
                    let finish = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        world.drive(engine, &mut reports, |_, _, _| None)
                    }))
                    .unwrap_or_else(|_| panic!("{cell}: {:?}", world.violations));
                    let restarts = world
                        .effects
                        .iter()
                        .filter(|effect| matches!(effect, Effect::Restart(1)))
                        .count();
                    if mode == Mode::Settle {
                        assert_eq!(restarts, 0, "{cell}: settling restarts nothing");
                        assert!(
                            !world
                                .effects
                                .iter()
                                .any(|effect| matches!(effect, Effect::Restart(2))),
                            "{cell}"
                        );
                    }
                    assert!(
                        reports
                            .iter()
                            .any(|report| matches!(report, Report::Found { .. })),
                        "{cell}: the decision is reported"
                    );
                    let view = world.views[1].clone();
                    let state = finish.servers[1].state;
                    match state {
                        ServerState::Done
                        | ServerState::BackRestartUnknown
                        | ServerState::ReturnedUnrestarted => assert!(
                            view.admin.ready() && view.status == "UP",
                            "{cell}: {state:?} but {view:?}"
                        ),
                        ServerState::OutOfRotation => {
                            assert!(view.admin.in_maintenance(), "{cell}: {view:?}")
                        }
                        other => panic!("{cell}: ends {other:?}, {view:?}"),
                    }
                    if mode == Mode::Resume {
                        assert_eq!(finish.outcome, Outcome::Success, "{cell}: {finish:?}");
                        assert_eq!(state, ServerState::Done, "{cell}");
                        assert!(restarts <= 1, "{cell}: {restarts} restarts");
                        assert_eq!(
                            finish.servers[2].state,
                            ServerState::Done,
                            "{cell}: the rest follows"
                        );
                        assert_eq!(finish.servers[0].state, ServerState::DoneEarlier, "{cell}");
                    } else {
                        assert_eq!(finish.outcome, Outcome::Interrupted, "{cell}");
                        assert_eq!(finish.servers[2].state, ServerState::Untouched, "{cell}");
                    }
                }
            }
        }
    }
    assert_eq!(cells, 96);
}
