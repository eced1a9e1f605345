//! The protocol on replies captured from HAProxy 2.6 (tests/data/haproxy/).

use super::*;

const STAT: &str = include_str!("../../../tests/data/haproxy/show-stat-2.6.csv");
const STAT_MAINT_DOWN: &str = include_str!("../../../tests/data/haproxy/show-stat-maint-down.csv");
const STATE: &str = include_str!("../../../tests/data/haproxy/show-servers-state-2.6.txt");
const STATE_MAINT_DOWN: &str =
    include_str!("../../../tests/data/haproxy/show-servers-state-maint-down.txt");
const INFO: &str = include_str!("../../../tests/data/haproxy/show-info-2.6.txt");

fn names() -> (BackendName, ServerName) {
    (
        BackendName::new("be_app").unwrap(),
        ServerName::new("app1").unwrap(),
    )
}

#[test]
fn formats_commands_from_validated_names() {
    let (backend, server) = names();
    let drain = RuntimeCommand::SetState {
        backend: &backend,
        server: &server,
        state: AdminTarget::Drain,
    };
    assert_eq!(drain.to_string(), "set server be_app/app1 state drain");
    assert!(drain.changes_state());
    let shutdown = RuntimeCommand::ShutdownSessions {
        backend: &backend,
        server: &server,
    };
    assert_eq!(shutdown.to_string(), "shutdown sessions server be_app/app1");
    assert_eq!(
        RuntimeCommand::ShowStatServers.to_string(),
        "show stat -1 4 -1"
    );
    assert!(!RuntimeCommand::ShowServersState.changes_state());
}

#[test]
fn a_command_line_never_holds_a_separator() {
    // The names cannot hold one; this guards the formatting itself.
    let (backend, server) = names();
    for state in [AdminTarget::Ready, AdminTarget::Drain, AdminTarget::Maint] {
        let line = RuntimeCommand::SetState {
            backend: &backend,
            server: &server,
            state,
        }
        .to_string();
        assert!(!line.contains(';') && !line.contains('\n'), "{line}");
    }
}

#[test]
fn parses_show_stat_by_header_from_real_haproxy() {
    let rows = parse_show_stat(STAT).unwrap();
    assert_eq!(rows.len(), 3, "server rows only: {rows:?}");
    let s1 = &rows[0];
    assert_eq!((s1.backend.as_str(), s1.server.as_str()), ("be_app", "s1"));
    assert_eq!(s1.status, "UP");
    assert_eq!(s1.check_status, "L7OK");
    assert_eq!(
        (s1.check_rise, s1.check_fall, s1.check_health),
        (Some(2), Some(2), Some(3))
    );
    assert_eq!(s1.address.as_deref(), Some("127.0.0.1:18081"));
    assert_eq!(rows[1].status, "DRAIN");
    assert_eq!(rows[2].status, "MAINT");
    assert_eq!(rows[2].check_health, None);
}

#[test]
fn parses_maintenance_and_a_dead_drained_server() {
    let rows = parse_show_stat(STAT_MAINT_DOWN).unwrap();
    assert_eq!(rows[0].status, "MAINT");
    assert_eq!(rows[0].check_status, "", "MAINT hides the check");
    assert_eq!(
        rows[1].status, "DOWN",
        "DRAIN shows only while the server runs"
    );
    assert_eq!(rows[1].check_status, "L4CON");
}

#[test]
fn show_stat_columns_in_any_order_with_quotes_and_extra_columns() {
    let reply = "# type,svname,pxname,status,scur,weight,future_column,\n\
                 2,web-1,be_app,\"UP 1/3\",7,100,\"a, quoted value\",\n\
                 1,BACKEND,be_app,UP,7,100,,\n\n";
    let rows = parse_show_stat(reply).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].server, "web-1");
    assert_eq!(rows[0].status, "UP 1/3");
    assert_eq!(rows[0].sessions, 7);
    assert_eq!(rows[0].check_status, "");
    assert_eq!(rows[0].address, None);
}

#[test]
fn reads_what_each_server_answered_and_counts_across_a_reset() {
    let reply = "# pxname,svname,econ,eresp,status,scur,weight,type,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,\n\
                 be_app,app1,2,1,UP,0,1,2,0,90,3,4,5,0,\n\
                 be_tcp,db1,0,0,UP,0,1,2,,,,,,,\n";
    let rows = parse_show_stat(reply).unwrap();
    let app1 = rows[0].counters;
    assert_eq!(app1.responses, [0, 90, 3, 4, 5, 0]);
    assert_eq!((app1.eresp, app1.econ), (1, 2));
    assert_eq!(app1.requests(), 105);
    assert_eq!(
        app1.errors(),
        8,
        "5xx, failed responses and failed connections"
    );
    assert_eq!(
        rows[1].counters,
        Counters::default(),
        "TCP mode keeps no HTTP counters"
    );
    let earlier = Counters {
        responses: [0, 80, 3, 4, 1, 0],
        eresp: 1,
        econ: 0,
    };
    assert!(!app1.reset_since(&earlier));
    assert_eq!(app1.since(&earlier).requests(), 16);
    assert_eq!(app1.since(&earlier).errors(), 6);
    assert!(
        earlier.reset_since(&app1),
        "a counter that went down: a new process"
    );
}

#[test]
fn show_stat_errors_say_what_is_wrong() {
    assert!(matches!(
        parse_show_stat("No such proxy.\n"),
        Err(ProtoError::MissingHeader(_))
    ));
    assert_eq!(
        parse_show_stat("# pxname,svname,status,weight,type,\n"),
        Err(ProtoError::MissingColumn("scur"))
    );
    assert!(matches!(
        parse_show_stat("# pxname,svname,scur,status,weight,type,\nbe,s,many,UP,1,2,\n"),
        Err(ProtoError::BadNumber { column: "scur", .. })
    ));
}

#[test]
fn decodes_the_admin_bitmask_as_seen_on_haproxy() {
    let rows = parse_servers_state(STATE).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].admin, AdminState(0));
    assert!(rows[0].admin.ready());
    assert_eq!(rows[0].operational, OpState::Running);
    assert_eq!(rows[0].port, Some(18081));
    assert_eq!(rows[0].address, "127.0.0.1");
    assert_eq!(rows[1].admin, AdminState(8), "drain is 8");
    assert!(rows[1].admin.draining() && !rows[1].admin.in_maintenance());
    assert_eq!(rows[1].admin.describe(), "drain (set from the CLI)");
    assert_eq!(rows[2].admin, AdminState(5), "config-disabled shows as 5");
    assert_eq!(
        rows[2].admin.describe(),
        "maint (set from the CLI, disabled in the config)"
    );

    let rows = parse_servers_state(STATE_MAINT_DOWN).unwrap();
    assert_eq!(rows[0].admin, AdminState(1), "maint is 1, not drain");
    assert!(rows[0].admin.in_maintenance());
    assert_eq!(rows[0].operational, OpState::Stopped);
    assert_eq!(
        rows[1].operational,
        OpState::Stopped,
        "a dead drained server"
    );
    assert!(rows[1].admin.draining());
}

#[test]
fn the_bitmask_is_not_an_enum() {
    assert!(AdminState(0x02).in_maintenance(), "inherited maintenance");
    assert!(AdminState(0x20).in_maintenance(), "resolution maintenance");
    assert!(AdminState(0x10).draining(), "inherited drain");
    assert!(
        AdminState(0x40).ready(),
        "an FQDN change is not maintenance"
    );
    assert!(AdminState(0x09).in_maintenance() && AdminState(0x09).draining());
}

#[test]
fn servers_state_rejects_other_formats() {
    assert!(matches!(
        parse_servers_state("2\n# be_id\n"),
        Err(ProtoError::UnsupportedFormat(_))
    ));
    assert!(matches!(
        parse_servers_state("Can't find backend.\n"),
        Err(ProtoError::UnsupportedFormat(_))
    ));
    assert!(matches!(
        parse_servers_state("1\n# be_name srv_name\nbe s\n"),
        Err(ProtoError::MissingColumn(_))
    ));
}

#[test]
fn parses_show_info_for_reload_detection() {
    let info = parse_info(INFO).unwrap();
    assert!(info.version.starts_with("2.6"));
    assert!(info.pid > 0);
    assert!(info.start_time_sec.is_some());
    assert!(!info.stopping);
    let mut reloaded = info.clone();
    assert!(!reloaded.reloaded_since(&info));
    reloaded.start_time_sec = reloaded.start_time_sec.map(|start| start + 1);
    assert!(reloaded.reloaded_since(&info));
    // The identity a lock is keyed by: the process, not the socket that reached it.
    assert_eq!(info.node, "vm");
    assert_eq!(info.identity(), "vm|15201|1795247645");
    assert_ne!(reloaded.identity(), info.identity());
}

#[test]
fn classifies_the_error_replies_haproxy_gives() {
    assert_eq!(check_change_reply("\n"), Ok(()));
    assert_eq!(
        check_change_reply("Permission denied\n\n"),
        Err(ReplyError::PermissionDenied)
    );
    assert_eq!(
        check_change_reply("No such backend.\n\n"),
        Err(ReplyError::NoSuchBackend)
    );
    assert_eq!(
        check_change_reply("No such server.\n\n"),
        Err(ReplyError::NoSuchServer)
    );
    assert_eq!(
        classify_error("Can't find backend.\n"),
        ReplyError::NoSuchBackend
    );
    assert!(matches!(
        check_change_reply("Require 'backend/server'.\n"),
        Err(ReplyError::Unexpected(text)) if text == "Require 'backend/server'."
    ));
}

#[test]
fn cli_level() {
    assert_eq!(parse_cli_level("admin\n\n"), Some(Level::Admin));
    assert_eq!(parse_cli_level("user\n"), Some(Level::User));
    assert_eq!(parse_cli_level("Unknown command, but maybe ..."), None);
}
