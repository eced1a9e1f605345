//! A fleet simulation: the rollout engine, unchanged, against a simulated fleet in simulated
//! time, far past what one machine can run for real. Every server has its own random drain,
//! restart and start-up time; HAProxy's checks pass `rise` intervals after a server leaves
//! maintenance. Effects run as the driver runs them: one poll of every HAProxy at a time,
//! shared by every lane that asked since the last one started, its views handed to each.
//!
//!     simulate [--servers 10000] [--haproxy 4] [--backends 20] [--max-unavailable 5%]
//!              [--seed 1]
//!
//! Prints the schedule's length against a lower bound no scheduler could beat, the engine's
//! CPU time per decision, and the peak memory of the process. It checks, as it goes, that no
//! backend ever has more servers out than `max_unavailable` allows and that every server was
//! restarted once; it exits 1 if not.

use std::time::{Duration, Instant};

use haproxy_rollout::engine::Observation;
use haproxy_rollout::engine::rollout::{Limits, Outcome, Rollout};
use haproxy_rollout::engine::{Topology, preflight};
use haproxy_rollout::plan::{self, Plan};

mod fleet;

use fleet::{Fleet, POLL_INTERVAL};

struct Options {
    servers: usize,
    haproxy: usize,
    backends: usize,
    max_unavailable: String,
    seed: u64,
}

fn main() {
    let options = options();
    let started = Instant::now();
    let plan = plan_of(&options);
    let mut fleet = Fleet::new(&options);
    let observations: Vec<Observation> = plan
        .haproxy
        .iter()
        .map(|instance| Observation {
            instance,
            state: Ok(fleet.snapshot()),
        })
        .collect();
    // What `apply` decides before anything changes: the topology, the limits, pre-flight.
    let deciding = Instant::now();
    let topology = Topology::resolve(&plan, &observations);
    let limits = Limits::observed(&plan, &observations, &topology);
    let verdict = preflight::preflight(&plan, &observations, &[]);
    let setup = deciding.elapsed();
    if verdict.blocked() {
        eprintln!("pre-flight blocked the simulated rollout");
        std::process::exit(1);
    }
    let limit = limits.of(0, &plan::BackendName::new("be00").unwrap());
    let engine = Rollout::new(&plan, topology, limits);
    let run = fleet.run(engine, limit);

    let lower_bound = fleet.lower_bound(limit);
    let mut failed = false;
    if run
        .finish
        .as_ref()
        .is_none_or(|finish| finish.outcome != Outcome::Success)
    {
        eprintln!(
            "the rollout did not succeed: {:?}",
            run.finish.as_ref().map(|f| &f.reason)
        );
        failed = true;
    }
    if run.most_out > limit {
        eprintln!(
            "a backend had {} servers out, its limit is {limit}",
            run.most_out
        );
        failed = true;
    }
    if let Some(server) = fleet.restarts.iter().position(|count| *count != 1) {
        eprintln!(
            "server {server} was restarted {} times",
            fleet.restarts[server]
        );
        failed = true;
    }
    let per_decision = run.engine_time.as_secs_f64() / run.decisions as f64;
    println!(
        "servers {}, HAProxy instances {}, backends {} of {} servers, max_unavailable {} ({limit} per backend), seed {}",
        options.servers,
        options.haproxy,
        options.backends,
        options.servers / options.backends,
        options.max_unavailable,
        options.seed
    );
    println!(
        "schedule: {} simulated, lower bound {} ({:.3}x)",
        clock(run.length),
        clock(lower_bound),
        run.length.as_secs_f64() / lower_bound.as_secs_f64()
    );
    println!(
        "most servers of one backend out at once: {} (limit {limit}); most in flight: {}",
        run.most_out, run.most_in_flight
    );
    println!(
        "engine: {} decisions, {:.1} µs each on average, {:.1} ms the slowest; {:.2} s in all",
        run.decisions,
        per_decision * 1e6,
        run.slowest.as_secs_f64() * 1e3,
        run.engine_time.as_secs_f64()
    );
    println!(
        "polls: {} (each read {} views), each serving {:.1} servers in flight on average; topology, limits and pre-flight {:.3} s",
        run.polls,
        options.servers * options.haproxy,
        run.lanes_served as f64 / run.polls as f64,
        setup.as_secs_f64()
    );
    println!(
        "wall time {:.1} s, peak memory {} MB",
        started.elapsed().as_secs_f64(),
        peak_memory_kb() / 1024
    );
    if failed {
        std::process::exit(1);
    }
}

fn options() -> Options {
    let mut options = Options {
        servers: 10_000,
        haproxy: 4,
        backends: 20,
        max_unavailable: "5%".into(),
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        let number = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{arg}: `{value}` is not a number")))
        };
        match arg.as_str() {
            "--servers" => options.servers = number() as usize,
            "--haproxy" => options.haproxy = number() as usize,
            "--backends" => options.backends = number() as usize,
            "--max-unavailable" => options.max_unavailable = value.clone(),
            "--seed" => options.seed = number(),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if options.backends == 0 || options.servers < options.backends || options.haproxy == 0 {
        usage("need at least one HAProxy, one backend and a server per backend");
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "simulate: {problem}\nusage: simulate [--servers N] [--haproxy N] [--backends N] \
         [--max-unavailable 5%] [--seed N]"
    );
    std::process::exit(2)
}

/// The plan: every server in the backend `auto` finds, servers spread over the backends in
/// turn, as a fleet's names usually are.
fn plan_of(options: &Options) -> Plan {
    let mut text = String::from("version: 1\nhaproxy:\n");
    for instance in 0..options.haproxy {
        text.push_str(&format!(
            "  - name: lb{instance}\n    socket: /run/haproxy/lb{instance}.sock\n"
        ));
    }
    text.push_str("backends: auto\nservers:\n");
    for server in 0..options.servers {
        text.push_str(&format!("  - name: {}\n", server_name(server)));
    }
    text.push_str(&format!(
        "restart:\n  command: /bin/true\n  timeout: 120s\ncapacity:\n  max_unavailable: {}\n\
         drain:\n  timeout: 5m\npoll_interval: {}ms\n",
        options.max_unavailable,
        POLL_INTERVAL.as_millis()
    ));
    plan::parse(&text).unwrap_or_else(|errors| panic!("the simulated plan: {errors:?}"))
}

fn server_name(server: usize) -> String {
    format!("app{server:05}")
}

fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!(
        "{}h{:02}m{:02}s",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The peak resident memory of this process (VmHWM), in kB.
fn peak_memory_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
