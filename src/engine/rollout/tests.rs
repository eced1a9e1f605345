//! Unit tests of the rollout engine against a fake world: every decision, in milliseconds.

use super::*;
use crate::haproxy::{AdminState, OpState, ServerView};
use crate::plan::BackendName;

mod analysis;
mod batches;
mod canary;
mod hooks;
mod preview;
mod recovery;
mod rollback;
mod sequence;
mod stops;
mod unknown;
mod verify;

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
    /// Probes refused after each restart before the application listens.
    refused_probes: usize,
    /// Since the last restart.
    probes_since_restart: usize,
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
    /// What each server runs, as `verify` reads it.
    versions: Vec<String>,
    /// What a restart installs (`None`: what it ran before).
    deploys: Option<String>,
    /// Servers whose restart leaves what they ran before.
    stale_restarts: Vec<usize>,
    /// Servers whose verify answers what they ran before this many more times after their
    /// restart (an old process still answering).
    old_answers: Vec<(usize, usize)>,
    /// Traffic: per poll, each of these servers in rotation answers (ok, failed) requests.
    traffic: Vec<(usize, u64, u64)>,
    /// At this poll, HAProxy reloads: every counter starts again from zero.
    reload_at_poll: Option<usize>,
    polls: usize,
}

/// How `drive_with` stops the rollout.
enum StopAt {
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
            refused_probes: 0,
            probes_since_restart: 0,
            failing_hooks: Vec::new(),
            failing_restarts: Vec::new(),
            most_out: 0,
            fewest_up: usize::MAX,
            running: None,
            checks_fail: false,
            violations: Vec::new(),
            versions: vec!["1".to_owned(); servers],
            deploys: None,
            stale_restarts: Vec::new(),
            old_answers: Vec::new(),
            traffic: Vec::new(),
            reload_at_poll: None,
            polls: 0,
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
                self.polls += 1;
                if self.reload_at_poll == Some(self.polls) {
                    for view in &mut self.views {
                        view.counters = crate::haproxy::Counters::default();
                    }
                }
                for (index, ok, failed) in &self.traffic {
                    let view = &mut self.views[*index];
                    if view.in_rotation() {
                        view.counters.responses[1] += ok;
                        view.counters.responses[4] += failed;
                    }
                }
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
            Effect::Restart(index) => {
                self.probes_since_restart = 0;
                if let Some(version) = &self.deploys
                    && !self.stale_restarts.contains(index)
                    && self.restart_fails.is_none()
                {
                    self.versions[*index] = version.clone();
                }
                Event::Restarted(
                    self.restart_fails
                        .clone()
                        .map_or(Ok(()), |error| Err(CommandFailure::Failed(error))),
                )
            }
            Effect::ReadCurrent(servers) => Event::CurrentRead(
                servers
                    .iter()
                    .map(|index| Ok(self.versions[*index].clone()))
                    .collect(),
            ),
            Effect::Verify(index) => {
                if let Some((_, left)) = self
                    .old_answers
                    .iter_mut()
                    .find(|(server, left)| server == index && *left > 0)
                {
                    *left -= 1;
                    return Event::Verified(Ok("1".to_owned()));
                }
                Event::Verified(Ok(self.versions[*index].clone()))
            }
            Effect::Probe(_) if self.health_fails => Event::Probed(Err("GET answered 503".into())),
            Effect::Probe(_) => {
                self.probes_since_restart += 1;
                if self.probes_since_restart <= self.refused_probes {
                    return Event::Probed(Err("connection refused".into()));
                }
                Event::Probed(Ok(()))
            }
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
            Effect::Backoff(wait) => {
                self.now += *wait;
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
        self.drive_with(engine, reports, intercept, |_| false, StopAt::Never)
    }

    /// `drive`, stopping as `stop` says right after `when` matches an effect that ran.
    /// Effects of several lanes run one after the other, in the order they were asked for.
    fn drive_with(
        &mut self,
        mut engine: Rollout,
        reports: &mut Vec<Report>,
        mut intercept: impl FnMut(&mut World, &Effect, &mut Rollout) -> Option<Event>,
        when: impl Fn(&Effect) -> bool,
        stop: StopAt,
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
                    StopAt::Safe => {
                        actions = engine.interrupt(self.now);
                        actions.extend(engine.handle(lane, event, self.now));
                        continue;
                    }
                    StopAt::Now => {
                        queue.clear();
                        actions = engine.abort_now(self.now);
                        continue;
                    }
                    StopAt::Never => {}
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

/// Drives `engine` with the fake world, stopping as `stop` says right after `when`
/// matches an effect that ran.
fn run_with(
    world: &mut World,
    engine: Rollout,
    when: impl Fn(&Effect) -> bool,
    stop: StopAt,
) -> Finish {
    world.drive_with(engine, &mut Vec::new(), |_, _, _| None, when, stop)
}

const HOOKS: &str = concat!(
    "hooks:\n",
    "  before_drain:\n    command: /bin/true\n",
    "  after_restart:\n    command: /bin/true\n",
    "  after_ready:\n    command: /bin/true\n",
    "  on_failure:\n    command: /bin/true\n    local: true\n",
);
