//! Several HAProxy instances in front of the same servers, changed in lockstep (#6).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::lab::{Lab, LabOptions};
use common::rollout_lab::{RolloutLab, Traffic};
use common::{events, rollout};
use haproxy_rollout::haproxy::Client;
use haproxy_rollout::plan::SocketAddress;

/// Samples both HAProxy instances every 25 ms; returns the largest number of distinct
/// servers seen out of rotation (on either) at one moment, and how many samples it took.
fn sample_lockstep(
    clients: Vec<Client>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let runtime = Lab::runtime();
        let (mut most_out, mut samples) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let mut out = std::collections::BTreeSet::new();
            let mut complete = true;
            for client in &clients {
                match runtime.block_on(client.servers()) {
                    Ok(views) => out.extend(
                        views
                            .into_iter()
                            .filter(|view| !view.admin.ready())
                            .map(|view| view.server),
                    ),
                    Err(_) => complete = false,
                }
            }
            if complete {
                most_out = most_out.max(out.len());
                samples += 1;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        (most_out, samples)
    })
}

/// See: #6, test 1.
#[test]
fn two_haproxy_instances_over_unix_and_tcp_are_changed_in_lockstep_under_traffic() {
    let mut lab = RolloutLab::start(LabOptions::default());
    lab.add_second_haproxy(LabOptions::default());
    let second = lab.second.as_ref().unwrap();
    let plan = lab.plan("pair.yaml", None, "");
    let text = std::fs::read_to_string(&plan).unwrap().replace(
        "backends: [be_app]",
        &format!(
            "  - name: lb2\n    socket: tcp://127.0.0.1:{}\nbackends: [be_app]",
            second.tcp_port
        ),
    );
    std::fs::write(&plan, text).unwrap();
    let before = lab.pids();

    let stop = Arc::new(AtomicBool::new(false));
    let clients = vec![
        Client::new(
            SocketAddress::Unix(lab.lab.admin_socket.clone()),
            Duration::from_secs(5),
        ),
        Client::new(
            SocketAddress::Tcp {
                host: "127.0.0.1".into(),
                port: second.tcp_port,
            },
            Duration::from_secs(5),
        ),
    ];
    let sampler = sample_lockstep(clients, stop.clone());
    let traffic_one = Traffic::start(lab.lab.frontend_port, 3, 1);
    let traffic_two = Traffic::start(second.frontend_port, 3, 1);
    std::thread::sleep(Duration::from_millis(300));

    let outcome = rollout(["--output", "json", "apply", plan.to_str().unwrap()]).run();
    let (ok_one, failed_one, failures_one) = traffic_one.stop();
    let (ok_two, failed_two, failures_two) = traffic_two.stop();
    stop.store(true, Ordering::SeqCst);
    let (most_out, samples) = sampler.join().unwrap();

    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(failed_one, 0, "through lb1: {failures_one:?}");
    assert_eq!(failed_two, 0, "through lb2: {failures_two:?}");
    assert!(ok_one > 20 && ok_two > 20, "{ok_one} and {ok_two} requests");
    assert!(samples > 20, "{samples} samples");
    assert_eq!(
        most_out, 1,
        "one server at a time out of rotation, on both HAProxy together: never one server back on one while the next is drained on the other"
    );
    let after = lab.pids();
    assert!(
        before.iter().zip(&after).all(|(old, new)| old != new),
        "every process replaced"
    );
    for views in [lab.lab.views(), second.views()] {
        assert!(
            views
                .iter()
                .all(|view| view.status == "UP" && view.admin.ready()),
            "{views:#?}"
        );
    }
    let events = events(&outcome.stdout);
    let done: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "server_done")
        .map(|event| event["server"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["app1", "app2", "app3"]);
}
