//! A real etcd cluster for tests (Debian's etcd-server): one or three members on 127.0.0.1
//! with free ports and a temporary data folder, plain or with TLS and client certificates
//! made by the test (openssl). Every member is killed, and its folder removed, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::lab::free_port;

pub struct Etcd {
    pub dir: tempfile::TempDir,
    members: Vec<Member>,
    pub tls: Option<Tls>,
}

struct Member {
    client_port: u16,
    /// How it was started, to start it again on the same data.
    command: Vec<std::ffi::OsString>,
    log: PathBuf,
    process: Option<Child>,
}

/// Files for TLS: the CA that signed the members' and the client's certificates, the
/// client's certificate and key, and a second CA that signed nothing of this cluster.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub wrong_ca: PathBuf,
}

impl Etcd {
    pub fn start(members: usize) -> Etcd {
        Self::launch(members, false)
    }

    /// One member that speaks only TLS and asks every client for a certificate its CA signed.
    pub fn start_tls() -> Etcd {
        Self::launch(1, true)
    }

    fn launch(count: usize, tls: bool) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("hr-etcd")
            .tempdir()
            .expect("temp dir");
        let tls = tls.then(|| make_certificates(dir.path()));
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(index, (_, peer))| format!("m{index}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("hr-{}-{}", std::process::id(), ports[0].0);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let members = ports
            .iter()
            .enumerate()
            .map(|(index, (client, peer))| {
                let data = dir.path().join(format!("m{index}"));
                let client_url = format!("{scheme}://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = dir.path().join(format!("m{index}.log"));
                let mut command = Command::new("etcd");
                command
                    .args(["--name", &format!("m{index}")])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &cluster.join(",")])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", &token])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .args(["--logger", "zap", "--log-level", "warn"]);
                if let Some(tls) = &tls {
                    command
                        .arg("--cert-file")
                        .arg(dir.path().join("server.pem"))
                        .arg("--key-file")
                        .arg(dir.path().join("server.key"))
                        .arg("--trusted-ca-file")
                        .arg(&tls.ca)
                        .arg("--client-cert-auth");
                }
                let mut member = Member {
                    client_port: *client,
                    command: command.get_args().map(ToOwned::to_owned).collect(),
                    log,
                    process: None,
                };
                member.spawn();
                member
            })
            .collect();
        let etcd = Etcd { dir, members, tls };
        etcd.wait_healthy();
        etcd
    }

    /// The client URLs of every member, comma-separated (what `--state-etcd` takes).
    pub fn endpoints(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|member| format!("{scheme}://127.0.0.1:{}", member.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The plan's `state:` section for this cluster.
    pub fn plan_section(&self, lease_ttl: &str) -> String {
        let endpoints = self.endpoints().replace(',', ", ");
        let mut text =
            format!("state:\n  etcd:\n    endpoints: [{endpoints}]\n    lease_ttl: {lease_ttl}\n");
        if let Some(tls) = &self.tls {
            text.push_str(&format!(
                "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
        }
        text
    }

    /// etcdctl against the cluster (as a client with the test's certificate).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .args(["--command-timeout=2s", "--dial-timeout=2s"]);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--key={}", tls.key.display()));
        }
        command
            .args(args)
            .output()
            .expect("etcdctl runs (Debian: etcd-client)")
    }

    fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let output = self.etcdctl(&["put", "/hr-test/ready", "yes"]);
            if output.status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not become healthy: {}; logs in {}",
                String::from_utf8_lossy(&output.stderr),
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `index` (SIGKILL): its lease keeping and votes stop at once.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts member `index` again on its data (after `kill`), and waits for a healthy
    /// cluster.
    pub fn restart(&mut self, index: usize) {
        self.members[index].spawn();
        self.wait_healthy();
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let output = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Member {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("etcd")
            .args(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (Debian: etcd-server)");
        self.process = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a
/// second, unrelated CA.
fn make_certificates(dir: &Path) -> Tls {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "wrong-ca"] {
        let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
        let subject = format!("/CN=haproxy-rollout test {ca}");
        args.push(&subject);
        args.extend(ec);
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        args.extend(["-keyout", &key, "-out", &pem]);
        openssl(&args);
    }
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-subj", &subject];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(&args);
        let extensions = format!("{name}.ext");
        std::fs::write(
            dir.join(&extensions),
            format!(
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &extensions,
            "-out",
            &pem,
        ]);
    }
    Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client.key"),
        wrong_ca: dir.join("wrong-ca.pem"),
    }
}
