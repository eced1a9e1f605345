//! Canary analysis: once the canaries are back, and before anything else starts, they serve
//! traffic for `window` while every poll reads what HAProxy counted of their answers
//! (`hrsp_5xx`, `eresp`, `econ` of all their requests) on every HAProxy. The rollout goes
//! on only if the share that failed stays within `max_error_ratio` over at least
//! `min_requests`. It fails as soon as the failures projected over the whole window would
//! spend its error budget. A reload restarts HAProxy's counters: they are counted across it.

use super::*;
use crate::haproxy::Counters;
use crate::plan::Analysis as Rules;

/// How often progress is reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One canary on one HAProxy: its counters when the window began (or since its HAProxy
/// restarted them), as last seen, and what was counted before a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    base: Counters,
    last: Counters,
    carried: Counters,
    seen: bool,
}

impl Tally {
    fn see(&mut self, now: Counters) {
        if !self.seen {
            // The first read of it: the window starts here.
            *self = Tally {
                base: now,
                last: now,
                carried: Counters::default(),
                seen: true,
            };
            return;
        }
        if now.reset_since(&self.last) {
            self.carried.add(&self.last.since(&self.base));
            self.base = Counters::default();
        }
        self.last = now;
    }

    fn counted(&self) -> Counters {
        let mut total = self.carried;
        total.add(&self.last.since(&self.base));
        total
    }
}

/// The analysis under way.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Analysis {
    rules: Rules,
    started: Instant,
    /// Per HAProxy, per canary.
    tallies: Vec<Vec<Tally>>,
    reported: Option<Instant>,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryVerdict {
    Passed,
    Failed,
    /// Too few requests reached the canaries in the window to judge them.
    Inconclusive,
}

impl CanaryVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryVerdict::Passed => "passed",
            CanaryVerdict::Failed => "failed",
            CanaryVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// Requests and failures of the canaries so far, and how far into the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tallied {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub window: Duration,
}

impl Tallied {
    pub fn ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl Analysis {
    fn new(rules: Rules, instances: usize, canaries: usize, now: Instant) -> Self {
        Analysis {
            rules,
            started: now,
            tallies: vec![vec![Tally::default(); canaries]; instances],
            reported: None,
        }
    }

    /// Takes one poll: each canary's counters on each HAProxy that could be read, summed
    /// over its backends.
    fn see(&mut self, settings: &Settings, views: &Polled) {
        for (instance, tallies) in self.tallies.iter_mut().enumerate() {
            if views.get(instance).is_none_or(Result::is_err) {
                continue;
            }
            for (index, tally) in tallies.iter_mut().enumerate() {
                let name = settings.servers[index].as_str();
                let mut counters = Counters::default();
                for backend in settings.topology.backends(instance, index) {
                    if let Some(view) = views.server(instance, backend.as_str(), name) {
                        counters.add(&view.counters);
                    }
                }
                tally.see(counters);
            }
        }
    }

    fn tallied(&self, now: Instant) -> Tallied {
        let mut total = Counters::default();
        for tally in self.tallies.iter().flatten() {
            total.add(&tally.counted());
        }
        Tallied {
            requests: total.requests(),
            errors: total.errors(),
            elapsed: now.saturating_duration_since(self.started),
            window: self.rules.window,
        }
    }

    /// The verdict, once there is one.
    fn verdict(&self, tallied: &Tallied) -> Option<CanaryVerdict> {
        let rules = &self.rules;
        let allowed = |requests: f64| rules.max_error_ratio * requests;
        if tallied.elapsed >= rules.window {
            return Some(if tallied.requests < rules.min_requests {
                CanaryVerdict::Inconclusive
            } else if tallied.errors as f64 > allowed(tallied.requests as f64) {
                CanaryVerdict::Failed
            } else {
                CanaryVerdict::Passed
            });
        }
        // Early: enough requests to judge, and more failures than the whole window may
        // have at the rate seen so far.
        let elapsed = tallied.elapsed.as_secs_f64().max(0.001);
        let projected = tallied.requests as f64 * rules.window.as_secs_f64() / elapsed;
        let spent = tallied.errors as f64 > allowed(projected.max(tallied.requests as f64));
        (tallied.requests >= rules.min_requests && spent).then_some(CanaryVerdict::Failed)
    }
}

impl Rollout {
    /// The canaries are back: their analysis begins with a read of every HAProxy.
    pub(super) fn start_analysis(
        &mut self,
        rules: Rules,
        canaries: usize,
        now: Instant,
    ) -> Vec<Action> {
        self.analysis = Some(Analysis::new(
            rules,
            self.settings.instances.len(),
            canaries,
            now,
        ));
        self.task = Task::Analyzing;
        vec![Action::Run(Lane::Rollout, Effect::Poll)]
    }

    /// One poll of the analysis: progress, and the verdict once there is one.
    pub(super) fn after_analysis_poll(&mut self, views: &Polled, now: Instant) -> Vec<Action> {
        let Some(mut analysis) = self.analysis.take() else {
            return self.internal_error("an analysis poll without an analysis".to_owned(), now);
        };
        if self.halt != Halt::No {
            self.interruptions
                .push("stopped during the canary analysis".to_owned());
            return self.advance(now);
        }
        analysis.see(&self.settings, views);
        let tallied = analysis.tallied(now);
        let mut actions = Vec::new();
        let verdict = analysis.verdict(&tallied);
        if verdict.is_none()
            && analysis
                .reported
                .is_none_or(|reported| now.saturating_duration_since(reported) >= REPORT_EVERY)
        {
            analysis.reported = Some(now);
            actions.push(Action::Report(Report::Analysis { tallied }));
        }
        let Some(verdict) = verdict else {
            self.analysis = Some(analysis);
            self.task = Task::AnalysisWait;
            actions.push(Action::Run(Lane::Rollout, Effect::Wait));
            return actions;
        };
        actions.push(Action::Report(Report::AnalysisVerdict { verdict, tallied }));
        let rules = analysis.rules;
        let counted = format!(
            "{} of {} request(s) of the canaries failed ({:.2}%) in {}s",
            tallied.errors,
            tallied.requests,
            tallied.ratio() * 100.0,
            tallied.elapsed.as_secs()
        );
        match verdict {
            CanaryVerdict::Passed => {
                self.analysis_passed = true;
                actions.extend(self.advance(now));
            }
            CanaryVerdict::Failed => actions.extend(self.canary_failed(
                format!(
                    "analysis: {counted}; max_error_ratio {} allows {:.2}%",
                    rules.max_error_ratio,
                    rules.max_error_ratio * 100.0
                ),
                now,
            )),
            CanaryVerdict::Inconclusive => actions.extend(self.canary_failed(
                format!(
                    "analysis inconclusive: only {} request(s) reached the canaries in the {}s window (min_requests {}); {counted}",
                    tallied.requests,
                    rules.window.as_secs(),
                    rules.min_requests
                ),
                now,
            )),
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(ok: u64, failed: u64) -> Counters {
        Counters {
            responses: [0, ok, 0, 0, failed, 0],
            eresp: 0,
            econ: 0,
        }
    }

    #[test]
    fn a_tally_counts_across_a_reset_of_the_counters() {
        let mut tally = Tally::default();
        tally.see(counters(1000, 10));
        tally.see(counters(1050, 12));
        assert_eq!(tally.counted(), counters(50, 2));
        // A reload: the new process counts from zero.
        tally.see(counters(5, 1));
        assert_eq!(tally.counted(), counters(55, 3));
        tally.see(counters(25, 1));
        assert_eq!(tally.counted(), counters(75, 3));
    }

    fn rules() -> Rules {
        Rules {
            window: Duration::from_secs(100),
            max_error_ratio: 0.05,
            min_requests: 50,
        }
    }

    fn tallied(requests: u64, errors: u64, elapsed: u64) -> Tallied {
        Tallied {
            requests,
            errors,
            elapsed: Duration::from_secs(elapsed),
            window: Duration::from_secs(100),
        }
    }

    #[test]
    fn the_verdict_at_the_end_of_the_window() {
        let analysis = Analysis::new(rules(), 1, 1, Instant::now());
        assert_eq!(
            analysis.verdict(&tallied(1000, 50, 100)),
            Some(CanaryVerdict::Passed)
        );
        assert_eq!(
            analysis.verdict(&tallied(1000, 51, 100)),
            Some(CanaryVerdict::Failed)
        );
        assert_eq!(
            analysis.verdict(&tallied(49, 0, 100)),
            Some(CanaryVerdict::Inconclusive)
        );
    }

    #[test]
    fn it_fails_early_once_the_budget_of_the_whole_window_is_spent() {
        let analysis = Analysis::new(rules(), 1, 1, Instant::now());
        // 100 requests in 10 s: about 1000 in the window, 50 may fail.
        assert_eq!(analysis.verdict(&tallied(100, 50, 10)), None);
        assert_eq!(
            analysis.verdict(&tallied(100, 51, 10)),
            Some(CanaryVerdict::Failed)
        );
        // Too few requests to judge yet, however many failed.
        assert_eq!(analysis.verdict(&tallied(40, 40, 10)), None);
        // Under budget: wait for the window.
        assert_eq!(analysis.verdict(&tallied(500, 10, 50)), None);
    }
}
