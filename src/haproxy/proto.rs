//! The HAProxy runtime API as text: commands to send and replies to parse. No I/O here.
//!
//! Verified against HAProxy 2.6 (see docs/haproxy-runtime-api.md and the captured replies in
//! tests/data/haproxy/): `show stat` is CSV parsed by header name, `srv_admin_state` is a
//! bitmask, and every change command answers with an empty reply on success.

use std::collections::HashMap;
use std::fmt;

use crate::plan::{BackendName, ServerName};

/// A runtime-API command. Names are validated types, so no command can carry `;`, a space
/// or a newline into the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCommand<'a> {
    /// `show stat -1 4 -1`: every server row of every backend.
    ShowStatServers,
    /// `show servers state`: admin bitmask, operational state, address and port.
    ShowServersState,
    /// `show info`: process identity, for reload detection.
    ShowInfo,
    /// `show cli level`: the level of this connection (HAProxy 2.2 and later).
    ShowCliLevel,
    SetState {
        backend: &'a BackendName,
        server: &'a ServerName,
        state: AdminTarget,
    },
    ShutdownSessions {
        backend: &'a BackendName,
        server: &'a ServerName,
    },
    /// `set weight B/S N`: weight 0 keeps the status UP but sends no traffic.
    SetWeight {
        backend: &'a BackendName,
        server: &'a ServerName,
        weight: u16,
    },
}

/// What `set server B/S state X` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTarget {
    Ready,
    Drain,
    Maint,
}

impl AdminTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminTarget::Ready => "ready",
            AdminTarget::Drain => "drain",
            AdminTarget::Maint => "maint",
        }
    }
}

impl RuntimeCommand<'_> {
    /// Whether the command changes HAProxy state (and so needs admin level).
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            RuntimeCommand::SetState { .. } | RuntimeCommand::ShutdownSessions { .. }
        )
    }
}

impl fmt::Display for RuntimeCommand<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeCommand::ShowStatServers => formatter.write_str("show stat -1 4 -1"),
            RuntimeCommand::ShowServersState => formatter.write_str("show servers state"),
            RuntimeCommand::ShowInfo => formatter.write_str("show info"),
            RuntimeCommand::ShowCliLevel => formatter.write_str("show cli level"),
            RuntimeCommand::SetState {
                backend,
                server,
                state,
            } => write!(
                formatter,
                "set server {backend}/{server} state {}",
                state.as_str()
            ),
            RuntimeCommand::ShutdownSessions { backend, server } => {
                write!(formatter, "shutdown sessions server {backend}/{server}")
            }
            RuntimeCommand::SetWeight {
                backend,
                server,
                weight,
            } => write!(formatter, "set weight {backend}/{server} {weight}"),
        }
    }
}

/// A reply that is not what the command should get.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("permission denied: the socket is not at admin level")]
    PermissionDenied,
    #[error("no such backend")]
    NoSuchBackend,
    #[error("no such server")]
    NoSuchServer,
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// Reads the first line of an error reply as one of the errors HAProxy is known to give.
pub fn classify_error(reply: &str) -> ReplyError {
    let first = reply.trim().lines().next().unwrap_or("").trim();
    match first {
        "Permission denied" | "Permission denied." => ReplyError::PermissionDenied,
        "No such backend." | "No such proxy." | "Can't find backend." => ReplyError::NoSuchBackend,
        "No such server." => ReplyError::NoSuchServer,
        _ => ReplyError::Unexpected(shorten(reply.trim())),
    }
}

/// Checks the reply to a state change: success is an empty reply.
pub fn check_change_reply(reply: &str) -> Result<(), ReplyError> {
    if reply.trim().is_empty() {
        Ok(())
    } else {
        Err(classify_error(reply))
    }
}

fn shorten(text: &str) -> String {
    const LIMIT: usize = 300;
    match text.char_indices().nth(LIMIT) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}

/// A reply that could not be parsed as the command's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("the reply has no header line; it starts with: {0}")]
    MissingHeader(String),
    #[error("the header has no `{0}` column")]
    MissingColumn(&'static str),
    #[error("line {line}: `{column}` is `{value}`, not a number")]
    BadNumber {
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error("unsupported `show servers state` format version `{0}` (expected 1)")]
    UnsupportedFormat(String),
}

/// One server row of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    pub backend: String,
    pub server: String,
    /// Current sessions.
    pub sessions: u64,
    /// `UP`, `UP 1/3`, `DOWN`, `DRAIN`, `MAINT`, `MAINT (via be/s)`, `no check`, ...
    pub status: String,
    pub weight: u32,
    /// `L7OK`, `L4CON`, ...; empty when the server has no check or is in maintenance.
    pub check_status: String,
    pub check_rise: Option<u32>,
    pub check_fall: Option<u32>,
    pub check_health: Option<u32>,
    /// `address:port` as HAProxy sends traffic to it (HAProxy 1.9 and later).
    pub address: Option<String>,
    pub counters: Counters,
}

mod counters;
pub use counters::Counters;
use counters::RESPONSE_COLUMNS;

/// HAProxy's `type` column: 2 is a server row.
const TYPE_SERVER: &str = "2";

/// Parses `show stat` CSV by column name; any column order, extra columns, quoted values.
pub fn parse_show_stat(reply: &str) -> Result<Vec<StatRow>, ProtoError> {
    let body = reply.trim_start();
    let Some(body) = body.strip_prefix("# ") else {
        return Err(ProtoError::MissingHeader(shorten(body)));
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        _ => return Err(ProtoError::MissingHeader(shorten(body))),
    };
    let columns: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(index, name)| (name, index))
        .collect();
    let column = |name: &'static str| {
        columns
            .get(name)
            .copied()
            .ok_or(ProtoError::MissingColumn(name))
    };
    let (pxname, svname, scur, status, weight, kind) = (
        column("pxname")?,
        column("svname")?,
        column("scur")?,
        column("status")?,
        column("weight")?,
        column("type")?,
    );
    let optional = |name: &str| columns.get(name).copied();
    let (check_status, rise, fall, health, addr) = (
        optional("check_status"),
        optional("check_rise"),
        optional("check_fall"),
        optional("check_health"),
        optional("addr"),
    );
    let responses = RESPONSE_COLUMNS.map(|name| (optional(name), name));
    let (eresp, econ) = (optional("eresp"), optional("econ"));

    let mut rows = Vec::new();
    for (index, record) in records.enumerate() {
        let line = index + 2;
        let record = record.map_err(|error| ProtoError::Malformed {
            line,
            message: error.to_string(),
        })?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let field = |index: usize| record.get(index).unwrap_or("");
        if field(kind) != TYPE_SERVER {
            continue;
        }
        let text = |index: Option<usize>| index.map(field).unwrap_or("").to_owned();
        let optional_number =
            |index: Option<usize>, name: &'static str| -> Result<Option<u32>, ProtoError> {
                match index.map(field).unwrap_or("") {
                    "" => Ok(None),
                    value => value.parse().map(Some).map_err(|_| ProtoError::BadNumber {
                        line,
                        column: name,
                        value: value.to_owned(),
                    }),
                }
            };
        let number = |index: usize, name: &'static str| -> Result<u64, ProtoError> {
            match field(index) {
                "" => Ok(0),
                value => value.parse().map_err(|_| ProtoError::BadNumber {
                    line,
                    column: name,
                    value: value.to_owned(),
                }),
            }
        };
        // A counter HAProxy does not keep for this server (TCP mode) is empty: zero.
        let counter = |index: Option<usize>, name: &'static str| -> Result<u64, ProtoError> {
            index.map_or(Ok(0), |index| number(index, name))
        };
        let mut counters = Counters {
            eresp: counter(eresp, "eresp")?,
            econ: counter(econ, "econ")?,
            ..Counters::default()
        };
        for (slot, (index, name)) in counters.responses.iter_mut().zip(responses) {
            *slot = counter(index, name)?;
        }
        rows.push(StatRow {
            backend: field(pxname).to_owned(),
            server: field(svname).to_owned(),
            sessions: number(scur, "scur")?,
            status: field(status).to_owned(),
            weight: u32::try_from(number(weight, "weight")?).unwrap_or(u32::MAX),
            check_status: text(check_status),
            check_rise: optional_number(rise, "check_rise")?,
            check_fall: optional_number(fall, "check_fall")?,
            check_health: optional_number(health, "check_health")?,
            address: Some(text(addr)).filter(|address| !address.is_empty()),
            counters,
        });
    }
    Ok(rows)
}

/// `srv_admin_state`: a bitmask, not an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminState(pub u32);

impl AdminState {
    /// Maintenance set from the CLI.
    pub const FMAINT: u32 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const IMAINT: u32 = 0x02;
    /// `disabled` in the configuration.
    pub const CMAINT: u32 = 0x04;
    /// Drain set from the CLI.
    pub const FDRAIN: u32 = 0x08;
    /// Drain inherited from a tracked server.
    pub const IDRAIN: u32 = 0x10;
    /// Maintenance because DNS resolution failed.
    pub const RMAINT: u32 = 0x20;

    pub fn in_maintenance(self) -> bool {
        self.0 & (Self::FMAINT | Self::IMAINT | Self::CMAINT | Self::RMAINT) != 0
    }

    pub fn draining(self) -> bool {
        self.0 & (Self::FDRAIN | Self::IDRAIN) != 0
    }

    /// Ready: neither in maintenance nor draining.
    pub fn ready(self) -> bool {
        !self.in_maintenance() && !self.draining()
    }

    /// Why the server is out, in words: `maint (set from the CLI, disabled in the config)`.
    pub fn describe(self) -> String {
        let reasons = |flags: &[(u32, &'static str)]| -> Vec<&'static str> {
            flags
                .iter()
                .filter(|(flag, _)| self.0 & flag != 0)
                .map(|(_, why)| *why)
                .collect()
        };
        let maint = reasons(&[
            (Self::FMAINT, "set from the CLI"),
            (Self::IMAINT, "via a tracked server"),
            (Self::CMAINT, "disabled in the config"),
            (Self::RMAINT, "DNS resolution failed"),
        ]);
        if !maint.is_empty() {
            return format!("maint ({})", maint.join(", "));
        }
        let drain = reasons(&[
            (Self::FDRAIN, "set from the CLI"),
            (Self::IDRAIN, "via a tracked server"),
        ]);
        if !drain.is_empty() {
            return format!("drain ({})", drain.join(", "));
        }
        "ready".to_owned()
    }
}

/// `srv_op_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Unknown(u32),
}

impl OpState {
    fn from_code(code: u32) -> Self {
        match code {
            0 => OpState::Stopped,
            1 => OpState::Starting,
            2 => OpState::Running,
            3 => OpState::Stopping,
            other => OpState::Unknown(other),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Stopped => "stopped",
            OpState::Starting => "starting",
            OpState::Running => "running",
            OpState::Stopping => "stopping",
            OpState::Unknown(_) => "unknown",
        }
    }
}

/// One row of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStateRow {
    pub backend: String,
    pub server: String,
    pub address: String,
    pub port: Option<u16>,
    pub operational: OpState,
    pub admin: AdminState,
    pub weight: u32,
    pub check_health: u32,
}

/// Parses `show servers state` (format version 1) by column name.
pub fn parse_servers_state(reply: &str) -> Result<Vec<ServerStateRow>, ProtoError> {
    let mut lines = reply
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    match lines.next() {
        Some((_, "1")) => {}
        Some((_, other)) => return Err(ProtoError::UnsupportedFormat(shorten(other))),
        None => return Err(ProtoError::MissingHeader(String::new())),
    }
    let header = match lines.next() {
        Some((_, header)) if header.starts_with("# ") => header,
        Some((_, other)) => return Err(ProtoError::MissingHeader(shorten(other))),
        None => return Ok(Vec::new()),
    };
    let columns: HashMap<&str, usize> = header[2..]
        .split_whitespace()
        .enumerate()
        .map(|(index, name)| (name, index))
        .collect();
    let column = |name: &'static str| {
        columns
            .get(name)
            .copied()
            .ok_or(ProtoError::MissingColumn(name))
    };
    let (be_name, srv_name, srv_addr, op_state, admin_state, weight, health, port) = (
        column("be_name")?,
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_op_state")?,
        column("srv_admin_state")?,
        column("srv_uweight")?,
        column("srv_check_health")?,
        columns.get("srv_port").copied(),
    );
    let mut rows = Vec::new();
    for (index, line) in lines {
        let line_number = index + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |index: usize| -> Result<&str, ProtoError> {
            fields
                .get(index)
                .copied()
                .ok_or_else(|| ProtoError::Malformed {
                    line: line_number,
                    message: format!("{} fields, fewer than the header names", fields.len()),
                })
        };
        let number = |index: usize, name: &'static str| -> Result<u32, ProtoError> {
            let value = field(index)?;
            value.parse().map_err(|_| ProtoError::BadNumber {
                line: line_number,
                column: name,
                value: value.to_owned(),
            })
        };
        rows.push(ServerStateRow {
            backend: field(be_name)?.to_owned(),
            server: field(srv_name)?.to_owned(),
            address: field(srv_addr)?.to_owned(),
            // `0` or `-` means no port is known (e.g. a server with only a name to resolve).
            port: port
                .and_then(|index| fields.get(index))
                .and_then(|value| value.parse().ok())
                .filter(|port: &u16| *port != 0),
            operational: OpState::from_code(number(op_state, "srv_op_state")?),
            admin: AdminState(number(admin_state, "srv_admin_state")?),
            weight: number(weight, "srv_uweight")?,
            check_health: number(health, "srv_check_health")?,
        });
    }
    Ok(rows)
}

/// What `show info` says about the process, for reload detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    pub pid: u32,
    /// Absent before HAProxy 2.2.
    pub start_time_sec: Option<u64>,
    pub uptime_sec: Option<u64>,
    pub stopping: bool,
    /// The `node` name (the host name, unless the configuration sets another).
    pub node: String,
}

/// The oldest HAProxy whose replies are fully understood (`show cli level`,
/// `Start_time_sec`), and the newest the tests run against (docs/compatibility.md).
pub const OLDEST_UNDERSTOOD: (u32, u32) = (2, 2);
pub const NEWEST_TESTED: (u32, u32) = (2, 8);

impl Info {
    /// `(major, minor)` of `2.6.12-1+deb12u4`; `None` if the version says no number.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let mut parts = self.version.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    /// Why this version deserves a warning, if it does: older than `OLDEST_UNDERSTOOD`, or
    /// newer than `NEWEST_TESTED`. Never an error: every reply is still read by name.
    pub fn version_warning(&self) -> Option<String> {
        let version = self.major_minor()?;
        let show = |(major, minor): (u32, u32)| format!("{major}.{minor}");
        if version < OLDEST_UNDERSTOOD {
            Some(format!(
                "HAProxy {} is older than {}: its socket level and restarts cannot be fully read",
                self.version,
                show(OLDEST_UNDERSTOOD)
            ))
        } else if version > NEWEST_TESTED {
            Some(format!(
                "HAProxy {} is newer than the newest version tested ({}); see docs/compatibility.md",
                self.version,
                show(NEWEST_TESTED)
            ))
        } else {
            None
        }
    }

    /// An HAProxy that could not be read: no process known, so any process seen later is
    /// a new one.
    pub fn unknown() -> Info {
        Info {
            version: String::new(),
            pid: 0,
            start_time_sec: None,
            uptime_sec: None,
            stopping: false,
            node: String::new(),
        }
    }
    /// Which HAProxy process this is, however it is reached (unix socket, TCP, SSH): the
    /// same process answers with the same node, pid and start time on every socket.
    pub fn identity(&self) -> String {
        format!(
            "{}|{}|{}",
            self.node,
            self.pid,
            self.start_time_sec
                .map_or_else(String::new, |time| time.to_string())
        )
    }

    /// Another process, or the same one restarted: runtime-set states are gone.
    pub fn reloaded_since(&self, earlier: &Info) -> bool {
        self.pid != earlier.pid || self.start_time_sec != earlier.start_time_sec
    }
}

pub fn parse_info(reply: &str) -> Result<Info, ProtoError> {
    let fields: HashMap<&str, &str> = reply
        .lines()
        .filter_map(|line| line.split_once(": "))
        .collect();
    let pid = fields.get("Pid").ok_or(ProtoError::MissingColumn("Pid"))?;
    let pid = pid.parse().map_err(|_| ProtoError::BadNumber {
        line: 0,
        column: "Pid",
        value: (*pid).to_owned(),
    })?;
    let number = |name: &str| fields.get(name).and_then(|value| value.parse().ok());
    Ok(Info {
        version: fields.get("Version").copied().unwrap_or("").to_owned(),
        pid,
        start_time_sec: number("Start_time_sec"),
        uptime_sec: number("Uptime_sec"),
        stopping: fields.get("Stopping").is_some_and(|value| *value == "1"),
        node: fields.get("node").copied().unwrap_or("").to_owned(),
    })
}

/// The level of a runtime-API connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    User,
    Operator,
    Admin,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::User => "user",
            Level::Operator => "operator",
            Level::Admin => "admin",
        }
    }
}

/// `show cli level`; `None` when this HAProxy does not know the command (before 2.2).
pub fn parse_cli_level(reply: &str) -> Option<Level> {
    match reply.trim() {
        "admin" => Some(Level::Admin),
        "operator" => Some(Level::Operator),
        "user" => Some(Level::User),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
