//! Unit tests of the rollout engine against a fake world: every decision, in milliseconds.

use super::*;
use crate::haproxy::{AdminState, OpState};
use crate::plan::BackendName;

const PLAN: &str = "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
    backends: [be_app]\nservers:\n  - name: app1\n  - name: app2\n  - name: app3\n\
    restart:\n  command: /bin/true\n";

/// A fake HAProxy: server views that follow the state changes the engine makes, with
/// checks that pass as soon as a server leaves maintenance.
struct World {
    views: Vec<ServerView>,
    now: Instant,
    effects: Vec<Effect>,
    /// Sessions left on a server until this many polls have passed.
    sessions: Vec<(String, u64, usize)>,
    restart_fails: Option<String>,
    health_fails: bool,
    /// Hooks that fail: (point, server index).
    failing_hooks: Vec<(HookPoint, usize)>,
    /// Restarts that fail: server indexes.
    failing_restarts: Vec<usize>,
    /// The most servers out of rotation at once, and the fewest in rotation, seen.
    most_out: usize,
    fewest_up: usize,
    /// A command of the server at this index really runs on its host until then.
    running: Option<(usize, Instant)>,
    /// Its host cannot be asked (a check fails).
    checks_fail: bool,
    /// Effects that broke property 9 (docs/safety.md): the server left maintenance, or was probed, while
    /// its command could still run.
    violations: Vec<String>,
}

/// How `drive_with` stops the rollout.
enum Stop {
    /// Like `abort`: at the next safe point.
    Safe,
    /// Like `abort --now`: every effect in flight is abandoned.
    Now,
    Never,
}

fn view(server: &str) -> ServerView {
    ServerView::fixture(server)
}

impl World {
    fn new() -> Self {
        World::with(3)
    }

    /// `servers` servers, app1, app2, ..., all UP.
    fn with(servers: usize) -> Self {
        World {
            views: (1..=servers).map(|n| view(&format!("app{n}"))).collect(),
            now: Instant::now(),
            effects: Vec::new(),
            sessions: Vec::new(),
            restart_fails: None,
            health_fails: false,
            failing_hooks: Vec::new(),
            failing_restarts: Vec::new(),
            most_out: 0,
            fewest_up: usize::MAX,
            running: None,
            checks_fail: false,
            violations: Vec::new(),
        }
    }

    fn set(&mut self, server: &ServerName, target: AdminTarget) {
        let view = self
            .views
            .iter_mut()
            .find(|view| view.server == server.as_str())
            .unwrap();
        match target {
            AdminTarget::Drain => {
                view.admin = AdminState(AdminState::FDRAIN);
                view.status = "DRAIN".into();
                view.operational = OpState::Running;
            }
            AdminTarget::Maint => {
                view.admin = AdminState(AdminState::FMAINT);
                view.status = "MAINT".into();
                view.operational = OpState::Stopped;
            }
            AdminTarget::Ready => {
                view.admin = AdminState(0);
                view.status = "UP".into();
                view.operational = OpState::Running;
            }
        }
    }

    fn perform(&mut self, effect: &Effect) -> Event {
        self.now += Duration::from_millis(100);
        if let Effect::Restart(index) = effect {
            let name = format!("app{}", index + 1);
            let view = self.views.iter().find(|view| view.server == name).unwrap();
            let pending = self
                .sessions
                .iter()
                .any(|(server, sessions, polls)| *server == name && *sessions > 0 && *polls > 0);
            if view.sessions > 0 || pending || !view.admin.in_maintenance() {
                self.violations.push(format!(
                    "restart of {name} with sessions or in traffic: {view:?}"
                ));
            }
        }
        if let Some((index, until)) = self.running
            && self.now < until
        {
            let name = format!("app{}", index + 1);
            let breaks = match effect {
                // Back to traffic, or out of maintenance (checks and persistent traffic
                // resume); draining a server that takes traffic is taking it out.
                Effect::SetState(server, target) => {
                    let in_maintenance = self
                        .views
                        .iter()
                        .any(|view| view.server == name && view.admin.in_maintenance());
                    server.as_str() == name
                        && (*target == AdminTarget::Ready
                            || (*target == AdminTarget::Drain && in_maintenance))
                }
                Effect::Probe(probed) | Effect::Restart(probed) => *probed == index,
                _ => false,
            };
            if breaks {
                self.violations
                    .push(format!("{effect:?} while its command runs"));
            }
        }
        match effect {
            Effect::Poll => {
                for (server, sessions, polls) in &mut self.sessions {
                    let view = self
                        .views
                        .iter_mut()
                        .find(|view| &view.server == server)
                        .unwrap();
                    view.sessions = if *polls == 0 { 0 } else { *sessions };
                    *polls = polls.saturating_sub(1);
                }
                Event::Polled(Polled::new(vec![Ok(self.views.clone())]))
            }
            Effect::SetState(server, target) => {
                self.set(server, *target);
                Event::Changed(Ok(()))
            }
            Effect::ShutdownSessions(server) => {
                self.sessions.retain(|(name, _, _)| name != server.as_str());
                self.views
                    .iter_mut()
                    .find(|view| view.server == server.as_str())
                    .unwrap()
                    .sessions = 0;
                Event::Changed(Ok(()))
            }
            Effect::Restart(index) if self.failing_restarts.contains(index) => {
                Event::Restarted(Err(CommandFailure::Failed("exit 1".into())))
            }
            Effect::Restart(_) => Event::Restarted(
                self.restart_fails
                    .clone()
                    .map_or(Ok(()), |error| Err(CommandFailure::Failed(error))),
            ),
            Effect::Probe(_) if self.health_fails => Event::Probed(Err("GET answered 503".into())),
            Effect::Probe(_) => Event::Probed(Ok(())),
            Effect::Hook(point, index) => {
                Event::HookDone(if self.failing_hooks.contains(&(*point, *index)) {
                    Err(CommandFailure::Failed("exit 1".into()))
                } else {
                    Ok(())
                })
            }
            Effect::Wait => {
                self.now += Duration::from_secs(1);
                Event::Waited
            }
            Effect::CheckCommand(_) if self.checks_fail => {
                Event::CommandChecked(Err("ssh: connection refused".into()))
            }
            Effect::CheckCommand(index) => Event::CommandChecked(Ok(match self.running {
                Some((running, until)) if running == *index && self.now < until => {
                    CommandState::Running
                }
                _ => CommandState::Ended,
            })),
        }
    }

    /// Runs the engine to its finish; panics if it runs away.
    fn run(&mut self, plan: &Plan) -> (Finish, Vec<Report>) {
        let mut reports = Vec::new();
        let finish = self.drive(rollout(plan), &mut reports, |_, _, _| None);
        (finish, reports)
    }

    /// Feeds `engine` the results of its effects until it finishes. `intercept` sees
    /// each effect before the fake world performs it and may answer it instead.
    fn drive(
        &mut self,
        engine: Rollout,
        reports: &mut Vec<Report>,
        intercept: impl FnMut(&mut World, &Effect, &mut Rollout) -> Option<Event>,
    ) -> Finish {
        self.drive_with(engine, reports, intercept, |_| false, Stop::Never)
    }

    /// `drive`, stopping as `stop` says right after `when` matches an effect that ran.
    /// Effects of several lanes run one after the other, in the order they were asked for.
    fn drive_with(
        &mut self,
        mut engine: Rollout,
        reports: &mut Vec<Report>,
        mut intercept: impl FnMut(&mut World, &Effect, &mut Rollout) -> Option<Event>,
        when: impl Fn(&Effect) -> bool,
        stop: Stop,
    ) -> Finish {
        let mut queue: std::collections::VecDeque<(Lane, Effect)> = Default::default();
        let mut actions = engine.start(self.now);
        let mut delivered = false;
        for _ in 0..100_000 {
            for action in actions.drain(..) {
                match action {
                    Action::Run(lane, effect) => {
                        assert!(
                            queue.iter().all(|(other, _)| *other != lane),
                            "one effect at a time per lane: {lane:?} {effect:?} {queue:?}"
                        );
                        queue.push_back((lane, effect));
                    }
                    Action::Report(report) => reports.push(report),
                    Action::Finish(finish) => {
                        // Properties 3, 9 and 10 hold in every test.
                        assert_eq!(self.violations, Vec::<String>::new());
                        return finish;
                    }
                }
            }
            let (lane, effect) = queue.pop_front().expect("an effect or a finish");
            self.effects.push(effect.clone());
            self.observe();
            let event = match intercept(self, &effect, &mut engine) {
                Some(event) => event,
                None => self.perform(&effect),
            };
            if !delivered && when(&effect) {
                delivered = true;
                match stop {
                    Stop::Safe => {
                        actions = engine.interrupt(self.now);
                        actions.extend(engine.handle(lane, event, self.now));
                        continue;
                    }
                    Stop::Now => {
                        queue.clear();
                        actions = engine.abort_now(self.now);
                        continue;
                    }
                    Stop::Never => {}
                }
            }
            actions = engine.handle(lane, event, self.now);
        }
        panic!("the engine never finished")
    }

    /// Records how many servers are out of rotation, and how many in rotation, right now.
    fn observe(&mut self) {
        let out = self.views.iter().filter(|view| !view.admin.ready()).count();
        let up = self.views.iter().filter(|view| view.in_rotation()).count();
        self.most_out = self.most_out.max(out);
        self.fewest_up = self.fewest_up.min(up);
    }

    fn changes(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::SetState(server, target) => Some(format!("{server} {}", target.as_str())),
                Effect::ShutdownSessions(server) => Some(format!("{server} shutdown")),
                Effect::Restart(index) => Some(format!("restart {index}")),
                Effect::Hook(point, index) => Some(format!("{} {index}", point.as_str())),
                _ => None,
            })
            .collect()
    }
}

fn topology(plan: &Plan) -> Topology {
    match &plan.backends {
        crate::plan::Backends::Listed(names) => {
            Topology::uniform(plan.haproxy.len(), plan.servers.len(), names)
        }
        crate::plan::Backends::Auto => panic!("the engine tests use listed backends"),
    }
}

fn plan(extra: &str) -> Plan {
    crate::plan::parse(&format!("{PLAN}{extra}")).unwrap()
}

/// A plan of `servers` servers, app1 to appN, in one backend.
fn plan_of(servers: usize, extra: &str) -> Plan {
    let names: String = (1..=servers)
        .map(|n| format!("  - name: app{n}\n"))
        .collect();
    crate::plan::parse(&format!(
        "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
         backends: [be_app]\nservers:\n{names}restart:\n  command: /bin/true\n{extra}"
    ))
    .unwrap()
}

/// Resumes with `done` restarted before and `recovered` in flight (no command running).
fn resume(plan: &Plan, done: &[usize], recovered: &[(usize, RestartFact)]) -> Rollout {
    recover(plan, Mode::Resume, done, recovered)
}

/// Settles `recovered`, left in flight by a killed run.
fn settle(plan: &Plan, recovered: &[(usize, RestartFact)]) -> Rollout {
    recover(plan, Mode::Settle, &[], recovered)
}

fn recover(plan: &Plan, mode: Mode, done: &[usize], recovered: &[(usize, RestartFact)]) -> Rollout {
    let recovered = recovered
        .iter()
        .map(|(index, restart)| Recovered {
            index: *index,
            restart: *restart,
            may_run: None,
        })
        .collect();
    Rollout::recover(plan, topology(plan), limits(plan), mode, done, recovered)
}

/// The limits of the plan, every backend holding exactly the plan's servers.
fn limits(plan: &Plan) -> Limits {
    Limits::new(plan.capacity.max_unavailable, &topology(plan), |_, _| {
        plan.servers.len()
    })
}

fn rollout(plan: &Plan) -> Rollout {
    Rollout::new(plan, topology(plan), limits(plan))
}

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
    assert!(
        finish
            .reason
            .unwrap()
            .contains("1 other server(s) in rotation besides app1; min_up 2")
    );
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

/// Drives `engine` with the fake world, stopping as `stop` says right after `when`
/// matches an effect that ran.
fn run_with(
    world: &mut World,
    engine: Rollout,
    when: impl Fn(&Effect) -> bool,
    stop: Stop,
) -> Finish {
    world.drive_with(engine, &mut Vec::new(), |_, _, _| None, when, stop)
}

#[test]
fn an_abort_during_the_restart_lets_it_finish_returns_the_healthy_server_and_starts_no_other() {
    let plan = plan("");
    let mut world = World::new();
    let finish = run_with(
        &mut world,
        rollout(&plan),
        |effect| matches!(effect, Effect::Restart(0)),
        Stop::Safe,
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
        Stop::Now,
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
        Stop::Never,
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
        Stop::Never,
    );
    assert_eq!(
        world.changes(),
        Vec::<String>::new(),
        "an unhealthy server never leaves maintenance"
    );
    assert_eq!(finish.servers[0].state, ServerState::OutOfRotation);
}

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
        Stop::Now,
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

const HOOKS: &str = concat!(
    "hooks:\n",
    "  before_drain:\n    command: /bin/true\n",
    "  after_restart:\n    command: /bin/true\n",
    "  after_ready:\n    command: /bin/true\n",
    "  on_failure:\n    command: /bin/true\n    local: true\n",
);

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
        Stop::Now,
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
        Stop::Safe,
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
        Stop::Now,
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
    engine.handle(Lane::Rollout, all_up(), now);
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
    let all_up = || Event::Polled(Polled::new(vec![Ok(World::with(4).views)]));
    engine.start(now);
    engine.handle(Lane::Rollout, all_up(), now);
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
