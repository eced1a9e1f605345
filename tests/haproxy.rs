//! The runtime-API client, `status` and `plan` against a real haproxy with real servers.

mod common;

use std::time::{Duration, Instant};

use common::lab::{Lab, LabOptions, free_port};
use common::rollout;
use haproxy_rollout::haproxy::{AdminState, AdminTarget, Client, ClientError, OpState};
use haproxy_rollout::plan::{BackendName, ServerName, SocketAddress};

fn names(server: &str) -> (BackendName, ServerName) {
    (
        BackendName::new("be_app").unwrap(),
        ServerName::new(server).unwrap(),
    )
}

fn path(file: &std::path::Path) -> &str {
    file.to_str().unwrap()
}

#[test]
fn the_client_drives_drain_maint_ready_and_weight() {
    let lab = Lab::start();
    let client = lab.client();
    let runtime = Lab::runtime();
    let (backend, app2) = names("app2");

    runtime
        .block_on(client.set_state(&backend, &app2, AdminTarget::Drain))
        .unwrap();
    let view = lab.view("app2");
    assert_eq!(
        view.admin,
        AdminState(8),
        "drain is 8 in show servers state"
    );
    assert_eq!(view.status, "DRAIN");
    assert!(!view.in_rotation());
    assert!(
        lab.servers_state().contains(" app2 127.0.0.1 2 8 "),
        "{}",
        lab.servers_state()
    );

    runtime
        .block_on(client.set_state(&backend, &app2, AdminTarget::Maint))
        .unwrap();
    let view = lab.view("app2");
    assert_eq!(view.admin, AdminState(1), "maint is 1, and replaces drain");
    assert_eq!(view.status, "MAINT");
    assert_eq!(view.operational, OpState::Stopped);

    runtime
        .block_on(client.set_state(&backend, &app2, AdminTarget::Ready))
        .unwrap();
    assert_eq!(lab.view("app2").admin, AdminState(0));
    lab.wait_until("app2 UP again", |views| {
        views.iter().any(|v| v.server == "app2" && v.in_rotation())
    });

    runtime
        .block_on(client.set_weight(&backend, &app2, 0))
        .unwrap();
    let view = lab.view("app2");
    assert_eq!(view.status, "UP", "weight 0 keeps the status UP");
    assert_eq!(view.weight, 0);
    assert!(!view.in_rotation(), "but it takes no traffic");
}

#[test]
fn the_client_names_what_haproxy_lacks() {
    let lab = Lab::start();
    let runtime = Lab::runtime();
    let (backend, ghost) = names("ghost");
    let error = runtime
        .block_on(lab.client().set_state(&backend, &ghost, AdminTarget::Drain))
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::NoSuchServer { server, .. } if server == "ghost"),
        "{error}"
    );
    let (other, app1) = (
        BackendName::new("be_other").unwrap(),
        ServerName::new("app1").unwrap(),
    );
    let error = runtime
        .block_on(lab.client().set_state(&other, &app1, AdminTarget::Drain))
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::NoSuchBackend { backend, .. } if backend == "be_other"),
        "{error}"
    );
}

#[test]
fn lower_socket_levels_are_refused_changes_and_reported() {
    let lab = Lab::start();
    let runtime = Lab::runtime();
    let (backend, app1) = names("app1");
    for socket in [&lab.user_socket, &lab.operator_socket] {
        let client = Client::new(SocketAddress::Unix(socket.clone()), Duration::from_secs(5));
        let error = runtime
            .block_on(client.set_state(&backend, &app1, AdminTarget::Drain))
            .unwrap_err();
        assert!(
            matches!(error, ClientError::PermissionDenied { .. }),
            "{error}"
        );
    }
    assert_eq!(lab.view("app1").admin, AdminState(0), "nothing changed");
}

#[test]
fn tcp_and_unix_sockets_read_the_same_state() {
    let lab = Lab::start();
    let runtime = Lab::runtime();
    let tcp = Client::new(
        SocketAddress::Tcp {
            host: "127.0.0.1".into(),
            port: lab.tcp_port,
        },
        Duration::from_secs(5),
    );
    let over_tcp = runtime.block_on(tcp.snapshot()).unwrap();
    let over_unix = runtime.block_on(lab.client().snapshot()).unwrap();
    assert_eq!(over_tcp.info.pid, over_unix.info.pid);
    assert_eq!(over_tcp.servers.len(), 3);
    assert_eq!(
        over_tcp
            .servers
            .iter()
            .map(|view| &view.server)
            .collect::<Vec<_>>(),
        ["app1", "app2", "app3"]
    );
}

#[test]
fn unreachable_sockets_fail_clearly_within_the_timeout() {
    let runtime = Lab::runtime();
    let timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();

    let missing = Client::new(SocketAddress::Unix(dir.path().join("nope.sock")), timeout);
    let error = runtime.block_on(missing.info()).unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    assert!(format!("{error:#}").contains("nope.sock"));

    let closed = Client::new(
        SocketAddress::Tcp {
            host: "127.0.0.1".into(),
            port: free_port(),
        },
        timeout,
    );
    let error = runtime.block_on(closed.info()).unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");

    // A listener that accepts but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hung = Client::new(
        SocketAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        timeout,
    );
    let start = Instant::now();
    let error = runtime.block_on(hung.info()).unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("did not answer `show info` within 300ms"),
        "{error}"
    );
    // Not a timing assertion: only that it returned instead of hanging.
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(silent);
}

#[test]
fn status_shows_every_server_and_warns_about_drained_dead_and_weight_zero() {
    let lab = Lab::with(LabOptions {
        servers: 4,
        disabled: vec![3],
        ..LabOptions::default()
    });
    lab.command("set server be_app/app1 state drain");
    lab.command("set weight be_app/app2 0");
    let mut apps = lab.apps;
    apps[2].process.kill();
    let lab = Lab { apps, ..lab };
    lab.wait_until("app3 DOWN", |views| {
        views
            .iter()
            .any(|v| v.server == "app3" && v.status == "DOWN")
    });

    let plan = lab.plan("status.yaml", &["app1", "app2", "app3", "app4"], "");
    // Not at rest: a pipeline gate stops (see: #10).
    let outcome = rollout(["--color", "never", "status", path(&plan)])
        .run()
        .code(6);
    let table = outcome.stdout;
    assert!(
        table.starts_with("HAPROXY  BACKEND  SERVER  ADMIN"),
        "{table}"
    );
    let line = |server: &str| {
        table
            .lines()
            .find(|line| line.split_whitespace().nth(2) == Some(server))
            .unwrap_or_else(|| panic!("no row for {server} in\n{table}"))
            .to_owned()
    };
    assert!(
        line("app1").contains("drain (set from the CLI)") && line("app1").contains(" DRAIN "),
        "{}",
        line("app1")
    );
    assert!(line("app2").contains(" UP "), "{}", line("app2"));
    assert!(
        line("app3").contains(" DOWN ") && line("app3").contains("L4CON"),
        "{}",
        line("app3")
    );
    assert!(
        line("app4").contains("maint (set from the CLI, disabled in the config)"),
        "{}",
        line("app4")
    );
    let warnings = outcome.stderr;
    assert!(
        warnings.contains("lb1: be_app/app1: drained: drain (set from the CLI)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("lb1: be_app/app2: weight 0"),
        "{warnings}"
    );
    assert!(
        warnings.contains("lb1: be_app/app3: not UP: DOWN"),
        "{warnings}"
    );
    assert!(
        warnings.contains("lb1: be_app/app4: in maintenance"),
        "{warnings}"
    );

    let outcome = rollout(["--output", "json", "status", path(&plan)])
        .run()
        .code(6);
    let events = common::events(&outcome.stdout);
    assert_eq!(events.len(), 7);
    // Which HAProxy, first: its version, and no warning for a tested one.
    assert_eq!(events[0]["event"], "haproxy");
    let version = events[0]["version"].as_str().unwrap();
    assert!(
        version.starts_with("2.6") || version.starts_with("2.8"),
        "{version}"
    );
    assert_eq!(events[0]["warning"], serde_json::Value::Null);
    assert!(
        outcome
            .stderr
            .contains(&format!("lb1: HAProxy {version}, pid ")),
        "{}",
        outcome.stderr
    );
    let events = &events[1..];
    assert_eq!(events[4]["event"], "rollouts");
    assert_eq!(events[4]["rollouts"], serde_json::json!([]));
    assert_eq!(events[5]["event"], "at_rest");
    assert_eq!(events[5]["at_rest"], false);
    assert_eq!(
        events[5]["reasons"].as_array().unwrap().len(),
        4,
        "{}",
        events[5]
    );
    assert_eq!(events[0]["admin_state"], 8);
    assert_eq!(events[3]["admin_state"], 5);
    assert_eq!(events[2]["status"], "DOWN");
    assert_eq!(events[1]["weight"], 0);
    assert_eq!(events[1]["status"], "UP");
    assert_eq!(events[1]["in_rotation"], false);
}

#[test]
fn status_reports_a_missing_server_and_exits_3() {
    let lab = Lab::start();
    let plan = lab.plan("missing.yaml", &["app1", "ghost"], "");
    let outcome = rollout(["--color", "never", "status", path(&plan)])
        .run()
        .code(3);
    assert!(
        outcome.stdout.contains("ghost") && outcome.stdout.contains("MISSING"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome
            .stderr
            .contains("be_app/ghost: HAProxy has no such server"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn plan_previews_every_command_and_changes_nothing() {
    let lab = Lab::start();
    let plan = lab.plan(
        "preview.yaml",
        &["app1", "app2", "app3"],
        "health:\n  url: http://{addr}:{port}/health\n",
    );
    let before = lab.servers_state();
    let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(0);
    assert_eq!(
        lab.servers_state(),
        before,
        "plan must not change HAProxy state"
    );

    let out = outcome.stdout;
    assert!(out.contains("socket at admin level"), "{out}");
    assert!(out.contains("capacity: draining app1 leaves be_app on lb1 with 2 other servers in rotation (app2, app3); min_up 1"), "{out}");
    for state in ["drain", "maint", "ready"] {
        assert!(
            out.contains(&format!("lb1: set server be_app/app2 state {state}")),
            "{out}"
        );
    }
    let port = lab.apps[1].port;
    assert!(
        out.contains(&format!(
            "wait until GET http://127.0.0.1:{port}/health answers 200"
        )),
        "{out}"
    );
    assert!(
        out.contains("ssh 127.0.0.1: timeout -k 10s 120s sh -c /bin/true"),
        "{out}"
    );
    assert!(out.contains("pre-flight passed"), "{out}");
    let order: Vec<usize> = ["\n  app1\n", "\n  app2\n", "\n  app3\n"]
        .iter()
        .map(|header| {
            out.find(header)
                .unwrap_or_else(|| panic!("{header:?} in {out}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "servers in plan order"
    );

    let outcome = rollout(["--output", "json", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(0);
    let events = common::events(&outcome.stdout);
    assert_eq!(events.len(), 2, "{}", outcome.stdout);
    assert_eq!(events[0]["event"], "preflight");
    assert_eq!(events[0]["outcome"], "passed");
    let event = &events[1];
    assert_eq!(event["event"], "plan");
    assert_eq!(event["would_run"], true);
    let servers = event["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[0]["server"], "app1");
    assert_eq!(
        servers[0]["steps"][1],
        "lb1: set server be_app/app1 state drain    # no new traffic; checks keep running"
    );
    assert_eq!(lab.servers_state(), before);
}

#[test]
fn plan_is_blocked_when_capacity_would_break_min_up() {
    let lab = Lab::start();
    let mut apps = lab.apps;
    apps[2].process.kill();
    let lab = Lab { apps, ..lab };
    lab.wait_until("app3 DOWN", |views| {
        views
            .iter()
            .any(|v| v.server == "app3" && v.status == "DOWN")
    });
    let plan = lab.plan(
        "capacity.yaml",
        &["app1", "app2"],
        "capacity:\n  min_up: 2\n",
    );
    let before = lab.servers_state();
    let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(3);
    assert_eq!(lab.servers_state(), before);
    assert!(
        outcome.stdout.contains("BLOCKED capacity: be_app on lb1 has 1 other server in rotation besides app1 (app2); min_up 2; out of rotation: app3 DOWN"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("pre-flight failed"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn plan_reports_sockets_below_admin_level() {
    let lab = Lab::start();
    for (socket, level) in [
        (&lab.user_socket, "user"),
        (&lab.operator_socket, "operator"),
    ] {
        let text = format!(
            "version: 1\nhaproxy:\n  - name: lb1\n    socket: {}\nbackends: [be_app]\nservers:\n  - name: app1\n\
             restart:\n  command: /bin/true\n",
            socket.display()
        );
        let plan = lab.dir.path().join(format!("{level}.yaml"));
        std::fs::write(&plan, text).unwrap();
        let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
            .run()
            .code(3);
        assert!(
            outcome.stdout.contains(&format!(
                "BLOCKED lb1 ({}): the socket is at level {level}",
                socket.display()
            )),
            "{}",
            outcome.stdout
        );
    }
}

#[test]
fn plan_names_a_server_or_backend_haproxy_lacks_and_changes_nothing() {
    let lab = Lab::start();
    let before = lab.servers_state();
    let plan = lab.plan("ghost.yaml", &["app1", "ghost"], "");
    // Edits the plan, previews it, and expects `blocked` among its blocked lines.
    let blocked_by = |edits: &[(&str, &str)], blocked: &str| {
        let mut text = std::fs::read_to_string(&plan).unwrap();
        for (from, to) in edits {
            text = text.replace(from, to);
        }
        std::fs::write(&plan, text).unwrap();
        let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
            .run()
            .code(3);
        assert!(
            outcome.stdout.contains(&format!("BLOCKED lb1: {blocked}")),
            "{}",
            outcome.stdout
        );
    };
    blocked_by(&[], "backend be_app has no server ghost");
    blocked_by(
        &[
            ("[be_app]", "[be_app, be_missing]"),
            ("  - name: ghost\n", ""),
        ],
        "there is no backend `be_missing`",
    );
    // A name one typo away from what HAProxy has is named.
    blocked_by(
        &[
            ("[be_app, be_missing]", "[be_ap]"),
            ("  - name: app1\n", "  - name: ap1\n"),
        ],
        "there is no backend `be_ap` (or it has no servers); did you mean `be_app` (for `be_ap`)?",
    );
    blocked_by(
        &[("[be_ap]", "[be_app]")],
        "backend be_app has no server ap1; did you mean `app1` (for `ap1`)?",
    );
    assert_eq!(lab.servers_state(), before);
}

#[test]
fn plan_refuses_to_put_back_a_server_someone_else_took_out() {
    let lab = Lab::start();
    lab.command("set server be_app/app2 state maint");
    let plan = lab.plan("maint.yaml", &["app1", "app2"], "");
    let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(3);
    assert!(
        outcome.stdout.contains("BLOCKED lb1: be_app/app2 is out of rotation before the rollout (maint (set from the CLI))"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome
            .stdout
            .contains("`set server be_app/app2 state ready`")
    );
}

#[test]
fn plan_with_an_unreachable_haproxy_fails_preflight() {
    let lab = Lab::start();
    let plan = lab.dir.path().join("unreachable.yaml");
    let port = free_port();
    std::fs::write(
        &plan,
        format!(
            "version: 1\nhaproxy:\n  - name: lb1\n    socket: tcp://127.0.0.1:{port}\n    timeout: 500ms\n\
             backends: [be_app]\nservers:\n  - name: app1\nrestart:\n  command: /bin/true\n"
        ),
    )
    .unwrap();
    let outcome = rollout(["--color", "never", "plan", "--no-ssh", path(&plan)])
        .run()
        .code(3);
    assert!(
        outcome.stdout.contains(&format!(
            "BLOCKED lb1: cannot reach the HAProxy runtime API at tcp://127.0.0.1:{port}"
        )),
        "{}",
        outcome.stdout
    );
}
