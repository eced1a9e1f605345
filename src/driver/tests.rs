//! The driver against a fake world (`Effects`): what it does between the engine and the
//! world, without a real HAProxy: shared polls, journaling, and noticing a reload.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::engine::Topology;
use crate::engine::rollout::{Outcome, Rollout, ServerState};
use crate::haproxy::ServerView;
use crate::plan::BackendName;
use crate::ssh::{CommandError, Marker, Tracked};

const PLAN: &str = "version: 1\nhaproxy:\n  - name: lb1\n    socket: /run/haproxy/admin.sock\n\
    backends: [be_app]\nservers:\n  - name: app1\n  - name: app2\n\
    restart:\n  command: /bin/true\npoll_interval: 10ms\n";

/// One fake HAProxy in front of two servers, whose views follow the changes made; `show
/// info` answers a new process once `reload` is set, and a reload drops runtime states.
struct Fake {
    views: Mutex<Vec<ServerView>>,
    pid: Mutex<u32>,
    /// Reload (a new pid, runtime states dropped) right after the first drain of app1.
    reload_after_drain: bool,
    changes: Mutex<Vec<String>>,
    records: Mutex<Vec<Record>>,
}

fn view(server: &str) -> ServerView {
    ServerView::fixture(server)
}

impl Fake {
    fn new(reload_after_drain: bool) -> Fake {
        Fake {
            views: Mutex::new(vec![view("app1"), view("app2")]),
            pid: Mutex::new(100),
            reload_after_drain,
            changes: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
        }
    }

    fn apply(view: &mut ServerView, target: AdminTarget) {
        view.set_to(target);
    }
}

impl Effects for Fake {
    async fn servers(&self, _instance: usize) -> Result<Vec<ServerView>, ClientError> {
        Ok(self.views.lock().unwrap().clone())
    }

    async fn info(&self, _instance: usize) -> Result<Info, ClientError> {
        Ok(Info {
            version: "2.6.12".into(),
            pid: *self.pid.lock().unwrap(),
            start_time_sec: Some(1),
            uptime_sec: Some(1),
            stopping: false,
            node: "fake".into(),
        })
    }

    async fn set_state(
        &self,
        _instance: usize,
        _backend: &BackendName,
        server: &ServerName,
        target: AdminTarget,
    ) -> Result<(), ClientError> {
        let mut changes = self.changes.lock().unwrap();
        changes.push(format!("{server} {}", target.as_str()));
        let mut views = self.views.lock().unwrap();
        let view = views
            .iter_mut()
            .find(|view| view.server == server.as_str())
            .unwrap();
        Fake::apply(view, target);
        let first_drain = *changes == ["app1 drain"];
        if self.reload_after_drain && first_drain {
            // The reload: a new process, and every runtime-set state gone.
            *self.pid.lock().unwrap() = 200;
            for view in views.iter_mut() {
                Fake::apply(view, AdminTarget::Ready);
            }
        }
        Ok(())
    }

    async fn shutdown_sessions(
        &self,
        _instance: usize,
        _backend: &BackendName,
        _server: &ServerName,
    ) -> Result<(), ClientError> {
        Ok(())
    }

    async fn run(
        &self,
        _host: Option<&str>,
        _command: &str,
        _deadline: Duration,
    ) -> Result<String, CommandError> {
        Ok(String::new())
    }

    async fn check(&self, _host: Option<&str>, _marker: &Marker) -> Result<Tracked, String> {
        Ok(Tracked::Ended)
    }

    async fn probe(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }

    async fn fetch(&self, url: &str, _timeout: Duration) -> Result<String, String> {
        Err(format!("GET {url}: the fake world serves no bodies"))
    }

    fn record(&self, record: &Record) -> Result<(), crate::journal::WriteError> {
        self.records.lock().unwrap().push(record.clone());
        Ok(())
    }
}

fn driver(plan: &Plan, fake: Fake) -> Driver<'_, Fake> {
    let backends = [BackendName::new("be_app").unwrap()];
    let targets = plan
        .servers
        .iter()
        .map(|server| PlaceholderValues {
            server: server.name.to_string(),
            host: "10.0.0.1".into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
            previous: None,
        })
        .collect();
    let identity = Info {
        version: "2.6.12".into(),
        pid: 100,
        start_time_sec: Some(1),
        uptime_sec: Some(1),
        stopping: false,
        node: "fake".into(),
    };
    let topology = Topology::uniform(1, plan.servers.len(), &backends);
    Driver::new(plan, fake, targets, topology, vec![identity], "test".into())
}

fn engine(plan: &Plan) -> Rollout {
    let backends = [BackendName::new("be_app").unwrap()];
    let topology = Topology::uniform(1, plan.servers.len(), &backends);
    let limits = crate::engine::Limits::new(plan.capacity.max_unavailable, &topology, |_, _| 2);
    Rollout::new(plan, topology, limits)
}

#[tokio::test]
async fn every_change_is_journaled_before_and_after_and_the_rollout_completes() {
    let plan = crate::plan::parse(PLAN).unwrap();
    let driver = driver(&plan, Fake::new(false));
    let finish = driver.run(engine(&plan), |_| {}).await;
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    let changes = driver.effects.changes.lock().unwrap().clone();
    assert_eq!(
        changes,
        [
            "app1 drain",
            "app1 maint",
            "app1 drain",
            "app1 ready",
            "app2 drain",
            "app2 maint",
            "app2 drain",
            "app2 ready"
        ]
    );
    let records = driver.effects.records.lock().unwrap();
    // Each change: its intent, then its outcome; the restart's intent names its marker.
    let intents = records
        .iter()
        .filter(|record| matches!(record, Record::Intent { .. }))
        .count();
    let outcomes = records
        .iter()
        .filter(|record| matches!(record, Record::Outcome { .. }))
        .count();
    assert_eq!(intents, 10, "8 changes and 2 restarts");
    assert_eq!(outcomes, 10);
    assert!(records.iter().any(|record| matches!(
        record,
        Record::Intent {
            change: Change::Restart,
            command: Some(SentCommand { .. }),
            ..
        }
    )));
}

/// Property 7, through the driver: a reload right after app1's drain is noticed (its
/// process changed), the engine's answer (drain again) is applied on that HAProxy and
/// journaled, and the rollout goes on.
#[tokio::test]
async fn a_reload_after_the_drain_is_noticed_and_the_drain_put_back() {
    let plan = crate::plan::parse(PLAN).unwrap();
    let driver = driver(&plan, Fake::new(true));
    let mut reports = Vec::new();
    let finish = driver
        .run(engine(&plan), |report| reports.push(report.clone()))
        .await;
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    assert!(
        finish
            .servers
            .iter()
            .all(|result| result.state == ServerState::Done)
    );
    let changes = driver.effects.changes.lock().unwrap().clone();
    assert_eq!(&changes[..2], ["app1 drain", "app1 drain"], "{changes:?}");
    assert!(reports.iter().any(|report| matches!(
        report,
        Report::Reloaded { pid: 200, reapplied: Some(text), .. } if text == "app1 drain"
    )));
    assert!(
        driver
            .effects
            .records
            .lock()
            .unwrap()
            .iter()
            .any(|record| matches!(record, Record::Reload { pid: 200, .. }))
    );
}
