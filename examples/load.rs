//! Live traffic for the demo and the benchmark: clients that send requests through HAProxy
//! until a stop file appears (or a time limit passes), then print how many succeeded and
//! failed. Standard library only; every request is a new connection.
//!
//!     load --target 127.0.0.1:PORT [--clients 4] [--slow-clients 1] [--stop-file PATH]
//!          [--max-seconds 600]
//!
//! Slow clients ask `/slow?ms=1500`, so requests are in flight whenever a drain starts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let mut target = String::new();
    let mut clients = 4;
    let mut slow_clients = 1;
    let mut stop_file = None;
    let mut max_seconds = 600;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--target" => target = value(),
            "--clients" => {
                clients = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--clients takes a number"))
            }
            "--slow-clients" => {
                slow_clients = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--slow-clients takes a number"))
            }
            "--stop-file" => stop_file = Some(value()),
            "--max-seconds" => {
                max_seconds = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--max-seconds takes a number"))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if target.is_empty() {
        usage("--target is required");
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let threads: Vec<_> = (0..clients + slow_clients)
        .map(|index| {
            let (target, ok, failed, stop_file) = (
                target.clone(),
                ok.clone(),
                failed.clone(),
                stop_file.clone(),
            );
            let path = if index < clients {
                "/"
            } else {
                "/slow?ms=1500"
            };
            std::thread::spawn(move || {
                while Instant::now() < deadline
                    && !stop_file
                        .as_deref()
                        .is_some_and(|file| std::path::Path::new(file).exists())
                {
                    match request(&target, path) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            eprintln!("load: failed request: {error}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    println!(
        "requests: {} succeeded, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "load: {problem}\nusage: load --target HOST:PORT [--clients N] [--slow-clients N] [--stop-file PATH] [--max-seconds N]"
    );
    std::process::exit(2)
}

fn request(target: &str, path: &str) -> Result<(), String> {
    let mut stream =
        TcpStream::connect(target).map_err(|error| format!("connect {target}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("send: {error}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|error| format!("read {path}: {error}"))?;
    if reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "{path}: {}",
            reply.lines().next().unwrap_or("(empty reply)")
        ))
    }
}
