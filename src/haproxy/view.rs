//! One server as one HAProxy sees it, combined from `show stat` and `show servers state`,
//! and a whole instance's state read at one moment.

use std::collections::HashMap;

use super::proto::{AdminState, Counters, Info, Level, OpState, ServerStateRow, StatRow};

/// A server in one backend of one HAProxy instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub backend: String,
    pub server: String,
    pub admin: AdminState,
    pub operational: OpState,
    /// HAProxy's status text: `UP`, `UP 1/3`, `DOWN`, `DRAIN`, `MAINT`, `no check`, ...
    pub status: String,
    /// `L7OK`, `L4CON`, ...; empty without a check or in maintenance.
    pub check_status: String,
    pub check_health: Option<u32>,
    pub check_rise: Option<u32>,
    pub check_fall: Option<u32>,
    pub sessions: u64,
    pub weight: u32,
    /// Where HAProxy sends this server's traffic.
    pub address: String,
    pub port: Option<u16>,
    /// What it answered since its HAProxy process started.
    pub counters: Counters,
}

impl ServerView {
    /// Joins the two replies on (backend, server); a server missing from either is left out.
    pub fn combine(stats: &[StatRow], states: &[ServerStateRow]) -> Vec<ServerView> {
        let by_name: std::collections::HashMap<(&str, &str), &ServerStateRow> = states
            .iter()
            .map(|row| ((row.backend.as_str(), row.server.as_str()), row))
            .collect();
        stats
            .iter()
            .filter_map(|stat| {
                let state = by_name.get(&(stat.backend.as_str(), stat.server.as_str()))?;
                Some(ServerView {
                    backend: stat.backend.clone(),
                    server: stat.server.clone(),
                    admin: state.admin,
                    operational: state.operational,
                    status: stat.status.clone(),
                    check_status: stat.check_status.clone(),
                    check_health: stat.check_health,
                    check_rise: stat.check_rise,
                    check_fall: stat.check_fall,
                    sessions: stat.sessions,
                    weight: stat.weight,
                    address: state.address.clone(),
                    port: state.port,
                    counters: stat.counters,
                })
            })
            .collect()
    }

    /// HAProxy checks this server (its status is not `no check`).
    pub fn is_checked(&self) -> bool {
        !self.status.starts_with("no check")
    }

    /// The last check passed (`* ` marks a check in progress).
    pub fn last_check_passed(&self) -> bool {
        let status = self.check_status.trim_start_matches("* ");
        matches!(status, "L4OK" | "L6OK" | "L7OK" | "L7OKC")
    }

    /// `UP` exactly: up, and not on its way down (`UP 1/3`).
    pub fn is_fully_up(&self) -> bool {
        self.status == "UP" || (!self.is_checked() && self.operational == OpState::Running)
    }

    /// Takes new traffic now: ready, running, fully up, weight above zero.
    pub fn in_rotation(&self) -> bool {
        self.admin.ready()
            && self.operational == OpState::Running
            && self.is_fully_up()
            && self.weight > 0
    }

    /// The admin state in words: `ready`, `drain (set from the CLI)`, `maint (...)`.
    pub fn admin_text(&self) -> String {
        self.admin.describe()
    }

    /// What an operator should know about this server before a rollout.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.admin.in_maintenance() {
            warnings.push(format!("in maintenance: {}", self.admin_text()));
        } else if self.admin.draining() {
            warnings.push(format!("drained: {}", self.admin_text()));
        }
        if self.weight == 0 {
            warnings.push("weight 0: takes no traffic although its status says UP".to_owned());
        }
        if !self.admin.in_maintenance() && !self.is_fully_up() && !self.status.starts_with("DRAIN")
        {
            warnings.push(format!("not UP: {}", self.status));
        }
        warnings
    }
}

/// Everything read from one HAProxy instance at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub info: Info,
    /// `None`: this HAProxy cannot say (`show cli level` is 2.2 and later).
    pub level: Option<Level>,
    pub servers: Vec<ServerView>,
    /// (backend, server) → index in `servers`, so lookups stay fast with thousands of servers.
    index: HashMap<(String, String), usize>,
}

impl Snapshot {
    pub fn new(info: Info, level: Option<Level>, servers: Vec<ServerView>) -> Self {
        let index = servers
            .iter()
            .enumerate()
            .map(|(position, view)| ((view.backend.clone(), view.server.clone()), position))
            .collect();
        Snapshot {
            info,
            level,
            servers,
            index,
        }
    }

    pub fn server(&self, backend: &str, server: &str) -> Option<&ServerView> {
        self.index
            .get(&(backend.to_owned(), server.to_owned()))
            .map(|position| &self.servers[*position])
    }

    pub fn backend(&self, backend: &str) -> impl Iterator<Item = &ServerView> {
        self.servers
            .iter()
            .filter(move |view| view.backend == backend)
    }

    pub fn has_backend(&self, backend: &str) -> bool {
        self.backend(backend).next().is_some()
    }
}

/// A server as the fake HAProxy of the unit tests shows it: ready, running and UP in
/// `be_app`, checked, no session.
#[cfg(test)]
impl ServerView {
    pub(crate) fn fixture(server: &str) -> ServerView {
        ServerView {
            backend: "be_app".into(),
            server: server.into(),
            admin: AdminState(0),
            operational: OpState::Running,
            status: "UP".into(),
            check_status: "L7OK".into(),
            check_health: Some(3),
            check_rise: Some(2),
            check_fall: Some(2),
            sessions: 0,
            weight: 1,
            address: "10.0.0.1".into(),
            port: Some(8080),
            counters: Counters::default(),
        }
    }

    /// As HAProxy shows a server right after `set server ... state TARGET` whose checks pass.
    pub(crate) fn set_to(&mut self, target: super::proto::AdminTarget) {
        let (admin, status) = match target {
            super::proto::AdminTarget::Drain => (AdminState::FDRAIN, "DRAIN"),
            super::proto::AdminTarget::Maint => (AdminState::FMAINT, "MAINT"),
            super::proto::AdminTarget::Ready => (0, "UP"),
        };
        self.admin = AdminState(admin);
        self.status = status.into();
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{parse_servers_state, parse_show_stat};
    use super::*;

    fn views(stat: &str, state: &str) -> Vec<ServerView> {
        ServerView::combine(
            &parse_show_stat(stat).unwrap(),
            &parse_servers_state(state).unwrap(),
        )
    }

    #[test]
    fn combines_both_replies() {
        let views = views(
            include_str!("../../tests/data/haproxy/show-stat-2.6.csv"),
            include_str!("../../tests/data/haproxy/show-servers-state-2.6.txt"),
        );
        assert_eq!(views.len(), 3);
        assert!(views[0].in_rotation());
        assert!(views[0].last_check_passed());
        assert_eq!(views[0].port, Some(18081));
        assert!(!views[1].in_rotation(), "drained");
        assert_eq!(
            views[1].warnings(),
            vec!["drained: drain (set from the CLI)".to_owned()]
        );
        assert!(!views[2].in_rotation(), "disabled in the config");
        assert_eq!(
            views[2].warnings(),
            vec!["in maintenance: maint (set from the CLI, disabled in the config)".to_owned()]
        );
    }

    #[test]
    fn a_dead_drained_server_is_reported_down() {
        let views = views(
            include_str!("../../tests/data/haproxy/show-stat-maint-down-2.6.csv"),
            include_str!("../../tests/data/haproxy/show-servers-state-maint-down-2.6.txt"),
        );
        let dead = &views[1];
        assert_eq!(dead.status, "DOWN");
        assert!(!dead.last_check_passed());
        assert_eq!(
            dead.warnings(),
            vec![
                "drained: drain (set from the CLI)".to_owned(),
                "not UP: DOWN".to_owned()
            ]
        );
    }

    fn up_view() -> ServerView {
        ServerView {
            backend: "be_app".into(),
            server: "app1".into(),
            admin: AdminState(0),
            operational: OpState::Running,
            status: "UP".into(),
            check_status: "L7OK".into(),
            check_health: Some(4),
            check_rise: Some(2),
            check_fall: Some(3),
            sessions: 0,
            weight: 1,
            address: "127.0.0.1".into(),
            port: Some(8080),
            counters: Counters::default(),
        }
    }

    #[test]
    fn up_going_down_is_not_fully_up() {
        let mut view = up_view();
        assert!(view.in_rotation());
        view.status = "UP 1/3".into();
        assert!(!view.is_fully_up());
        assert!(!view.in_rotation());
    }

    #[test]
    fn weight_zero_is_out_of_rotation_though_up() {
        let mut view = up_view();
        view.weight = 0;
        assert!(view.is_fully_up());
        assert!(!view.in_rotation());
        assert_eq!(view.warnings().len(), 1);
    }

    #[test]
    fn a_check_in_progress_keeps_its_last_result() {
        let mut view = up_view();
        view.check_status = "* L7OK".into();
        assert!(view.last_check_passed());
        view.check_status = "* L4CON".into();
        assert!(!view.last_check_passed());
    }
}
