//! The test harness's lab as a program, for the demo and the benchmarks: demo application
//! servers on 127.0.0.1, a real HAProxy in front of them (two with `--haproxy 2`), a real
//! sshd with its own host key, and a plan for them. The same code the tests run
//! (tests/common), so a change of HAProxy's configuration or of sshd's set-up is made once.
//!
//!     lab [--servers 3] [--haproxy 1] [--poll-interval 200ms] [--extra 'YAML KEYS']
//!
//! Prints `KEY=value` lines (LAB_DIR, PLAN, FRONTEND_PORT, ADMIN_SOCKET, ADMIN_SOCKETS,
//! APP_PORTS, RESTART_SCRIPT, SSH_PORT, SSH_KEY, SSH_KNOWN_HOSTS, SSH_CONFIG), then `READY`
//! once every server is UP. It then reads commands on stdin: `pids` answers `PIDS=...`
//! (each application's pid, in server order). At the end of stdin it stops everything it
//! started and removes its folders.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, Write};

use common::lab::LabOptions;
use common::rollout_lab::RolloutLab;

fn main() {
    let mut servers = 3;
    let mut instances = 1;
    let mut poll_interval = "200ms".to_owned();
    let mut extra = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--servers" => servers = number(&value()),
            "--haproxy" => instances = number(&value()),
            "--poll-interval" => poll_interval = value(),
            "--extra" => extra = value(),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if servers == 0 || !(1..=2).contains(&instances) {
        usage("at least one server, and one or two HAProxy");
    }
    if !extra.is_empty() && !extra.ends_with('\n') {
        extra.push('\n');
    }

    let options = || LabOptions {
        servers,
        ..LabOptions::default()
    };
    let mut lab = RolloutLab::start(options());
    if instances == 2 {
        lab.add_second_haproxy(options());
    }
    let plan = lab.plan_polling("plan.yaml", None, &poll_interval, &extra);
    let mut sockets = vec![lab.lab.admin_socket.display().to_string()];
    if let Some(second) = &lab.second {
        let socket = second.admin_socket.display().to_string();
        RolloutLab::add_instance(&plan, "lb2", &socket);
        sockets.push(socket);
    }

    let ports: Vec<String> = lab.ports.iter().map(u16::to_string).collect();
    let mut out = std::io::stdout().lock();
    let lines = [
        ("LAB_DIR", lab.lab.dir.path().display().to_string()),
        ("PLAN", plan.display().to_string()),
        ("FRONTEND_PORT", lab.lab.frontend_port.to_string()),
        ("ADMIN_SOCKET", sockets[0].clone()),
        ("ADMIN_SOCKETS", sockets.join(" ")),
        ("APP_PORTS", ports.join(" ")),
        ("RESTART_SCRIPT", lab.restart_script.display().to_string()),
        ("SSH_PORT", lab.sshd.port.to_string()),
        ("SSH_KEY", lab.sshd.client_key.display().to_string()),
        (
            "SSH_KNOWN_HOSTS",
            lab.sshd.known_hosts.display().to_string(),
        ),
        ("SSH_CONFIG", lab.sshd.config.display().to_string()),
    ];
    for (key, value) in lines {
        writeln!(out, "{key}={value}").expect("stdout");
    }
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("stdout");
    drop(out);

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut out = std::io::stdout().lock();
        match line.trim() {
            "pids" => {
                let pids: Vec<String> = lab.pids().iter().map(u32::to_string).collect();
                writeln!(out, "PIDS={}", pids.join(" ")).expect("stdout");
            }
            other => writeln!(out, "ERROR=unknown command {other}").expect("stdout"),
        }
        out.flush().expect("stdout");
    }
    // Dropping the lab stops every process it started and removes its folders.
}

fn number(text: &str) -> usize {
    text.parse()
        .unwrap_or_else(|_| usage(&format!("`{text}` is not a number")))
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "lab: {problem}\nusage: lab [--servers N] [--haproxy 1|2] [--poll-interval 200ms] [--extra YAML]"
    );
    std::process::exit(2)
}
