//! The preview `plan` prints (`engine::steps`) is what the engine does when every step
//! succeeds, for every plan shipped in `plans/` and `examples/` and with every hook: one
//! source for the step sequence, checked here.

use super::*;
use crate::engine::Observation;
use crate::engine::steps::{Step as PreviewStep, server_steps};
use crate::haproxy::{Info, OpState, Snapshot};

/// The shipped plans, and one with every hook and a batch.
fn plans() -> Vec<(String, Plan)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut plans = Vec::new();
    for folder in ["plans", "examples"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "yaml")
            })
            .collect();
        files.sort();
        for file in files {
            // A required var keeps its placeholder: the steps are the same.
            let partial = crate::plan::Given {
                values: &[],
                partial: true,
            };
            let mut plan = crate::plan::load_with(&file, partial).unwrap();
            // The canaries' analysis is the coordinator's, between servers, not a step of
            // one (its own tests are in analysis.rs).
            if let Some(canary) = &mut plan.canary {
                canary.analysis = None;
            }
            plans.push((file.display().to_string(), plan));
        }
    }
    plans.push((
        "every hook, batches of two".into(),
        plan_of(5, &format!("capacity:\n  max_unavailable: 2\n{HOOKS}")),
    ));
    plans.push((
        "verify".into(),
        plan_of(
            3,
            "verify:\n  command: cat /opt/app/VERSION\n  expect: \"{server}-2\"\n",
        ),
    ));
    assert!(plans.len() >= 4, "{plans:?}");
    plans
}

/// Every server of the plan in each backend it names (`auto`: `be_auto`), on each HAProxy.
fn observations(plan: &Plan) -> Vec<Observation<'_>> {
    let backends = match &plan.backends {
        crate::plan::Backends::Listed(names) => {
            names.iter().map(|name| name.as_str().to_owned()).collect()
        }
        crate::plan::Backends::Auto => vec!["be_auto".to_owned()],
    };
    plan.haproxy
        .iter()
        .map(|instance| {
            let views = backends
                .iter()
                .flat_map(|backend| {
                    plan.servers.iter().map(|server| ServerView {
                        backend: backend.clone(),
                        ..view(server.name.as_str())
                    })
                })
                .collect();
            let info = Info {
                version: "2.6.12".into(),
                pid: 1,
                start_time_sec: Some(1),
                uptime_sec: Some(1),
                stopping: false,
                node: "lb".into(),
            };
            Observation {
                instance,
                state: Ok(Snapshot::new(info, None, views)),
            }
        })
        .collect()
}

/// A world where every step succeeds at once: sessions end, applications answer, checks
/// pass. Returns, for each server, the steps the engine took, in order.
fn what_the_engine_does(plan: &Plan, topology: Topology) -> Vec<Vec<String>> {
    let observations = observations(plan);
    let mut views: Vec<Vec<ServerView>> = observations
        .iter()
        .map(|observation| observation.state.as_ref().unwrap().servers.clone())
        .collect();
    let limits = Limits::observed(plan, &observations, &topology);
    let mut engine = Rollout::new(plan, topology, limits);
    let now = Instant::now();
    let mut shapes = vec![Vec::new(); plan.servers.len()];
    let mut started = vec![false; plan.servers.len()];
    let mut queue: std::collections::VecDeque<(Lane, Effect)> = Default::default();
    let mut actions = engine.start(now);
    let mut from_admission = false;
    for _ in 0..100_000 {
        for action in actions.drain(..) {
            match action {
                Action::Run(lane, effect) => {
                    if let Lane::Server(index) = lane {
                        if !started[index] {
                            started[index] = true;
                            assert!(from_admission, "{lane:?} started without a capacity check");
                            shapes[index].push("check capacity".to_owned());
                        }
                        if let Some(label) = engine_label(&effect) {
                            shapes[index].push(label);
                        }
                    }
                    queue.push_back((lane, effect));
                }
                Action::Report(_) => {}
                Action::Finish(finish) => {
                    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
                    return shapes.into_iter().map(collapse).collect();
                }
            }
        }
        let (lane, effect) = queue.pop_front().expect("an effect or a finish");
        from_admission = lane == Lane::Rollout && effect == Effect::Poll;
        let event = match &effect {
            Effect::Poll => Event::Polled(Polled::new(
                views.iter().map(|views| Ok(views.clone())).collect(),
            )),
            Effect::SetState(server, target) => {
                for view in views
                    .iter_mut()
                    .flatten()
                    .filter(|view| view.server == server.as_str())
                {
                    view.set_to(*target);
                    view.operational = OpState::Running;
                }
                Event::Changed(Ok(()))
            }
            Effect::ShutdownSessions(_) => Event::Changed(Ok(())),
            Effect::Restart(_) => Event::Restarted(Ok(())),
            Effect::Probe(_) => Event::Probed(Ok(())),
            // Every server runs something else before: every one is deployed.
            Effect::ReadCurrent(servers) => {
                Event::CurrentRead(servers.iter().map(|_| Ok("0".to_owned())).collect())
            }
            Effect::Verify(index) => Event::Verified(Ok(plan
                .verify
                .as_ref()
                .expect("verify in the plan")
                .expected(&plan.servers[*index].name))),
            Effect::Hook(..) => Event::HookDone(Ok(())),
            Effect::CheckCommand(_) => Event::CommandChecked(Ok(CommandState::Ended)),
            Effect::Wait | Effect::Backoff(_) => Event::Waited,
        };
        actions = engine.handle(lane, event, now);
    }
    panic!("the engine never finished")
}

fn engine_label(effect: &Effect) -> Option<String> {
    Some(match effect {
        Effect::SetState(_, target) => format!("state {}", target.as_str()),
        Effect::Poll => "wait for HAProxy".to_owned(),
        Effect::Restart(_) => "restart".to_owned(),
        Effect::Probe(_) => "wait for health".to_owned(),
        Effect::Verify(_) => "verify".to_owned(),
        Effect::ReadCurrent(_) => return None,
        Effect::Hook(point, _) => format!("{} hook", point.as_str()),
        Effect::ShutdownSessions(_) => "shutdown sessions".to_owned(),
        Effect::CheckCommand(_) => "check command".to_owned(),
        Effect::Wait | Effect::Backoff(_) => return None,
    })
}

fn preview_label(step: &PreviewStep) -> Option<String> {
    Some(match step {
        PreviewStep::CheckCapacity { .. } => "check capacity".to_owned(),
        PreviewStep::Runtime { command, .. } => {
            let state = ["drain", "maint", "ready"]
                .into_iter()
                .find(|state| command.ends_with(&format!(" state {state}")))
                .unwrap_or_else(|| panic!("a preview command the engine never sends: {command}"));
            format!("state {state}")
        }
        PreviewStep::WaitNoSessions { .. }
        | PreviewStep::WaitChecksPassed { .. }
        | PreviewStep::WaitUp { .. } => "wait for HAProxy".to_owned(),
        PreviewStep::Restart { .. } => "restart".to_owned(),
        PreviewStep::WaitHealthy { .. } => "wait for health".to_owned(),
        PreviewStep::Verify { .. } => "verify".to_owned(),
        // Runs only if the rollout fails on this server.
        PreviewStep::Hook {
            point: HookPoint::OnFailure,
            ..
        } => return None,
        PreviewStep::Hook { point, .. } => format!("{} hook", point.as_str()),
    })
}

/// Repeats of one step (a poll after another, one command per HAProxy) are one step.
fn collapse(mut labels: Vec<String>) -> Vec<String> {
    labels.dedup();
    labels
}

#[test]
fn the_preview_is_what_the_engine_does_when_every_step_succeeds() {
    for (name, plan) in plans() {
        let observations = observations(&plan);
        let topology = Topology::resolve(&plan, &observations);
        let preview: Vec<Vec<String>> = plan
            .servers
            .iter()
            .map(|server| {
                let steps = server_steps(&plan, &topology, server, None);
                collapse(steps.iter().filter_map(preview_label).collect())
            })
            .collect();
        let done = what_the_engine_does(&plan, topology);
        for (server, (previewed, ran)) in plan.servers.iter().zip(preview.iter().zip(&done)) {
            assert_eq!(
                previewed, ran,
                "{name}: {}: the preview (left) is not what the engine does (right)",
                server.name
            );
        }
    }
}
