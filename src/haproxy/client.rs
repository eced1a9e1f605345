//! Talks to one HAProxy runtime API: one connection per command, write, half-close, read
//! to EOF, all within one deadline so a hung socket cannot hang the tool.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::proto::{
    self, AdminTarget, Info, Level, ProtoError, ReplyError, RuntimeCommand, ServerStateRow, StatRow,
};
use super::view::{ServerView, Snapshot};
use crate::plan::{BackendName, ServerName, SocketAddress};

/// Replies larger than this are not a runtime API talking (`show stat` of 10,000 servers is
/// about 15 MB).
const MAX_REPLY: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the HAProxy runtime API at {address}")]
    Unreachable {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HAProxy at {address} did not answer `{command}` within {}ms", timeout.as_millis())]
    Timeout {
        address: String,
        command: String,
        timeout: Duration,
    },
    #[error(
        "permission denied for `{command}` at {address}: the socket is not at admin level \
         (it needs `stats socket ... level admin`)"
    )]
    PermissionDenied { address: String, command: String },
    #[error("HAProxy at {address} has no backend `{backend}`")]
    NoSuchBackend { address: String, backend: String },
    #[error("HAProxy at {address} has no server `{server}` in backend `{backend}`")]
    NoSuchServer {
        address: String,
        backend: String,
        server: String,
    },
    #[error("unexpected reply from HAProxy at {address} to `{command}`: {reply}")]
    Unexpected {
        address: String,
        command: String,
        reply: String,
    },
    #[error("cannot read the reply from HAProxy at {address} to `{command}`")]
    Protocol {
        address: String,
        command: String,
        #[source]
        source: ProtoError,
    },
}

/// A runtime-API client for one HAProxy instance.
#[derive(Debug, Clone)]
pub struct Client {
    address: SocketAddress,
    timeout: Duration,
    /// The SSH session to the HAProxy host, for an `ssh://` socket.
    ssh: Option<std::sync::Arc<openssh::Session>>,
}

impl Client {
    pub fn new(address: SocketAddress, timeout: Duration) -> Self {
        Client {
            address,
            timeout,
            ssh: None,
        }
    }

    /// A client for an `ssh://` socket, over an open session to its host.
    pub fn over_ssh(
        address: SocketAddress,
        timeout: Duration,
        session: std::sync::Arc<openssh::Session>,
    ) -> Self {
        Client {
            address,
            timeout,
            ssh: Some(session),
        }
    }

    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// Sends one command and returns the whole reply.
    pub async fn request(&self, command: &RuntimeCommand<'_>) -> Result<String, ClientError> {
        let line = command.to_string();
        debug_assert!(
            !line.contains(['\n', ';']),
            "validated names cannot hold separators"
        );
        tracing::trace!(address = %self.address, command = %line, "runtime API");
        let exchange = async {
            match &self.address {
                SocketAddress::Unix(path) => {
                    let stream = UnixStream::connect(path)
                        .await
                        .map_err(|source| self.unreachable(source))?;
                    self.exchange(stream, &line).await
                }
                SocketAddress::Tcp { host, port } => {
                    let stream = TcpStream::connect((host.as_str(), *port))
                        .await
                        .map_err(|source| self.unreachable(source))?;
                    self.exchange(stream, &line).await
                }
                SocketAddress::Ssh { path, .. } => self.exchange_over_ssh(path, &line).await,
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                address: self.address.to_string(),
                command: line.clone(),
                timeout: self.timeout,
            })?
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        line: &str,
    ) -> Result<String, ClientError> {
        let io_error = |source| self.unreachable(source);
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io_error)?;
        stream.shutdown().await.map_err(io_error)?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(MAX_REPLY)
            .read_to_end(&mut reply)
            .await
            .map_err(io_error)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// `socat` on the HAProxy host relays the command to its unix socket: the same
    /// one-connection-per-command exchange, over the multiplexed SSH session.
    async fn exchange_over_ssh(
        &self,
        path: &std::path::Path,
        line: &str,
    ) -> Result<String, ClientError> {
        let lost = |detail: String| self.unreachable(std::io::Error::other(detail));
        let session = self
            .ssh
            .clone()
            .ok_or_else(|| lost("no SSH connection to the HAProxy host was opened".to_owned()))?;
        let target = format!("unix-connect:{}", path.display());
        let mut child = openssh::Session::to_raw_command(
            session,
            format!(
                "socat stdio {}",
                crate::plan::template::shell_quote(&target)
            ),
        )
        .stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped())
        .spawn()
        .await
        .map_err(|error| lost(crate::error::error_chain(&error)))?;
        if let Some(mut stdin) = child.stdin().take() {
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(|source| self.unreachable(source))?;
            // Closing stdin is the half-close: socat then reads the reply to its end.
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|error| lost(crate::error::error_chain(&error)))?;
        if !output.status.success() {
            return Err(lost(format!(
                "socat on the HAProxy host failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            address: self.address.to_string(),
            source,
        }
    }

    fn reply_error(&self, command: &RuntimeCommand<'_>, error: ReplyError) -> ClientError {
        let address = self.address.to_string();
        match (error, command) {
            (ReplyError::PermissionDenied, _) => ClientError::PermissionDenied {
                address,
                command: command.to_string(),
            },
            (
                ReplyError::NoSuchBackend,
                RuntimeCommand::SetState { backend, .. }
                | RuntimeCommand::ShutdownSessions { backend, .. }
                | RuntimeCommand::SetWeight { backend, .. },
            ) => ClientError::NoSuchBackend {
                address,
                backend: backend.to_string(),
            },
            (
                ReplyError::NoSuchServer,
                RuntimeCommand::SetState {
                    backend, server, ..
                }
                | RuntimeCommand::ShutdownSessions { backend, server }
                | RuntimeCommand::SetWeight {
                    backend, server, ..
                },
            ) => ClientError::NoSuchServer {
                address,
                backend: backend.to_string(),
                server: server.to_string(),
            },
            (error, _) => ClientError::Unexpected {
                address,
                command: command.to_string(),
                reply: error.to_string(),
            },
        }
    }

    fn parse<T>(
        &self,
        command: &RuntimeCommand<'_>,
        reply: &str,
        parse: impl Fn(&str) -> Result<T, ProtoError>,
    ) -> Result<T, ClientError> {
        parse(reply).map_err(|source| {
            // An error text in place of the output says more than the parse failure.
            match proto::classify_error(reply) {
                ReplyError::Unexpected(_) => ClientError::Protocol {
                    address: self.address.to_string(),
                    command: command.to_string(),
                    source,
                },
                known => self.reply_error(command, known),
            }
        })
    }

    pub async fn show_stat(&self) -> Result<Vec<StatRow>, ClientError> {
        let command = RuntimeCommand::ShowStatServers;
        let reply = self.request(&command).await?;
        self.parse(&command, &reply, proto::parse_show_stat)
    }

    pub async fn servers_state(&self) -> Result<Vec<ServerStateRow>, ClientError> {
        let command = RuntimeCommand::ShowServersState;
        let reply = self.request(&command).await?;
        self.parse(&command, &reply, proto::parse_servers_state)
    }

    pub async fn info(&self) -> Result<Info, ClientError> {
        let command = RuntimeCommand::ShowInfo;
        let reply = self.request(&command).await?;
        self.parse(&command, &reply, proto::parse_info)
    }

    /// The level of this socket, read without changing anything; `None` if this HAProxy
    /// cannot say.
    pub async fn level(&self) -> Result<Option<Level>, ClientError> {
        let reply = self.request(&RuntimeCommand::ShowCliLevel).await?;
        Ok(proto::parse_cli_level(&reply))
    }

    /// Reads everything the rollout needs to know about this instance now.
    pub async fn snapshot(&self) -> Result<Snapshot, ClientError> {
        let (info, level, stats, states) = tokio::try_join!(
            self.info(),
            self.level(),
            self.show_stat(),
            self.servers_state()
        )?;
        Ok(Snapshot::new(
            info,
            level,
            ServerView::combine(&stats, &states),
        ))
    }

    /// The server views of every server (two commands, whatever the number of servers).
    pub async fn servers(&self) -> Result<Vec<ServerView>, ClientError> {
        let (stats, states) = tokio::try_join!(self.show_stat(), self.servers_state())?;
        Ok(ServerView::combine(&stats, &states))
    }

    pub async fn set_state(
        &self,
        backend: &BackendName,
        server: &ServerName,
        state: AdminTarget,
    ) -> Result<(), ClientError> {
        self.change(&RuntimeCommand::SetState {
            backend,
            server,
            state,
        })
        .await
    }

    pub async fn shutdown_sessions(
        &self,
        backend: &BackendName,
        server: &ServerName,
    ) -> Result<(), ClientError> {
        self.change(&RuntimeCommand::ShutdownSessions { backend, server })
            .await
    }

    pub async fn set_weight(
        &self,
        backend: &BackendName,
        server: &ServerName,
        weight: u16,
    ) -> Result<(), ClientError> {
        self.change(&RuntimeCommand::SetWeight {
            backend,
            server,
            weight,
        })
        .await
    }

    async fn change(&self, command: &RuntimeCommand<'_>) -> Result<(), ClientError> {
        let reply = self.request(command).await?;
        proto::check_change_reply(&reply).map_err(|error| self.reply_error(command, error))
    }
}
