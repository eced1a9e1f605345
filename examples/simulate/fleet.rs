//! The simulated fleet: each server's random times, the views every HAProxy shows of it at
//! a simulated moment, and the loop that hands the engine each effect's result when its
//! simulated time comes, as the driver would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use haproxy_rollout::engine::rollout::{
    Action, CommandState, Effect, Event, Finish, Lane, Polled, Rollout,
};
use haproxy_rollout::haproxy::{AdminState, AdminTarget, Info, OpState, ServerView, Snapshot};

use super::{Options, server_name};

pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// HAProxy's checks: `inter 2s rise 2`.
const CHECK_INTER: Duration = Duration::from_secs(2);
const CHECK_RISE: u32 = 2;
/// One runtime-API change on every HAProxy and backend, in lockstep.
const CHANGE_LATENCY: Duration = Duration::from_millis(3);
/// One health probe of the application.
const PROBE_LATENCY: Duration = Duration::from_millis(5);

/// splitmix64: small, fast, and the same numbers for the same seed everywhere.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        low + (high - low).mul_f64(self.unit())
    }

    /// Exponential with this mean, at most `cap`.
    fn exponential(&mut self, mean: Duration, cap: Duration) -> Duration {
        mean.mul_f64(-(1.0 - self.unit()).ln()).min(cap)
    }
}

/// What each server does when the rollout acts on it, drawn once per server.
struct Server {
    backend: usize,
    /// How long its sessions take to end once it is drained.
    drain: Duration,
    /// How long its restart command runs.
    restart: Duration,
    /// From the end of the restart until the application answers its health URL.
    startup: Duration,
    /// From leaving maintenance until HAProxy's checks pass (`rise` checks, the first
    /// one at a random point of the interval).
    checks: Duration,
    admin: AdminTarget,
    drained_at: Option<Duration>,
    restart_ends: Option<Duration>,
    out_of_maint_at: Option<Duration>,
}

impl Server {
    fn view(&self, name: &str, backend: &str, now: Duration) -> ServerView {
        let app_up = self
            .restart_ends
            .is_none_or(|end| now >= end + self.startup);
        let checks_pass = app_up
            && self
                .out_of_maint_at
                .is_none_or(|since| now >= since + self.checks);
        let sessions = match self.drained_at {
            Some(at) if self.admin == AdminTarget::Drain && now < at + self.drain => 3,
            Some(_) => 0,
            None => 3,
        };
        let (admin, status, check, operational) = match self.admin {
            AdminTarget::Maint => (AdminState::FMAINT, "MAINT", "", OpState::Stopped),
            AdminTarget::Drain if checks_pass => {
                (AdminState::FDRAIN, "DRAIN", "L7OK", OpState::Running)
            }
            AdminTarget::Drain => (AdminState::FDRAIN, "DOWN", "L4CON", OpState::Stopped),
            AdminTarget::Ready if checks_pass => (0, "UP", "L7OK", OpState::Running),
            AdminTarget::Ready => (0, "DOWN", "L4CON", OpState::Stopped),
        };
        ServerView {
            backend: backend.to_owned(),
            server: name.to_owned(),
            admin: AdminState(admin),
            operational,
            status: status.to_owned(),
            check_status: check.to_owned(),
            check_health: Some(if checks_pass { CHECK_RISE + 1 } else { 0 }),
            check_rise: Some(CHECK_RISE),
            check_fall: Some(2),
            sessions: if self.admin == AdminTarget::Maint {
                0
            } else {
                sessions
            },
            weight: 1,
            address: "10.0.0.1".into(),
            port: Some(8080),
            // The simulation judges no canary.
            counters: Default::default(),
        }
    }
}

pub struct Fleet {
    servers: Vec<Server>,
    names: Vec<String>,
    backend_names: Vec<String>,
    instances: usize,
    pub restarts: Vec<u32>,
}

/// What a run measured.
pub struct Run {
    pub finish: Option<Finish>,
    pub length: Duration,
    pub decisions: u64,
    pub engine_time: Duration,
    pub slowest: Duration,
    pub polls: u64,
    pub lanes_served: u64,
    pub most_out: usize,
    pub most_in_flight: usize,
}

/// An effect that completes at a simulated time.
struct Pending {
    at: Duration,
    order: u64,
    lane: Lane,
    effect: Effect,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl Fleet {
    pub fn new(options: &Options) -> Fleet {
        let mut random = Random(options.seed);
        let servers = (0..options.servers)
            .map(|index| Server {
                backend: index % options.backends,
                drain: random.exponential(Duration::from_secs(5), Duration::from_secs(60)),
                restart: random.between(Duration::from_secs(3), Duration::from_secs(15)),
                startup: random.between(Duration::ZERO, Duration::from_secs(2)),
                checks: CHECK_INTER.mul_f64(random.unit()) + CHECK_INTER * (CHECK_RISE - 1),
                admin: AdminTarget::Ready,
                drained_at: None,
                restart_ends: None,
                out_of_maint_at: None,
            })
            .collect();
        Fleet {
            servers,
            names: (0..options.servers).map(server_name).collect(),
            backend_names: (0..options.backends).map(|b| format!("be{b:02}")).collect(),
            instances: options.haproxy,
            restarts: vec![0; options.servers],
        }
    }

    fn views(&self, now: Duration) -> Vec<ServerView> {
        self.servers
            .iter()
            .zip(&self.names)
            .map(|(server, name)| server.view(name, &self.backend_names[server.backend], now))
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        let info = Info {
            version: "2.8.25".into(),
            pid: 1,
            start_time_sec: Some(1),
            uptime_sec: Some(1),
            stopping: false,
            node: "lb".into(),
        };
        Snapshot::new(
            info,
            Some(haproxy_rollout::haproxy::Level::Admin),
            self.views(Duration::ZERO),
        )
    }

    /// One HAProxy read: `show stat` and `show servers state` grow with the servers.
    fn poll_latency(&self) -> Duration {
        Duration::from_millis(5) + Duration::from_micros(3) * self.servers.len() as u32
    }

    /// What no scheduler could beat: in each backend, its servers' own times shared out
    /// over `limit` servers at once, and never less than its slowest server.
    pub fn lower_bound(&self, limit: usize) -> Duration {
        let mut per_backend: HashMap<usize, (Duration, Duration)> = HashMap::new();
        for server in &self.servers {
            let own = server.drain + server.restart + server.startup + server.checks;
            let entry = per_backend.entry(server.backend).or_default();
            entry.0 += own;
            entry.1 = entry.1.max(own);
        }
        per_backend
            .values()
            .map(|(sum, slowest)| (*sum / limit as u32).max(*slowest))
            .max()
            .unwrap_or_default()
    }

    pub fn run(&mut self, mut engine: Rollout, limit: usize) -> Run {
        let origin = Instant::now();
        let mut run = Run {
            finish: None,
            length: Duration::ZERO,
            decisions: 0,
            engine_time: Duration::ZERO,
            slowest: Duration::ZERO,
            polls: 0,
            lanes_served: 0,
            most_out: 0,
            most_in_flight: 0,
        };
        let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
        let mut order = 0;
        let mut now = Duration::ZERO;
        // Lanes waiting for the next poll, and when the poll in flight ends.
        let mut poll_waiting: Vec<Lane> = Vec::new();
        let mut poll_in_flight: Option<(Duration, Vec<Lane>)> = None;
        let mut out_per_backend = vec![0usize; self.backend_names.len()];
        let mut in_flight = 0usize;

        let decide = |run: &mut Run, step: &mut dyn FnMut() -> Vec<Action>| {
            let started = Instant::now();
            let actions = step();
            let took = started.elapsed();
            run.decisions += 1;
            run.engine_time += took;
            run.slowest = run.slowest.max(took);
            actions
        };
        let mut actions = decide(&mut run, &mut || engine.start(origin));
        loop {
            for action in actions.drain(..) {
                match action {
                    Action::Report(_) => {}
                    Action::Finish(finish) => {
                        run.finish = Some(finish);
                        run.length = now;
                        return run;
                    }
                    Action::Run(lane, effect) => {
                        let latency = match &effect {
                            Effect::Poll => {
                                poll_waiting.push(lane);
                                continue;
                            }
                            Effect::SetState(..) | Effect::ShutdownSessions(_) => CHANGE_LATENCY,
                            Effect::Restart(index) => {
                                self.restarts[*index] += 1;
                                self.servers[*index].restart
                            }
                            Effect::Probe(_) | Effect::Verify(_) | Effect::ReadCurrent(_) => {
                                PROBE_LATENCY
                            }
                            Effect::Wait => POLL_INTERVAL,
                            Effect::Backoff(wait) => *wait,
                            Effect::CheckCommand(_) | Effect::Hook(..) => PROBE_LATENCY,
                        };
                        order += 1;
                        queue.push(Reverse(Pending {
                            at: now + latency,
                            order,
                            lane,
                            effect,
                        }));
                    }
                }
            }
            if poll_in_flight.is_none() && !poll_waiting.is_empty() {
                let lanes = std::mem::take(&mut poll_waiting);
                poll_in_flight = Some((now + self.poll_latency(), lanes));
            }
            // The next thing to happen: a poll that ends, or another effect.
            let poll_first = match (&poll_in_flight, queue.peek()) {
                (Some((at, _)), Some(Reverse(next))) => *at <= next.at,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => panic!("the engine waits for nothing"),
            };
            if poll_first {
                let (at, lanes) = poll_in_flight.take().unwrap();
                now = at;
                // As the driver does: one poll, its views shared by every lane that asked.
                let views = Polled::new((0..self.instances).map(|_| Ok(self.views(now))).collect());
                run.polls += 1;
                let clock = origin + now;
                for lane in lanes {
                    run.lanes_served += 1;
                    let mut event = Some(Event::Polled(views.clone()));
                    let more = decide(&mut run, &mut || {
                        engine.handle(lane, event.take().unwrap(), clock)
                    });
                    actions.extend(more);
                }
                continue;
            }
            let Reverse(pending) = queue.pop().unwrap();
            now = pending.at;
            let mut event =
                Some(self.perform(&pending.effect, now, &mut out_per_backend, &mut in_flight));
            run.most_out = run
                .most_out
                .max(out_per_backend.iter().copied().max().unwrap_or(0));
            run.most_in_flight = run.most_in_flight.max(in_flight);
            if run.most_out > limit {
                // Stop at the first break; main reports it.
                run.length = now;
                return run;
            }
            let clock = origin + now;
            actions = decide(&mut run, &mut || {
                engine.handle(pending.lane, event.take().unwrap(), clock)
            });
        }
    }

    /// The effect lands at `now`.
    fn perform(
        &mut self,
        effect: &Effect,
        now: Duration,
        out_per_backend: &mut [usize],
        in_flight: &mut usize,
    ) -> Event {
        match effect {
            Effect::SetState(name, target) => {
                let index = self.index_of(name.as_str());
                let server = &mut self.servers[index];
                let was_ready = server.admin == AdminTarget::Ready;
                match target {
                    AdminTarget::Drain if server.admin == AdminTarget::Maint => {
                        server.out_of_maint_at = Some(now);
                    }
                    AdminTarget::Drain => {
                        server.drained_at = Some(now);
                    }
                    AdminTarget::Maint | AdminTarget::Ready => {}
                }
                server.admin = *target;
                let backend = server.backend;
                match (was_ready, *target == AdminTarget::Ready) {
                    (true, false) => {
                        out_per_backend[backend] += 1;
                        *in_flight += 1;
                    }
                    (false, true) => {
                        out_per_backend[backend] -= 1;
                        *in_flight -= 1;
                    }
                    _ => {}
                }
                Event::Changed(Ok(()))
            }
            Effect::ShutdownSessions(_) => Event::Changed(Ok(())),
            Effect::Restart(index) => {
                self.servers[*index].restart_ends = Some(now);
                Event::Restarted(Ok(()))
            }
            Effect::Probe(index) => {
                let server = &self.servers[*index];
                if server
                    .restart_ends
                    .is_none_or(|end| now >= end + server.startup)
                {
                    Event::Probed(Ok(()))
                } else {
                    Event::Probed(Err("connection refused".into()))
                }
            }
            Effect::Wait | Effect::Backoff(_) => Event::Waited,
            // The simulated plan has no `verify`: the engine never asks.
            Effect::Verify(_) => {
                Event::Verified(Err("the simulated servers have no verify".into()))
            }
            Effect::ReadCurrent(servers) => Event::CurrentRead(
                servers
                    .iter()
                    .map(|_| Err("the simulated servers have no verify".into()))
                    .collect(),
            ),
            Effect::Hook(..) => Event::HookDone(Ok(())),
            Effect::CheckCommand(_) => Event::CommandChecked(Ok(CommandState::Ended)),
            Effect::Poll => unreachable!("polls are shared, above"),
        }
    }

    fn index_of(&self, name: &str) -> usize {
        name.strip_prefix("app")
            .and_then(|number| number.parse().ok())
            .expect("a simulated server name")
    }
}
