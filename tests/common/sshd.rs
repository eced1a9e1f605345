//! A real sshd on 127.0.0.1 with its own host key, a client key, and a known_hosts file that
//! trusts exactly that host key. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::lab::{Process, free_port};

pub struct Sshd {
    pub process: Process,
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub config: PathBuf,
    pub host_key: PathBuf,
    /// The daemon's own configuration and log, to start it again on the same port.
    pub sshd_config: PathBuf,
    pub log: PathBuf,
}

fn keygen(file: &Path) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "haproxy-rollout-test",
            "-f",
        ])
        .arg(file)
        .status()
        .expect("ssh-keygen runs (openssh-client installed?)");
    assert!(status.success());
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        let dir = dir.join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation)");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.join("authorized_keys"),
        )
        .unwrap();
        let host_public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_public: Vec<&str> = host_public.split_whitespace().take(2).collect();
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let sshd_config = dir.join("sshd_config");
            std::fs::write(
                &sshd_config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {dir}/authorized_keys\n\
                     PidFile {dir}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nMaxSessions 20\n",
                    host = host_key.display(),
                    dir = dir.display()
                ),
            )
            .unwrap();
            let log = dir.join("sshd.log");
            let child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&sshd_config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .spawn()
                .expect("start sshd (openssh-server installed?)");
            let mut process = Process::new(child);
            let start = Instant::now();
            let mut listening = false;
            while start.elapsed() < Duration::from_secs(10) {
                if process.exited() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    listening = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !listening {
                last_error = std::fs::read_to_string(&log).unwrap_or_default();
                continue;
            }
            let known_hosts = dir.join("known_hosts");
            std::fs::write(
                &known_hosts,
                format!("[127.0.0.1]:{port} {} {}\n", host_public[0], host_public[1]),
            )
            .unwrap();
            // An ssh_config of our own: nothing from ~/.ssh/config or /etc/ssh leaks in.
            let config = dir.join("ssh_config");
            std::fs::write(&config, "Host *\n    BatchMode yes\n    LogLevel ERROR\n").unwrap();
            return Sshd {
                process,
                port,
                client_key,
                known_hosts,
                config,
                host_key,
                sshd_config,
                log,
            };
        }
        panic!("sshd did not start: {last_error}");
    }

    /// Kills the daemon and every connection it serves, as a crash of sshd or a lost
    /// network would end them: the commands they started go on, orphaned.
    pub fn kill_with_connections(&mut self) {
        for pid in sshd_descendants(self.process.pid()) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        self.process.kill();
    }

    /// Starts the daemon again, with the same host key on the same port.
    pub fn start_again(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&self.sshd_config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd again");
        self.process = Process::new(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start again on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `ssh:` section of a plan that reaches this sshd as root.
    pub fn plan_section(&self) -> String {
        format!(
            "ssh:\n  user: root\n  port: {}\n  identity_file: {}\n  known_hosts_file: {}\n  config_file: {}\n  connect_timeout: 5s\n",
            self.port,
            self.client_key.display(),
            self.known_hosts.display(),
            self.config.display()
        )
    }
}

/// The sshd processes below `root` (the per-connection ones), not the commands they run.
fn sshd_descendants(root: u32) -> Vec<u32> {
    let mut parents = vec![root];
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let table: Vec<(u32, u32, String)> = entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let parent: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent, name.to_owned()))
        })
        .collect();
    while let Some(parent) = parents.pop() {
        for (pid, _, name) in table.iter().filter(|(_, of, _)| *of == parent) {
            if name.starts_with("sshd") {
                found.push(*pid);
                parents.push(*pid);
            }
        }
    }
    found
}
