//! `plan PLAN`: the dry run. Reads live state, runs every pre-flight check `apply` runs
//! (each server's health URL, SSH to every host unless `--no-ssh`: connecting changes
//! nothing), and prints every command `apply` would run. It only ever sends `show`
//! commands, and, with `skip_current`, reads each server's `verify` URL to say which `apply`
//! would leave as they are.

use super::Stop;
use crate::cli::PreviewArgs;
use crate::engine;
use crate::exit::Exit;
use crate::plan::template::health_url;
use crate::plan::{Given, Plan, VerifyRead};
use crate::report::Printer;

pub fn run(
    args: &PreviewArgs,
    printer: &Printer,
    state: &crate::state::StateFlags,
) -> Result<Exit, Stop> {
    let plan = super::load_plan(&args.plan, Given::values(&args.vars.vars), printer)?;
    let runtime = super::live::runtime()?;
    let links = runtime.block_on(super::live::connect(&plan));
    let observations = runtime.block_on(super::live::observe(&plan, &links));
    let mut preflight = engine::preflight::preflight(&plan, &observations, &[]);
    let answers = runtime.block_on(super::live::probe_health(&plan, &preflight, &observations));
    preflight.probed(&plan, &answers);
    if args.no_ssh {
        preflight.not_connected();
    } else {
        let hosts: Vec<String> = preflight
            .targets
            .iter()
            .filter_map(|target| Some(target.values.as_ref()?.host.clone()))
            .collect();
        let mut distinct = hosts.clone();
        distinct.sort();
        distinct.dedup();
        let connected = runtime.block_on(async {
            let pool = crate::ssh::SshPool::connect(&plan.ssh, &hosts).await?;
            pool.close().await;
            Ok::<_, crate::ssh::CommandError>(distinct.len())
        });
        preflight.connected(connected.map_err(|error| error.to_string()));
    }
    // The lock apply would take, where it would take it (etcd too): read, never taken.
    match crate::state::Store::open(&args.plan, &plan, state) {
        Ok(store) => preflight.state(
            &store.describe(),
            store
                .plan_holder()
                .map(|holder| holder.map(|holder| holder.to_string()))
                .map_err(|error| format!("{error:#}")),
        ),
        Err(error) => preflight.state("", Err(format!("{error:#}"))),
    }
    let steps = super::preview_steps(&plan, &preflight);
    printer.plan_preview(&args.plan, &plan, &preflight, &steps);
    if plan.skip_current {
        runtime.block_on(show_current(&plan, &preflight, printer))?;
    }
    Ok(if preflight.blocked() {
        Exit::PreflightFailed
    } else {
        Exit::Success
    })
}

/// What each server answers to `verify` now, and so whether `apply` would deploy it or
/// leave it as it is (`skip_current`).
async fn show_current(
    plan: &Plan,
    preflight: &engine::Preflight,
    printer: &Printer,
) -> anyhow::Result<()> {
    let Some(verify) = &plan.verify else {
        return Ok(());
    };
    let VerifyRead::Url(url) = &verify.read else {
        printer.note(
            "skip_current: verify runs a command over SSH, which `plan` does not connect; apply reads it before each server",
        );
        return Ok(());
    };
    let checker = crate::health::HealthChecker::new(verify.timeout, plan.health.expect_status)?;
    let reads = plan
        .servers
        .iter()
        .zip(&preflight.targets)
        .map(|(server, target)| {
            let checker = &checker;
            async move {
                let answer = match &target.values {
                    Some(values) => {
                        checker
                            .fetch(&health_url(url, values), verify.timeout)
                            .await
                    }
                    None => Err("its address is not known (see pre-flight)".to_owned()),
                };
                (server, answer.map(|text| text.trim().to_owned()))
            }
        });
    for (server, answer) in futures::future::join_all(reads).await {
        let expected = verify.expected(&server.name);
        let current = answer.as_deref() == Ok(expected.as_str());
        match &answer {
            Ok(answer) if current => printer.note(&format!(
                "{}: verify answers {answer:?}: already current, apply leaves it as it is",
                server.name
            )),
            Ok(answer) => printer.note(&format!(
                "{}: verify answers {answer:?}, not {expected:?}: apply deploys it",
                server.name
            )),
            Err(error) => printer.note(&format!(
                "{}: verify could not be read ({error}): apply deploys it",
                server.name
            )),
        }
        printer.event(
            "current",
            &serde_json::json!({
                "server": server.name.as_str(),
                "answer": answer.as_ref().ok(),
                "error": answer.as_ref().err(),
                "expected": expected,
                "skipped": current,
            }),
        );
    }
    Ok(())
}
