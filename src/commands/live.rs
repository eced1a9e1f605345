//! Reads the live state of every HAProxy in a plan, all at once, over the links `connect`
//! opened: direct sockets need nothing; an `ssh://` socket needs an SSH session to its host,
//! where `socat` relays each command.

use std::sync::Arc;

use crate::engine::Observation;
use crate::error::error_chain;
use crate::haproxy::Client;
use crate::plan::{Plan, SocketAddress};

/// Asks the health URL of every server pre-flight wants asked (those in rotation), at once:
/// a wrong URL is found before a server is taken out, not after.
pub async fn probe_health(
    plan: &Plan,
    preflight: &crate::engine::Preflight,
    observations: &[Observation<'_>],
) -> Vec<(usize, Result<(), String>)> {
    let checker =
        match crate::health::HealthChecker::new(plan.health.timeout, plan.health.expect_status) {
            Ok(checker) => checker,
            Err(error) => {
                let error = format!("cannot make an HTTP client: {}", error_chain(&error));
                return preflight
                    .to_probe(observations)
                    .into_iter()
                    .map(|index| (index, Err(error.clone())))
                    .collect();
            }
        };
    let probes = preflight
        .to_probe(observations)
        .into_iter()
        .filter_map(|index| {
            let values = preflight.targets[index].values.as_ref()?;
            let url =
                crate::plan::template::health_url(plan.servers[index].health_url(plan), values);
            let checker = &checker;
            Some(async move { (index, checker.probe(&url).await) })
        });
    futures::future::join_all(probes).await
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// One client per HAProxy of the plan, or why it cannot be reached.
pub struct Links {
    pub clients: Vec<Result<Client, String>>,
    /// Holds the SSH control sockets while the links are in use.
    _control_directory: Option<tempfile::TempDir>,
}

impl Links {
    /// The clients, when every HAProxy could be linked.
    pub fn all(&self) -> Option<Vec<Client>> {
        self.clients
            .iter()
            .map(|client| client.as_ref().ok().cloned())
            .collect()
    }
}

pub async fn connect(plan: &Plan) -> Links {
    let needs_ssh = plan
        .haproxy
        .iter()
        .any(|instance| matches!(instance.socket, SocketAddress::Ssh { .. }));
    let control_directory = if needs_ssh {
        crate::ssh::control_directory().ok()
    } else {
        None
    };
    let links = plan.haproxy.iter().map(|instance| {
        let control = control_directory.as_ref().map(|dir| dir.path().to_owned());
        async move {
            let SocketAddress::Ssh { user, host, port, .. } = &instance.socket else {
                return Ok(Client::new(instance.socket.clone(), instance.timeout));
            };
            let control = control.ok_or("cannot create a control directory for SSH")?;
            let mut builder = crate::ssh::session_builder(&plan.ssh, &control);
            if let Some(user) = user {
                builder.user(user.clone());
            }
            if let Some(port) = port {
                builder.port(*port);
            }
            let session = crate::ssh::connect(&builder, host)
                .await
                .map_err(|error| format!("cannot reach the HAProxy host over SSH: {error}"))?;
            // Pre-flight: the relay must exist there.
            let socat = session
                .raw_command("command -v socat")
                .output()
                .await
                .map_err(|error| format!("cannot run a command on {host}: {}", error_chain(&error)))?;
            if !socat.status.success() {
                return Err(format!(
                    "socat is not installed on {host}: an ssh:// socket is reached by running socat there"
                ));
            }
            Ok(Client::over_ssh(instance.socket.clone(), instance.timeout, Arc::new(session)))
        }
    });
    Links {
        clients: futures::future::join_all(links).await,
        _control_directory: control_directory,
    }
}

/// One snapshot per HAProxy instance, in plan order; an unreadable one carries its error.
pub async fn observe<'p>(plan: &'p Plan, links: &Links) -> Vec<Observation<'p>> {
    let reads = plan
        .haproxy
        .iter()
        .zip(&links.clients)
        .map(|(instance, client)| async move {
            let state = match client {
                Ok(client) => client.snapshot().await.map_err(|error| error_chain(&error)),
                Err(error) => Err(error.clone()),
            };
            Observation { instance, state }
        });
    futures::future::join_all(reads).await
}
