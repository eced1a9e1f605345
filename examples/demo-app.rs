//! A small HTTP application for the demo and the tests: a real process that a restart really
//! kills and starts again. Standard library only.
//!
//!     demo-app [--listen 127.0.0.1:0] [--port-file PATH] [--pid-file PATH] [--check-status N]
//!              [--health-status N] [--version V] [--error-every N] [--start-after MS]
//!
//! With `--start-after`, it listens only that many milliseconds after it started (an
//! application that takes a moment to come up after its restart command returned).
//! Prints `listening on ADDRESS` once it accepts connections (and writes the port to
//! `--port-file`). Answers:
//!   GET /health       200 "ok", or the status given with --health-status (an application
//!                     that never becomes healthy)
//!   GET /slow?ms=N    200 after N milliseconds (a long request, to test draining); any
//!                     path ending in /slow does the same
//!   GET /fail         404 (for a health check that must fail)
//!   GET /check        200, or the status given with --check-status (a load balancer's
//!                     check that fails while /health passes)
//!   GET /version      200, the version given with --version (default 1)
//!   GET /             200 "pid N"; with --error-every N, every Nth such request (a bad
//!                     release whose health check still passes) answers 500

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the application is and how it behaves.
struct App {
    check_status: u16,
    health_status: u16,
    version: String,
    /// Every Nth ordinary request answers 500 (0: never).
    error_every: u64,
    requests: AtomicU64,
}

fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut port_file = None;
    let mut pid_file = None;
    let mut check_status: u16 = 200;
    let mut health_status: u16 = 200;
    let mut version = "1".to_owned();
    let mut error_every = 0;
    let mut start_after = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--listen" => listen = value(),
            "--port-file" => port_file = Some(value()),
            "--pid-file" => pid_file = Some(value()),
            "--check-status" => {
                check_status = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--check-status takes an HTTP status"))
            }
            "--health-status" => {
                health_status = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--health-status takes an HTTP status"))
            }
            "--version" => version = value(),
            "--error-every" => {
                error_every = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--error-every takes a whole number"))
            }
            "--start-after" => {
                start_after = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--start-after takes milliseconds"))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    std::thread::sleep(Duration::from_millis(start_after));
    let listener = TcpListener::bind(&listen).unwrap_or_else(|error| {
        eprintln!("demo-app: cannot listen on {listen}: {error}");
        std::process::exit(1)
    });
    let address = listener.local_addr().expect("a bound address");
    if let Some(file) = pid_file {
        write_atomically(&file, &std::process::id().to_string());
    }
    if let Some(file) = port_file {
        write_atomically(&file, &address.port().to_string());
    }
    println!("listening on {address}");
    let _ = std::io::stdout().flush();
    let app = Arc::new(App {
        check_status,
        health_status,
        version,
        error_every,
        requests: AtomicU64::new(0),
    });
    for stream in listener.incoming().flatten() {
        let app = Arc::clone(&app);
        std::thread::spawn(move || {
            let _ = serve(stream, &app);
        });
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "demo-app: {problem}\nusage: demo-app [--listen ADDR] [--port-file PATH] [--pid-file PATH] [--check-status N] [--health-status N] [--version V] [--error-every N] [--start-after MS]"
    );
    std::process::exit(2)
}

/// Readers never see a half-written file.
fn write_atomically(file: &str, text: &str) {
    let partial = format!("{file}.partial");
    std::fs::write(&partial, text).expect("write the file");
    std::fs::rename(&partial, file).expect("move the file into place");
}

fn serve(stream: TcpStream, app: &App) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut keep_alive = true;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if header.eq_ignore_ascii_case("connection: close") {
                keep_alive = false;
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = respond(target, app);
        let reason = if status == 200 { "OK" } else { "Error" };
        write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        )?;
        writer.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn respond(target: &str, app: &App) -> (u16, String) {
    let check_status = app.check_status;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = if path.ends_with("/slow") {
        "/slow"
    } else {
        path
    };
    match path {
        "/health" => (app.health_status, format!("health {}\n", app.health_status)),
        "/check" => (check_status, format!("check {check_status}\n")),
        "/fail" => (404, "not found\n".to_owned()),
        "/version" => (200, format!("{}\n", app.version)),
        "/slow" => {
            let millis = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("ms="))
                .and_then(|value| value.parse().ok())
                .unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(millis));
            (
                200,
                format!("slept {millis}ms in pid {}\n", std::process::id()),
            )
        }
        _ => {
            let count = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
            if app.error_every > 0 && count.is_multiple_of(app.error_every) {
                (500, format!("bad release {} failed\n", app.version))
            } else {
                (200, format!("pid {}\n", std::process::id()))
            }
        }
    }
}
