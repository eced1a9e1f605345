//! A lab of real processes on 127.0.0.1: demo application servers and an `haproxy` in front
//! of them. Every port is free when picked, every process is killed when the lab is dropped,
//! and labs run in parallel without sharing anything.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haproxy_rollout::haproxy::{Client, ServerView};
use haproxy_rollout::plan::SocketAddress;

/// How long a lab may take to come up before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The demo application binary, built by `cargo test` as an example.
pub fn demo_app_binary() -> PathBuf {
    let bin = super::rollout_binary();
    let app = bin.parent().unwrap().join("examples").join("demo-app");
    assert!(
        app.exists(),
        "{} is missing: run `cargo build --examples` (plain `cargo test` builds it)",
        app.display()
    );
    app
}

/// A child process killed (and reaped) when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn new(child: Child) -> Self {
        Process { child }
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One running demo application.
pub struct App {
    pub process: Process,
    pub port: u16,
}

impl App {
    pub fn start() -> App {
        let mut child = Command::new(demo_app_binary())
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start demo-app");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read demo-app's first line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("demo-app said {line:?}"));
        App {
            process: Process { child },
            port,
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1. Taken below the ephemeral range
/// (32768 and up), so that no outgoing connection of a test running in parallel holds it
/// by the time the lab binds it, and never the same twice in one test binary.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let offset = start.wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = 20_000 + u16::try_from(offset % 12_000).expect("below 12,000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between 20000 and 31999")
}

#[derive(Clone)]
pub struct LabOptions {
    pub servers: usize,
    /// The path of HAProxy's own health check.
    pub check_path: &'static str,
    /// Indexes of servers marked `disabled` in the configuration.
    pub disabled: Vec<usize>,
    /// `rise`/`fall` of every server's check.
    pub rise: u32,
    pub fall: u32,
    /// Route `/to/appN/...` to appN (`use-server`), to put a request on one server.
    pub route_by_path: bool,
    /// A second backend with the same servers (and its own checks).
    pub second_backend: Option<&'static str>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            servers: 3,
            check_path: "/health",
            disabled: Vec::new(),
            rise: 2,
            fall: 2,
            route_by_path: false,
            second_backend: None,
        }
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub apps: Vec<App>,
    pub haproxy: Process,
    /// Processes replaced by a reload, still finishing their sessions.
    pub old_haproxy: Vec<Process>,
    pub admin_socket: PathBuf,
    pub operator_socket: PathBuf,
    pub user_socket: PathBuf,
    pub tcp_port: u16,
    pub frontend_port: u16,
}

impl Lab {
    /// Three servers `app1..app3` in backend `be_app`, all UP.
    pub fn start() -> Lab {
        Lab::with(LabOptions::default())
    }

    pub fn with(options: LabOptions) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("hr-lab")
            .tempdir()
            .expect("temp dir");
        let apps: Vec<App> = (0..options.servers).map(|_| App::start()).collect();
        let ports: Vec<u16> = apps.iter().map(|app| app.port).collect();
        Lab::around(dir, apps, &ports, options)
    }

    /// Starts haproxy in `dir` in front of servers listening on `ports`.
    pub fn around(
        dir: tempfile::TempDir,
        apps: Vec<App>,
        ports: &[u16],
        options: LabOptions,
    ) -> Lab {
        let admin_socket = dir.path().join("admin.sock");
        let operator_socket = dir.path().join("operator.sock");
        let user_socket = dir.path().join("user.sock");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let tcp_port = free_port();
            let frontend_port = free_port();
            let config = config(&options, ports, dir.path(), tcp_port, frontend_port);
            let config_file = dir.path().join("haproxy.cfg");
            std::fs::write(&config_file, config).unwrap();
            let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
            let child = Command::new(haproxy_binary())
                .arg("-db")
                .arg("-f")
                .arg(&config_file)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "start {} (is it installed? scripts/install-deps): {error}",
                        haproxy_binary()
                    )
                });
            let mut haproxy = Process { child };
            match wait_for_socket(&mut haproxy, &admin_socket) {
                Ok(()) => {
                    let lab = Lab {
                        dir,
                        apps,
                        haproxy,
                        old_haproxy: Vec::new(),
                        admin_socket,
                        operator_socket,
                        user_socket,
                        tcp_port,
                        frontend_port,
                    };
                    // Every enabled server, in every backend.
                    let backends = 1 + usize::from(options.second_backend.is_some());
                    let expected_up = (options.servers - options.disabled.len()) * backends;
                    lab.wait_until("every enabled server UP", |views| {
                        views.iter().filter(|view| view.status == "UP").count() == expected_up
                    });
                    return lab;
                }
                Err(error) => {
                    last_error = format!(
                        "{error}\n{}",
                        std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
                    );
                }
            }
        }
        panic!("haproxy did not start: {last_error}");
    }

    /// Reloads HAProxy the classic way: a new process with the same configuration takes
    /// over the sockets (`-sf`) and the old one finishes its sessions. Runtime-set states
    /// (drain, maint) are lost, as in production without a server-state file.
    pub fn reload(&mut self) {
        let config_file = self.dir.path().join("haproxy.cfg");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("haproxy.log"))
            .unwrap();
        let old_pid = self.haproxy.pid();
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config_file)
            .arg("-sf")
            .arg(old_pid.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the new haproxy");
        let old = std::mem::replace(&mut self.haproxy, Process { child });
        self.old_haproxy.push(old);
        let start = Instant::now();
        loop {
            let reply = self.command("show info");
            if reply
                .lines()
                .any(|line| line.starts_with("Pid: ") && line != format!("Pid: {old_pid}"))
            {
                return;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the new haproxy never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::new(
            SocketAddress::Unix(self.admin_socket.clone()),
            Duration::from_secs(5),
        )
    }

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn views(&self) -> Vec<ServerView> {
        Lab::runtime()
            .block_on(self.client().servers())
            .expect("read server views")
    }

    pub fn view(&self, server: &str) -> ServerView {
        self.views()
            .into_iter()
            .find(|view| view.server == server)
            .unwrap_or_else(|| panic!("no server {server}"))
    }

    /// Sends one command on the admin socket and returns the reply.
    pub fn command(&self, line: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.admin_socket).unwrap();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    /// The columns of `show servers state` that a rollout changes (admin state, operational
    /// state, weight, address), without those that move on their own (check progress, time).
    pub fn servers_state(&self) -> String {
        let reply = self.command("show servers state");
        let mut lines = reply.lines().skip(1);
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split_whitespace()
            .collect();
        let keep = [
            "be_name",
            "srv_name",
            "srv_addr",
            "srv_op_state",
            "srv_admin_state",
            "srv_uweight",
            "srv_port",
        ];
        let columns: Vec<usize> = keep
            .iter()
            .map(|name| {
                header
                    .iter()
                    .position(|column| column == name)
                    .expect("a known column")
            })
            .collect();
        let mut out = vec![keep.join(" ")];
        for line in lines.filter(|line| !line.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            out.push(
                columns
                    .iter()
                    .map(|index| fields[*index])
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        out.join("\n")
    }

    /// Polls until `condition` holds on the server views; panics after 20 s.
    pub fn wait_until(&self, what: &str, condition: impl Fn(&[ServerView]) -> bool) {
        let start = Instant::now();
        loop {
            let views = self.views();
            if condition(&views) {
                return;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "timed out waiting for {what}: {views:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a plan for this lab and returns its path. `extra` is appended as YAML.
    pub fn plan(&self, name: &str, servers: &[&str], extra: &str) -> PathBuf {
        let servers: String = servers
            .iter()
            .map(|server| format!("  - name: {server}\n"))
            .collect();
        let text = format!(
            "version: 1\nhaproxy:\n  - name: lb1\n    socket: {}\nbackends: [be_app]\nservers:\n{servers}\
             restart:\n  command: /bin/true\n{extra}",
            self.admin_socket.display()
        );
        let file = self.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }
}

fn config(
    options: &LabOptions,
    ports: &[u16],
    dir: &Path,
    tcp_port: u16,
    frontend_port: u16,
) -> String {
    let mut servers = String::new();
    if options.route_by_path {
        for index in 1..=ports.len() {
            servers.push_str(&format!(
                "    use-server app{index} if {{ path_beg /to/app{index}/ }}\n"
            ));
        }
    }
    for (index, port) in ports.iter().enumerate() {
        let disabled = if options.disabled.contains(&index) {
            " disabled"
        } else {
            ""
        };
        servers.push_str(&format!(
            "    server app{} 127.0.0.1:{} check inter 200ms rise {} fall {}{disabled}\n",
            index + 1,
            port,
            options.rise,
            options.fall
        ));
    }
    format!(
        "global
    stats socket {dir}/admin.sock level admin
    stats socket {dir}/operator.sock level operator
    stats socket {dir}/user.sock level user
    stats socket ipv4@127.0.0.1:{tcp_port} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{frontend_port}
    default_backend be_app
backend be_app
    option httpchk GET {check_path}
    http-check expect status 200
{servers}{second}",
        dir = dir.display(),
        check_path = options.check_path,
        second = options
            .second_backend
            .map_or_else(String::new, |name| format!(
                "backend {name}\n    option httpchk GET {}\n    http-check expect status 200\n{}",
                options.check_path,
                servers
                    .lines()
                    .filter(|line| !line.contains("use-server"))
                    .map(|line| format!("{line}\n"))
                    .collect::<String>()
            ))
    )
}

fn wait_for_socket(haproxy: &mut Process, socket: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = haproxy.child.try_wait() {
            return Err(format!("haproxy exited: {status}"));
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if start.elapsed() > START_DEADLINE {
            return Err("the admin socket never appeared".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The HAProxy the tests run: `HAPROXY_BIN` (CI sets it to each version it tests), else
/// `haproxy` on PATH.
pub fn haproxy_binary() -> String {
    std::env::var("HAPROXY_BIN")
        .ok()
        .filter(|bin| !bin.is_empty())
        .unwrap_or_else(|| "haproxy".to_owned())
}
