//! Canary analysis: the canaries' answers as HAProxy counts them decide whether the rest
//! of the rollout starts.

use super::*;

fn analysed(window: &str, ratio: &str, min_requests: u64) -> Plan {
    plan(&format!(
        "canary:\n  servers: 1\n  analysis:\n    window: {window}\n    max_error_ratio: {ratio}\n    min_requests: {min_requests}\n"
    ))
}

fn verdict(reports: &[Report]) -> (CanaryVerdict, Tallied) {
    reports
        .iter()
        .find_map(|report| match report {
            Report::AnalysisVerdict { verdict, tallied } => Some((*verdict, *tallied)),
            _ => None,
        })
        .expect("a verdict")
}

#[test]
fn healthy_canaries_pass_and_the_rest_is_rolled() {
    let plan = analysed("10s", "0.01", 20);
    let mut world = World::new();
    world.traffic = vec![(0, 10, 0), (1, 10, 0), (2, 10, 0)];
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    let (verdict, tallied) = verdict(&reports);
    assert_eq!(verdict, CanaryVerdict::Passed);
    assert!(tallied.elapsed >= Duration::from_secs(10), "{tallied:?}");
    assert!(tallied.requests >= 20 && tallied.errors == 0, "{tallied:?}");
    assert!(
        reports
            .iter()
            .any(|report| matches!(report, Report::Analysis { .. })),
        "progress is reported"
    );
    assert!(
        finish
            .servers
            .iter()
            .all(|server| server.state == ServerState::Done)
    );
    // Nothing else started while the canary was judged.
    let verdict_at = reports
        .iter()
        .position(|report| matches!(report, Report::AnalysisVerdict { .. }))
        .unwrap();
    assert!(!reports[..verdict_at].iter().any(|report| matches!(
        report,
        Report::Stage { server, .. } if server.as_str() != "app1"
    )));
}

#[test]
fn a_canary_that_fails_too_often_fails_early_and_nothing_else_is_touched() {
    let plan = analysed("60s", "0.01", 20);
    let mut world = World::new();
    // One in five of the canary's requests fails; the others are fine.
    world.traffic = vec![(0, 8, 2), (1, 10, 0), (2, 10, 0)];
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Failed);
    let (verdict, tallied) = verdict(&reports);
    assert_eq!(verdict, CanaryVerdict::Failed);
    assert!(
        tallied.elapsed < Duration::from_secs(10),
        "caught early, not at the end of the 60s window: {tallied:?}"
    );
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
    assert_eq!(finish.servers[2].state, ServerState::Untouched);
    let reason = finish.reason.unwrap();
    assert!(
        reason.contains("canary check failed: analysis: ")
            && reason.contains("max_error_ratio 0.01"),
        "{reason}"
    );
}

#[test]
fn too_few_requests_are_inconclusive_and_stop_the_rollout() {
    let plan = analysed("5s", "0.01", 1000);
    let mut world = World::new();
    world.traffic = vec![(0, 1, 0)];
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Failed);
    assert_eq!(verdict(&reports).0, CanaryVerdict::Inconclusive);
    assert!(finish.reason.unwrap().contains("inconclusive"));
    assert_eq!(finish.servers[1].state, ServerState::Untouched);
}

#[test]
fn counters_restarted_by_a_reload_are_counted_across_it() {
    let plan = analysed("10s", "0.5", 10);
    let mut world = World::new();
    world.traffic = vec![(0, 10, 1)];
    // Each poll takes 0.1 s plus a 1 s wait: a reload a few polls into the window.
    world.reload_at_poll = Some(12);
    let (finish, reports) = world.run(&plan);
    assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
    let (_, tallied) = verdict(&reports);
    // Every poll of the window counted 11 requests, 1 failed, the reload's included.
    assert_eq!(tallied.requests % 11, 0, "{tallied:?}");
    assert_eq!(tallied.requests / 11, tallied.errors, "{tallied:?}");
    assert!(tallied.errors >= 9, "{tallied:?}");
    assert!(world.polls > 12, "the reload happened");
}

#[test]
fn a_resumed_rollout_judges_its_canaries_again_unless_they_passed() {
    let plan = analysed("5s", "0.01", 10);
    for (passed, judged) in [(false, true), (true, false)] {
        let mut world = World::new();
        world.traffic = vec![(0, 10, 0)];
        let mut reports = Vec::new();
        let engine = resume(&plan, &[0], &[]).canaries_judged(passed);
        let finish = world.drive(engine, &mut reports, |_, _, _| None);
        assert_eq!(finish.outcome, Outcome::Success, "{finish:?}");
        assert_eq!(
            reports
                .iter()
                .any(|report| matches!(report, Report::AnalysisVerdict { .. })),
            judged,
            "analysis passed before: {passed}"
        );
        assert_eq!(finish.servers[2].state, ServerState::Done);
    }
}
