//! Small pure parsers for values with a syntax of their own: the `ssh://` form of a socket
//! address, `host:port`, and command templates with their `{placeholders}`.

use std::path::PathBuf;

use super::model::SocketAddress;

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

/// `[user@]host[:port]/absolute/path` of an `ssh://` socket.
pub(super) fn parse_ssh_socket(text: &str) -> Result<SocketAddress, String> {
    let slash = text
        .find('/')
        .ok_or("it has no path to the socket on that host")?;
    let (authority, path) = text.split_at(slash);
    let (user, host_port) = match authority.split_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, authority),
    };
    if let Some(user) = user
        && (user.is_empty()
            || user.starts_with('-')
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    {
        return Err(format!("`{user}` is not a user name"));
    }
    let (host, port) = if host_port.contains(':') && !host_port.starts_with('[') {
        let (host, port) = parse_host_port(host_port)?;
        (host, Some(port))
    } else if let Some(inner) = host_port.strip_prefix('[') {
        match inner.split_once("]:") {
            Some(_) => {
                let (host, port) = parse_host_port(host_port)?;
                (host, Some(port))
            }
            None => (inner.trim_end_matches(']').to_owned(), None),
        }
    } else {
        (host_port.to_owned(), None)
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:%-".contains(c));
    if !host_ok {
        return Err(format!(
            "`{host}` is not a host name, address or ssh_config alias"
        ));
    }
    if path.len() > MAX_UNIX_SOCKET_PATH || path.chars().any(|c| c.is_control()) {
        return Err("the socket path is not a usable unix socket path".to_owned());
    }
    Ok(SocketAddress::Ssh {
        user: user.map(str::to_owned),
        host,
        port,
        path: PathBuf::from(path),
    })
}

/// Splits `host:port` or `[v6]:port`.
pub(super) fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing `]`")?;
        let port = after.strip_prefix(':').ok_or("it has no port")?;
        (host, port)
    } else {
        text.rsplit_once(':').ok_or("it has no port")?
    };
    if host.is_empty() {
        return Err("it has no host".to_owned());
    }
    if host.contains('/') || port.contains('/') {
        return Err("a TCP socket has no path".to_owned());
    }
    if !host.contains(':')
        && host
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || ".-_".contains(c)))
    {
        return Err(format!("`{host}` is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_owned(), port)),
        _ => Err(format!("`{port}` is not a port from 1 to 65535")),
    }
}
