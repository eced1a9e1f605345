//! The protocol on replies captured from HAProxy 2.6 and 2.8 (tests/data/haproxy/, written
//! by scripts/capture-replies), and on the formats later versions document.

use super::*;

/// What one HAProxy version answered, on the setup of scripts/capture-replies: s1 UP, s2
/// drained, s3 disabled in the configuration; then s1 in maintenance, s2 drained and dead.
struct Captured {
    version: &'static str,
    stat: &'static str,
    stat_maint_down: &'static str,
    state: &'static str,
    state_maint_down: &'static str,
    info: &'static str,
    level: &'static str,
}

macro_rules! captured {
    ($version:literal) => {
        Captured {
            version: $version,
            stat: include_str!(concat!(
                "../../../tests/data/haproxy/show-stat-",
                $version,
                ".csv"
            )),
            stat_maint_down: include_str!(concat!(
                "../../../tests/data/haproxy/show-stat-maint-down-",
                $version,
                ".csv"
            )),
            state: include_str!(concat!(
                "../../../tests/data/haproxy/show-servers-state-",
                $version,
                ".txt"
            )),
            state_maint_down: include_str!(concat!(
                "../../../tests/data/haproxy/show-servers-state-maint-down-",
                $version,
                ".txt"
            )),
            info: include_str!(concat!(
                "../../../tests/data/haproxy/show-info-",
                $version,
                ".txt"
            )),
            level: include_str!(concat!(
                "../../../tests/data/haproxy/show-cli-level-",
                $version,
                ".txt"
            )),
        }
    };
}

/// Every version tested in CI.
const VERSIONS: [Captured; 2] = [captured!("2.6"), captured!("2.8")];

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
    for captured in &VERSIONS {
        let version = captured.version;
        let rows = parse_show_stat(captured.stat).unwrap();
        assert_eq!(rows.len(), 3, "{version}: server rows only: {rows:?}");
        let s1 = &rows[0];
        assert_eq!((s1.backend.as_str(), s1.server.as_str()), ("be_app", "s1"));
        assert_eq!(s1.status, "UP", "{version}");
        assert_eq!(s1.check_status, "L7OK", "{version}");
        assert_eq!(
            (s1.check_rise, s1.check_fall, s1.check_health),
            (Some(2), Some(2), Some(3)),
            "{version}"
        );
        assert_eq!(s1.address.as_deref(), Some("127.0.0.1:18081"), "{version}");
        assert_eq!(rows[1].status, "DRAIN", "{version}");
        assert_eq!(rows[2].status, "MAINT", "{version}");
        assert_eq!(rows[2].check_health, None, "{version}");
    }
}

#[test]
fn show_stat_of_2_8_has_columns_2_6_had_not() {
    let header = |reply: &'static str| -> Vec<&'static str> {
        reply
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect()
    };
    let (old, new) = (header(VERSIONS[0].stat), header(VERSIONS[1].stat));
    let added: Vec<&str> = new
        .iter()
        .filter(|column| !old.contains(column))
        .copied()
        .collect();
    assert_eq!(
        added,
        [
            "srid",
            "sess_other",
            "h1sess",
            "h2sess",
            "h3sess",
            "req_other",
            "h1req",
            "h2req",
            "h3req",
            "proto"
        ]
    );
    assert!(old.iter().all(|column| new.contains(column)));
    // Parsed by name, so what was read before reads the same.
    let (old, new) = (
        parse_show_stat(VERSIONS[0].stat).unwrap(),
        parse_show_stat(VERSIONS[1].stat).unwrap(),
    );
    let statuses = |rows: &[StatRow]| {
        rows.iter()
            .map(|row| row.status.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(&old), statuses(&new));
}

#[test]
fn show_stat_of_3_3_with_its_new_columns_reads_the_same() {
    // 3.3 adds priv_idle_cur, req_in, req_out, res_in and res_out (docs/compatibility.md);
    // they come after the columns read here, as every version appends.
    let reply = VERSIONS[1].stat;
    let mut lines = reply.lines();
    let header = lines.next().unwrap();
    let mut extended = format!("{header}priv_idle_cur,req_in,req_out,res_in,res_out,\n");
    for line in lines.filter(|line| !line.is_empty()) {
        extended.push_str(&format!("{line}0,7,7,9,9,\n"));
    }
    extended.push('\n');
    assert_eq!(
        parse_show_stat(&extended).unwrap(),
        parse_show_stat(reply).unwrap()
    );
}

#[test]
fn parses_maintenance_and_a_dead_drained_server() {
    for captured in &VERSIONS {
        let version = captured.version;
        let rows = parse_show_stat(captured.stat_maint_down).unwrap();
        assert_eq!(rows[0].status, "MAINT", "{version}");
        assert_eq!(rows[0].check_status, "", "{version}: MAINT hides the check");
        assert_eq!(
            rows[1].status, "DOWN",
            "{version}: DRAIN shows only while the server runs"
        );
        assert_eq!(rows[1].check_status, "L4CON", "{version}");
    }
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
    for captured in &VERSIONS {
        let version = captured.version;
        let rows = parse_servers_state(captured.state).unwrap();
        assert_eq!(rows.len(), 3, "{version}");
        assert_eq!(rows[0].admin, AdminState(0), "{version}");
        assert!(rows[0].admin.ready());
        assert_eq!(rows[0].operational, OpState::Running, "{version}");
        assert_eq!(rows[0].port, Some(18081), "{version}");
        assert_eq!(rows[0].address, "127.0.0.1", "{version}");
        assert_eq!(rows[1].admin, AdminState(8), "{version}: drain is 8");
        assert!(rows[1].admin.draining() && !rows[1].admin.in_maintenance());
        assert_eq!(rows[1].admin.describe(), "drain (set from the CLI)");
        assert_eq!(
            rows[2].admin,
            AdminState(5),
            "{version}: config-disabled shows as 5"
        );
        assert_eq!(
            rows[2].admin.describe(),
            "maint (set from the CLI, disabled in the config)"
        );

        let rows = parse_servers_state(captured.state_maint_down).unwrap();
        assert_eq!(
            rows[0].admin,
            AdminState(1),
            "{version}: maint is 1, not drain"
        );
        assert!(rows[0].admin.in_maintenance());
        assert_eq!(rows[0].operational, OpState::Stopped, "{version}");
        assert_eq!(
            rows[1].operational,
            OpState::Stopped,
            "{version}: a dead drained server"
        );
        assert!(rows[1].admin.draining(), "{version}");
    }
}

#[test]
fn the_bitmask_is_not_an_enum() {
    assert!(AdminState(0x02).in_maintenance(), "inherited maintenance");
    assert!(AdminState(0x20).in_maintenance(), "resolution maintenance");
    assert!(AdminState(0x10).draining(), "inherited drain");
    // 0x40: HMAINT in old documents, SRV_ADMF_FQDN_CHANGED from 3.1 (set once a server's
    // FQDN changed, never cleared): neither maintenance nor drain, on any version.
    assert!(
        AdminState(0x40).ready(),
        "an FQDN change is not maintenance"
    );
    assert!(!AdminState(0x40).draining());
    assert!(AdminState(0x48).draining() && !AdminState(0x48).in_maintenance());
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
    for captured in &VERSIONS {
        let info = parse_info(captured.info).unwrap();
        assert!(
            info.version.starts_with(captured.version),
            "{}",
            info.version
        );
        assert!(info.pid > 0 && info.start_time_sec.is_some() && !info.stopping);
        assert_eq!(
            parse_cli_level(captured.level),
            Some(Level::Admin),
            "{}",
            captured.version
        );
    }
    let info = parse_info(VERSIONS[0].info).unwrap();
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

#[test]
fn versions_outside_the_tested_range_are_named() {
    let with = |version: &str| Info {
        version: version.to_owned(),
        ..parse_info(VERSIONS[0].info).unwrap()
    };
    assert_eq!(with("2.6.12-1+deb12u4").major_minor(), Some((2, 6)));
    assert_eq!(with("2.6.12-1+deb12u4").version_warning(), None);
    assert_eq!(with("2.8.25-5cf5d0683").version_warning(), None);
    assert!(
        with("3.2.4")
            .version_warning()
            .unwrap()
            .contains("newer than the newest version tested (2.8)")
    );
    assert!(
        with("2.0.33")
            .version_warning()
            .unwrap()
            .contains("older than 2.2")
    );
    assert_eq!(
        with("dev").version_warning(),
        None,
        "no number: nothing to say"
    );
}
