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
            };
        }
        panic!("sshd did not start: {last_error}");
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
