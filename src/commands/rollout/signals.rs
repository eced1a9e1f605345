//! What reaches a running command from outside: the operator's answer at the question,
//! signals, and `abort`'s request, which says where it came from before its signal arrives.

use std::io::BufRead;

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

/// Who `abort` is, for the running command to say: `haproxy-rollout abort` and where it
/// runs from (its pid, user, terminal or CI job).
pub fn abort_request_from() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let mut from = format!(
        "`haproxy-rollout abort` (pid {}, user {user} on {}",
        std::process::id(),
        crate::lock::hostname()
    );
    if let Some(job) = crate::lock::ci_job() {
        from.push_str(&format!(", {job}"));
    } else if let Ok(terminal) = std::fs::read_link("/proc/self/fd/0")
        && terminal.starts_with("/dev/pts")
    {
        from.push_str(&format!(", {}", terminal.display()));
    }
    from.push(')');
    from
}

/// SIGINT and SIGTERM stop at the next safe point; a second one, or SIGUSR1 (what
/// `abort --now` sends), stops now. Each says where it came from: `abort` leaves a request
/// in the state folder first; any other is a signal (a Ctrl-C, a cancelled job, `kill`).
pub(super) fn spawn_signal_handler(interrupt: Interrupt, store: crate::state::Store) {
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
        let cause = |signal: &str| match store.take_request() {
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
