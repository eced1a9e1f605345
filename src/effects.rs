//! Every effect a rollout has on the world, behind one narrow trait: the runtime API of each
//! HAProxy (reads and changes), commands on a server's host (its restart, its hooks, asking
//! whether one still runs), the health probe, and the journal. `RealWorld` is the real world;
//! the driver's tests run it against a fake one.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::haproxy::{AdminTarget, Client, ClientError, Info, ServerView};
use crate::health::HealthChecker;
use crate::journal::{Record, WriteError};
use crate::plan::{BackendName, ServerName};
use crate::ssh::{CommandError, Marker, SshPool, Tracked};

pub trait Effects {
    /// The server views of HAProxy `instance` (plan order).
    fn servers(
        &self,
        instance: usize,
    ) -> impl Future<Output = Result<Vec<ServerView>, ClientError>>;
    /// What `show info` says of HAProxy `instance`'s process.
    fn info(&self, instance: usize) -> impl Future<Output = Result<Info, ClientError>>;
    fn set_state(
        &self,
        instance: usize,
        backend: &BackendName,
        server: &ServerName,
        target: AdminTarget,
    ) -> impl Future<Output = Result<(), ClientError>>;
    fn shutdown_sessions(
        &self,
        instance: usize,
        backend: &BackendName,
        server: &ServerName,
    ) -> impl Future<Output = Result<(), ClientError>>;
    /// Runs a command line on `host` (`None`: this machine), output captured, within
    /// `deadline` here.
    fn run(
        &self,
        host: Option<&str>,
        command: &str,
        deadline: Duration,
    ) -> impl Future<Output = Result<String, CommandError>>;
    /// Whether the command behind `marker` still runs on `host` (`None`: this machine),
    /// asked over a fresh connection.
    fn check(
        &self,
        host: Option<&str>,
        marker: &Marker,
    ) -> impl Future<Output = Result<Tracked, String>>;
    /// Asks a health URL once.
    fn probe(&self, url: &str) -> impl Future<Output = Result<(), String>>;
    /// The body of a URL that answers 2xx, within `timeout`.
    fn fetch(&self, url: &str, timeout: Duration) -> impl Future<Output = Result<String, String>>;
    /// Appends a record to the journal (durable before it returns: fsynced, or confirmed
    /// by etcd while this process holds its lock).
    fn record(&self, record: &Record) -> Result<(), WriteError>;
}

/// The real world: HAProxy runtime APIs, SSH, HTTP, the journal file.
pub struct RealWorld<'a> {
    pub clients: Vec<Client>,
    /// The SSH connections of this run (`None`: no host can be reached).
    pub ssh: Option<&'a SshPool>,
    pub health: HealthChecker,
    pub journal: Mutex<crate::state::Writer>,
}

impl Effects for RealWorld<'_> {
    async fn servers(&self, instance: usize) -> Result<Vec<ServerView>, ClientError> {
        self.clients[instance].servers().await
    }

    async fn info(&self, instance: usize) -> Result<Info, ClientError> {
        self.clients[instance].info().await
    }

    async fn set_state(
        &self,
        instance: usize,
        backend: &BackendName,
        server: &ServerName,
        target: AdminTarget,
    ) -> Result<(), ClientError> {
        self.clients[instance]
            .set_state(backend, server, target)
            .await
    }

    async fn shutdown_sessions(
        &self,
        instance: usize,
        backend: &BackendName,
        server: &ServerName,
    ) -> Result<(), ClientError> {
        self.clients[instance]
            .shutdown_sessions(backend, server)
            .await
    }

    async fn run(
        &self,
        host: Option<&str>,
        command: &str,
        deadline: Duration,
    ) -> Result<String, CommandError> {
        match (host, self.ssh) {
            (None, _) => crate::local::run(command, deadline).await,
            (Some(host), Some(ssh)) => ssh.run(host, command, deadline).await,
            (Some(host), None) => Err(CommandError::Lost {
                host: host.to_owned(),
                command: command.to_owned(),
                detail: "no SSH connection was opened for this run".to_owned(),
            }),
        }
    }

    async fn check(&self, host: Option<&str>, marker: &Marker) -> Result<Tracked, String> {
        match (host, self.ssh) {
            (None, _) => crate::local::check(marker).await,
            (Some(host), Some(ssh)) => ssh.check(host, marker).await,
            (Some(_), None) => Err("no SSH settings for this run".to_owned()),
        }
    }

    async fn probe(&self, url: &str) -> Result<(), String> {
        self.health.probe(url).await
    }

    async fn fetch(&self, url: &str, timeout: Duration) -> Result<String, String> {
        self.health.fetch(url, timeout).await
    }

    fn record(&self, record: &Record) -> Result<(), WriteError> {
        self.journal
            .lock()
            .expect("the journal lock")
            .append(record)
    }
}
