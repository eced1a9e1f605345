//! What reaches a running command from outside: the operator's answer at the question,
//! signals, and `abort`'s request, which says where it came from before its signal arrives.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::driver::{Cause, Interrupt};

/// Asks on the terminal; yes only for an explicit yes. Ctrl-C (or SIGTERM) while it waits
/// is a no, so the command ends as declined, releasing its locks, instead of being killed.
pub(super) async fn ask(printer: &crate::report::Printer, question: &str) -> anyhow::Result<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    printer.question(question)?;
    // A plain thread, not the runtime's blocking pool: a read nobody answers must not
    // keep the process from ending.
    let (sender, answer) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        let _ = sender.send(read.map(|_| answer));
    });
    tokio::select! {
        answer = answer => {
            let answer = answer.map_err(|_| anyhow::anyhow!("the terminal went away"))??;
            Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
        }
        _ = interrupt.recv() => {
            // The answer's line was never ended.
            let _ = printer.question("\n");
            Ok(false)
        }
        _ = terminate.recv() => Ok(false),
    }
}

/// The file in a rollout's state folder where `abort` says who asks, just before it
/// signals the running command.
fn request_path(dir: &Path) -> PathBuf {
    dir.join("abort-request")
}

/// A request older than this is left over from an abort that never signalled.
const REQUEST_FRESH: Duration = Duration::from_secs(30);

/// Written by `abort` before it signals: `haproxy-rollout abort` and where it runs from
/// (its pid, user, terminal or CI job).
pub fn request_abort(dir: &Path) -> std::io::Result<()> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let mut from = format!(
        "`haproxy-rollout abort` (pid {}, user {user}",
        std::process::id()
    );
    if let Some(job) = ci_job() {
        from.push_str(&format!(", {job}"));
    } else if let Ok(terminal) = std::fs::read_link("/proc/self/fd/0")
        && terminal.starts_with("/dev/pts")
    {
        from.push_str(&format!(", on {}", terminal.display()));
    }
    from.push(')');
    let path = request_path(dir);
    let partial = path.with_extension("partial");
    std::fs::write(&partial, from)?;
    std::fs::rename(partial, path)
}

/// The CI job this runs in, when the environment names one.
fn ci_job() -> Option<String> {
    if let Ok(url) = std::env::var("CI_JOB_URL") {
        return Some(format!("job {url}"));
    }
    let (server, repository, run) = (
        std::env::var("GITHUB_SERVER_URL").ok()?,
        std::env::var("GITHUB_REPOSITORY").ok()?,
        std::env::var("GITHUB_RUN_ID").ok()?,
    );
    Some(format!("job {server}/{repository}/actions/runs/{run}"))
}

/// Who asked, if `abort` did (and just now): taken, so it is read once.
fn take_request(dir: &Path) -> Option<String> {
    let path = request_path(dir);
    let fresh = std::fs::metadata(&path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age < REQUEST_FRESH);
    let text = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(&path);
    text.filter(|_| fresh)
}

/// A request left by an abort that never signalled (it failed, or its rollout had ended)
/// must not name a later signal.
pub(super) fn clear_request(dir: &Path) {
    let _ = std::fs::remove_file(request_path(dir));
}

/// SIGINT and SIGTERM stop at the next safe point; a second one, or SIGUSR1 (what
/// `abort --now` sends), stops now. Each says where it came from: `abort` leaves a request
/// in the state folder first; any other is a signal (a Ctrl-C, a cancelled job, `kill`).
pub(super) fn spawn_signal_handler(interrupt: Interrupt, dir: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut interrupt_signal), Ok(mut terminate), Ok(mut now)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) else {
            tracing::warn!(
                "cannot watch signals: SIGINT would end the rollout without a safe stop"
            );
            return;
        };
        let cause = |signal: &str| match take_request(&dir) {
            Some(from) => Cause {
                kind: "abort",
                from,
            },
            None => Cause {
                kind: "signal",
                from: signal.to_owned(),
            },
        };
        let mut safe_seen = false;
        loop {
            let received = tokio::select! {
                _ = interrupt_signal.recv() => "SIGINT (Ctrl-C)",
                _ = terminate.recv() => "SIGTERM (a cancelled job, or kill)",
                _ = now.recv() => {
                    interrupt.now(cause("SIGUSR1"));
                    continue;
                }
            };
            if safe_seen {
                interrupt.now(cause(received));
            } else {
                safe_seen = true;
                interrupt.safe(cause(received));
            }
        }
    });
}
