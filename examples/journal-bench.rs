//! What one journal write costs, per change: the local journal (a line appended and fsynced)
//! against the journal on etcd (a transaction fenced by the plan's lock), with the records a
//! rollout writes. Used by `scripts/bench-state`.
//!
//!     journal-bench --etcd http://127.0.0.1:PORT [--records 500]

use std::time::{Duration, Instant};

use haproxy_rollout::journal::{Change, Record, now};
use haproxy_rollout::lock::Holder;
use haproxy_rollout::plan::SharedState;
use haproxy_rollout::state::{Local, Store};

fn main() {
    let mut endpoint = None;
    let mut records = 500;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--etcd", Some(value)) => endpoint = Some(value),
            ("--records", Some(value)) => records = value.parse().expect("--records N"),
            _ => {
                eprintln!("usage: journal-bench --etcd http://127.0.0.1:PORT [--records N]");
                std::process::exit(2);
            }
        }
    }
    let endpoint = endpoint.expect("--etcd URL");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let local = Store::Local(Local {
        root: dir.path().to_owned(),
        dir: dir.path().join("rollouts/bench"),
    });
    let settings = SharedState {
        endpoints: vec![endpoint],
        name: Some(format!("journal-bench-{}", std::process::id())),
        ..SharedState::defaults()
    };
    let shared = Store::open(
        std::path::Path::new("bench.yaml"),
        &plan_with(settings),
        &Default::default(),
    )
    .expect("etcd answers");
    for (name, store) in [
        ("local journal (fsync)", local),
        ("etcd (fenced txn)", shared),
    ] {
        let _lock = store
            .lock_plan("the bench", &Holder::me("bench"))
            .unwrap_or_else(|_| panic!("the lock of {name}"));
        let mut journal = store.journal(false).expect("a journal");
        let mut times: Vec<Duration> = (0..records)
            .map(|index| {
                let record = Record::Intent {
                    time: now(),
                    server: format!("app{}", index % 200),
                    change: Change::Drain,
                    command: None,
                };
                let start = Instant::now();
                journal.append(&record).expect("the write");
                start.elapsed()
            })
            .collect();
        times.sort();
        let at = |share: f64| times[((times.len() - 1) as f64 * share) as usize];
        let total: Duration = times.iter().sum();
        println!(
            "{name:<22} {records} writes: mean {:?}, median {:?}, p90 {:?}, p99 {:?}, max {:?}",
            total / records,
            at(0.5),
            at(0.9),
            at(0.99),
            times[times.len() - 1]
        );
    }
}

/// The smallest plan that shares its state on `settings`.
fn plan_with(settings: SharedState) -> haproxy_rollout::plan::Plan {
    let text = "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
                backends: [be_app]\nservers:\n  - name: app1\nrestart:\n  command: \"true\"\n";
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), text).expect("the plan");
    let mut plan =
        haproxy_rollout::plan::load_with(file.path(), haproxy_rollout::plan::Given::values(&[]))
            .expect("the bench plan is valid");
    plan.shared_state = Some(settings);
    plan
}
