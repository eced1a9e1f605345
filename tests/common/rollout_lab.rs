//! A lab for `apply`: application servers started detached through the same restart script
//! the rollout runs over SSH (so a restart really kills the process and starts a new one),
//! haproxy in front, a real sshd, live traffic and a sampler of HAProxy's state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lab::{Lab, LabOptions, demo_app_binary, free_port};
use super::sshd::Sshd;

pub struct RolloutLab {
    pub lab: Lab,
    /// A second HAProxy in front of the same servers, when asked for.
    pub second: Option<Lab>,
    pub sshd: Sshd,
    pub ports: Vec<u16>,
    pub restart_script: PathBuf,
}

impl RolloutLab {
    pub fn start(options: LabOptions) -> RolloutLab {
        let dir = tempfile::Builder::new()
            .prefix("hr-apply")
            .tempdir()
            .expect("temp dir");
        let restart_script = dir.path().join("restart-app");
        std::fs::write(
            &restart_script,
            restart_script_text(dir.path(), &demo_app_binary()),
        )
        .unwrap();
        set_executable(&restart_script);
        let ports: Vec<u16> = (0..options.servers).map(|_| free_port()).collect();
        for port in &ports {
            // Through sh, not exec'd: a child another test thread forks in the moment after
            // the write still holds the file open for writing, and exec would fail with
            // "Text file busy" (seen in CI).
            let status = std::process::Command::new("sh")
                .arg(&restart_script)
                .arg(port.to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "start app on {port}");
            wait_listening(*port);
        }
        let sshd = Sshd::start(dir.path());
        let lab = Lab::around(dir, Vec::new(), &ports, options);
        RolloutLab {
            lab,
            second: None,
            sshd,
            ports,
            restart_script,
        }
    }

    /// Starts a second HAProxy, with its own sockets and frontend, in front of the same
    /// application servers.
    pub fn add_second_haproxy(&mut self, options: LabOptions) {
        let dir = tempfile::Builder::new()
            .prefix("hr-lb2")
            .tempdir()
            .expect("temp dir");
        self.second = Some(Lab::around(dir, Vec::new(), &self.ports, options));
    }

    /// The pid of the application listening on `port`, from its pid file.
    pub fn app_pid(&self, port: u16) -> u32 {
        let file = self.lab.dir.path().join(format!("app-{port}.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until the application on the server at `index` is another process than `old`
    /// (a restart that runs on without the tool finished), and returns it; panics after 20 s.
    pub fn wait_replaced(&self, index: usize, old: u32) -> u32 {
        let file = self
            .lab
            .dir
            .path()
            .join(format!("app-{}.pid", self.ports[index]));
        let start = Instant::now();
        loop {
            let pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            if let Some(pid) = pid.filter(|pid| *pid != old) {
                wait_listening(self.ports[index]);
                return pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "app{} was not replaced",
                index + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.ports.iter().map(|port| self.app_pid(*port)).collect()
    }

    /// A plan for this lab: `restart` is the restart script unless given, `extra` is
    /// appended (health, drain, capacity, ...).
    pub fn plan(&self, name: &str, restart: Option<&str>, extra: &str) -> PathBuf {
        self.plan_polling(name, restart, "100ms", extra)
    }

    /// `plan`, polling HAProxy every `poll_interval`.
    pub fn plan_polling(
        &self,
        name: &str,
        restart: Option<&str>,
        poll_interval: &str,
        extra: &str,
    ) -> PathBuf {
        let servers: String = (1..=self.ports.len())
            .map(|index| format!("  - name: app{index}\n"))
            .collect();
        let restart = restart.map_or_else(
            || format!("{} {{port}}", self.restart_script.display()),
            str::to_owned,
        );
        let text = format!(
            "version: 1\nhaproxy:\n  - name: lb1\n    socket: {}\nbackends: [be_app]\nservers:\n{servers}{}\
             restart:\n  command: {restart}\n  timeout: 30s\nhealth:\n  url: http://{{addr}}:{{port}}/health\n  within: 10s\n\
             ready:\n  timeout: 10s\npoll_interval: {poll_interval}\n{extra}",
            self.lab.admin_socket.display(),
            self.sshd.plan_section(),
        );
        let file = self.lab.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    /// Adds the HAProxy `name` at `socket` to the plan file `plan`, after the lab's own.
    pub fn add_instance(plan: &std::path::Path, name: &str, socket: &str) {
        let text = std::fs::read_to_string(plan).unwrap().replace(
            "backends: [be_app]",
            &format!("  - name: {name}\n    socket: {socket}\nbackends: [be_app]"),
        );
        std::fs::write(plan, text).unwrap();
    }
}

impl Drop for RolloutLab {
    fn drop(&mut self) {
        // The applications are detached (not our children): stop them through their pid files.
        // A restart that runs on without the tool may be between removing the pid file and
        // its new process writing it: look again for a moment.
        for port in &self.ports {
            let file = self.lab.dir.path().join(format!("app-{port}.pid"));
            let start = Instant::now();
            loop {
                if let Ok(pid) = std::fs::read_to_string(&file)
                    && !pid.trim().is_empty()
                {
                    let _ = std::process::Command::new("kill")
                        .arg("-9")
                        .arg(pid.trim())
                        .status();
                    break;
                }
                if start.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn set_executable(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Kills the application on PORT (waiting until it is really gone) and starts a new one,
/// detached, on the same port.
fn restart_script_text(dir: &std::path::Path, app: &std::path::Path) -> String {
    format!(
        r#"#!/bin/sh
set -eu
port=$1
# The version it deploys (`/version` answers it); a file bad-VERSION makes it a bad release
# that answers 500 to every Nth request (N in the file) while its health check passes.
version=${{2:-1}}
pidfile={dir}/app-$port.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  # Gone, or a zombie nobody reaps yet: either way it no longer serves.
  while [ -e "/proc/$pid" ] && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null; do sleep 0.02; done
fi
rm -f "$pidfile"
# A test can ask for the new process to fail HAProxy's check (but not its own /health), or
# to listen only a moment after it started (start-after: milliseconds).
extra=""
if [ -f {dir}/break-checks ]; then extra="--check-status 404"; fi
if [ -f {dir}/break-health ]; then extra="$extra --health-status 503"; fi
if [ -f {dir}/start-after ]; then extra="$extra --start-after $(cat {dir}/start-after)"; fi
if [ -f "{dir}/bad-$version" ]; then extra="$extra --error-every $(cat "{dir}/bad-$version")"; fi
setsid {app} --listen 127.0.0.1:$port --pid-file "$pidfile" --version "$version" $extra </dev/null >/dev/null 2>&1 &
echo "restarted the application on port $port with version $version"
"#,
        dir = dir.display(),
        app = app.display()
    )
}

pub fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests sent through HAProxy until stopped, counted.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` loops asking `/`, plus `slow_clients` loops asking `/slow?ms=1500`.
    pub fn start(frontend_port: u16, clients: usize, slow_clients: usize) -> Traffic {
        let mut paths = vec!["/"; clients];
        paths.extend(vec!["/slow?ms=1500"; slow_clients]);
        Traffic::on(frontend_port, &paths)
    }

    /// One loop per path, each asking it again and again (a path of a routed lab, such as
    /// `/to/app1/slow?ms=700`, keeps a request on one server whenever it takes traffic).
    pub fn on(frontend_port: u16, paths: &[&'static str]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for path in paths.iter().copied() {
            let (stop, ok, failed, failures) =
                (stop.clone(), ok.clone(), failed.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                // Bounded: a forgotten stop still ends.
                let deadline = Instant::now() + Duration::from_secs(180);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match request(frontend_port, path) {
                        Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(error) => {
                            failures.lock().unwrap().push(error);
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        Traffic {
            stop,
            ok,
            failed,
            failures,
            threads,
        }
    }

    /// Stops and returns (succeeded, failed).
    pub fn stop(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}

/// One request on a new connection; `Ok` only for a complete 200 response.
pub fn request(port: u16, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("send: {error}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|error| format!("read {path}: {error}"))?;
    if reply.starts_with("HTTP/1.1 200") && (reply.contains("pid ") || reply.contains("slept")) {
        Ok(())
    } else {
        Err(format!(
            "{path}: {}",
            reply.lines().next().unwrap_or("(empty reply)")
        ))
    }
}

/// What a `Sampler` saw.
pub struct Seen {
    /// The most distinct servers out of rotation or not yet exactly UP (on any HAProxy) at
    /// one moment.
    pub most_out: usize,
    /// The fewest servers exactly UP and in rotation on every HAProxy at one moment.
    pub fewest_in: usize,
    pub samples: usize,
    /// The servers out, as HAProxy showed them, at the sample with the most out.
    pub most_out_were: Vec<String>,
}

/// Samples every HAProxy every 25 ms, until stopped, for bounds that must hold at every
/// moment of a rollout.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

impl Sampler {
    pub fn start(clients: Vec<haproxy_rollout::haproxy::Client>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = Lab::runtime();
            let (mut most_out, mut fewest_in, mut samples) = (0, usize::MAX, 0);
            let mut most_out_were = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let mut out = std::collections::BTreeSet::new();
                let mut shown = Vec::new();
                let mut servers = std::collections::BTreeSet::new();
                let mut complete = true;
                for client in &clients {
                    match runtime.block_on(client.servers()) {
                        Ok(views) => {
                            for view in views {
                                if !(view.admin.ready() && view.status == "UP") {
                                    out.insert(view.server.clone());
                                    shown.push(format!(
                                        "{} {} {} {}",
                                        view.server,
                                        view.admin_text(),
                                        view.status,
                                        view.check_status
                                    ));
                                }
                                servers.insert(view.server);
                            }
                        }
                        Err(_) => complete = false,
                    }
                }
                if complete {
                    if out.len() > most_out {
                        most_out_were = shown;
                    }
                    most_out = most_out.max(out.len());
                    fewest_in = fewest_in.min(servers.len() - out.len());
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            Seen {
                most_out,
                most_out_were,
                fewest_in,
                samples,
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// A sampler of one HAProxy's unix socket.
    pub fn unix(admin_socket: PathBuf) -> Sampler {
        Sampler::start(vec![haproxy_rollout::haproxy::Client::new(
            haproxy_rollout::plan::SocketAddress::Unix(admin_socket),
            Duration::from_secs(5),
        )])
    }

    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}
