//! `apply PLAN`: pre-flight (HAProxy and SSH, nothing changed), an optional confirmation,
//! then the rollout, then the summary.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use crate::cli::ApplyArgs;
use crate::driver::{Driver, Interrupt};
use crate::engine::Outcome as Check;
use crate::engine::rollout::Outcome;
use crate::exit::Exit;
use crate::haproxy::Client;
use crate::health::HealthChecker;
use crate::report::Printer;
use crate::report::rollout::RolloutReporter;
use crate::ssh::SshPool;

pub fn run(args: &ApplyArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let plan = match super::load_plan(&args.plan, printer)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let observations = super::live::observe(&plan).await;
        let preflight = crate::engine::preflight::preflight(&plan, &observations);
        let steps = super::preview_steps(&plan, &preflight);
        let targets: Option<Vec<_>> = preflight.targets.iter().map(|target| target.values.clone()).collect();
        let (false, Some(targets)) = (preflight.blocked(), targets) else {
            printer.plan_preview(&args.plan, &plan, &preflight, &steps);
            return Ok(Exit::PreflightFailed);
        };
        for warning in preflight.with(Check::Warning) {
            printer.warning(&warning.text);
        }

        // Property 1: every SSH host reachable with a verified key before anything changes.
        let hosts: Vec<String> = targets.iter().map(|values| values.host.clone()).collect();
        let ssh = match SshPool::connect(&plan.ssh, &hosts).await {
            Ok(ssh) => ssh,
            Err(error) => {
                printer.failure(&anyhow::anyhow!("pre-flight failed: {error}; nothing was changed"));
                return Ok(Exit::PreflightFailed);
            }
        };

        if std::io::stdin().is_terminal() && !args.yes {
            printer.plan_preview(&args.plan, &plan, &preflight, &steps);
            if !confirm(&format!("Restart {} server(s) now? [y/N] ", plan.servers.len()))? {
                printer.error("not confirmed; nothing was changed");
                ssh.close().await;
                return Ok(Exit::Aborted);
            }
        } else {
            printer.note(&format!(
                "pre-flight passed: {} HAProxy instance(s), {} server(s), SSH to {} host(s) verified",
                plan.haproxy.len(),
                plan.servers.len(),
                {
                    let mut distinct = hosts.clone();
                    distinct.sort();
                    distinct.dedup();
                    distinct.len()
                }
            ));
        }

        let interrupt = Interrupt::default();
        spawn_signal_handler(interrupt.clone());
        let driver = Driver {
            plan: &plan,
            clients: plan
                .haproxy
                .iter()
                .map(|instance| Client::new(instance.socket.clone(), instance.timeout))
                .collect(),
            targets,
            ssh: &ssh,
            health: HealthChecker::new(plan.health.timeout, plan.health.expect_status)?,
            interrupt,
        };
        let started = Instant::now();
        let mut reporter = RolloutReporter::new(printer, &plan);
        let finish = driver.run(|report| reporter.report(report)).await;
        reporter.finish(&finish, started.elapsed());
        ssh.close().await;
        Ok(match finish.outcome {
            Outcome::Success => Exit::Success,
            Outcome::Failed => Exit::RolloutFailed,
            Outcome::Interrupted => Exit::Aborted,
        })
    })
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// SIGINT and SIGTERM stop the rollout at the next safe point.
fn spawn_signal_handler(interrupt: Interrupt) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!("cannot watch SIGTERM: {error}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!(
            "signal received: stopping at the next safe point (the step in progress finishes first)"
        );
        interrupt.trigger();
    });
}
