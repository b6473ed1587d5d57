//! Shadow mode: a candidate version (`NAME.next.wasm`) runs on the live
//! traffic beside the serving one, its answers compared and never acted on.
//! Each candidate version counts agreements and disagreements and keeps the
//! latest disagreements as samples, so an operator sees what it would change
//! before promoting it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use crate::{CallError, Destinations, Rewrite};

/// Disagreements kept per candidate version (the newest).
const SAMPLES_KEPT: usize = 20;

/// The suffix that makes `NAME.next.wasm` the candidate of plugin NAME.
pub const CANDIDATE_SUFFIX: &str = ".next";

#[derive(Debug, Default)]
pub struct ShadowStats {
    compared: AtomicU64,
    agreed: AtomicU64,
    disagreed: AtomicU64,
    /// Calls where the candidate failed and the serving version did not.
    candidate_errors: AtomicU64,
    samples: Mutex<VecDeque<ShadowSample>>,
}

/// One call where the candidate answered otherwise.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ShadowSample {
    pub event_id: String,
    pub role: &'static str,
    pub current: String,
    pub candidate: String,
    pub at_unix_ms: u64,
}

/// The comparison so far, for the API and metrics.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ShadowReport {
    pub compared: u64,
    pub agreed: u64,
    pub disagreed: u64,
    pub candidate_errors: u64,
    /// Newest first.
    pub samples: Vec<ShadowSample>,
}

/// An answer as compared and shown: two answers agree when these are equal.
pub trait Answer {
    fn describe(&self) -> String;
}

impl Answer for bool {
    fn describe(&self) -> String {
        if *self { "keep" } else { "drop" }.to_string()
    }
}

impl Answer for Rewrite {
    fn describe(&self) -> String {
        let value = serde_json::json!({"type": self.event_type, "data": self.data});
        value.to_string()
    }
}

impl Answer for Destinations {
    fn describe(&self) -> String {
        let mut subscriptions = self.subscriptions.clone();
        let mut tags = self.tags.clone();
        subscriptions.sort();
        subscriptions.dedup();
        tags.sort();
        tags.dedup();
        serde_json::json!({"subscriptions": subscriptions, "tags": tags}).to_string()
    }
}

fn describe<T: Answer>(answer: &Result<T, CallError>) -> Result<String, String> {
    match answer {
        Ok(a) => Ok(a.describe()),
        Err(e) => Err(e.to_string()),
    }
}

impl ShadowStats {
    /// Compares one call's answers. Two failures agree (neither acts);
    /// otherwise the descriptions must be equal.
    pub fn record<T: Answer>(
        &self,
        event_id: &str,
        role: &'static str,
        current: &Result<T, CallError>,
        candidate: &Result<T, CallError>,
    ) {
        self.compared.fetch_add(1, Ordering::Relaxed);
        let (current, candidate) = (describe(current), describe(candidate));
        let agree = match (&current, &candidate) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if agree {
            self.agreed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if candidate.is_err() {
            self.candidate_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.disagreed.fetch_add(1, Ordering::Relaxed);
        }
        let text = |r: Result<String, String>| r.unwrap_or_else(|e| format!("error: {e}"));
        let sample = ShadowSample {
            event_id: event_id.to_string(),
            role,
            current: text(current),
            candidate: text(candidate),
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_back();
        }
        samples.push_front(sample);
    }

    pub fn report(&self) -> ShadowReport {
        ShadowReport {
            compared: self.compared.load(Ordering::Relaxed),
            agreed: self.agreed.load(Ordering::Relaxed),
            disagreed: self.disagreed.load(Ordering::Relaxed),
            candidate_errors: self.candidate_errors.load(Ordering::Relaxed),
            samples: self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> CallError {
        CallError::Plugin {
            plugin: "p".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn counts_agreements_disagreements_and_candidate_failures() {
        let stats = ShadowStats::default();
        stats.record("e1", "filter", &Ok(true), &Ok(true));
        stats.record("e2", "filter", &Ok(true), &Ok(false));
        stats.record("e3", "filter", &Ok(false), &Err(failed()));
        stats.record::<bool>("e4", "filter", &Err(failed()), &Err(failed()));
        let report = stats.report();
        assert_eq!(
            (
                report.compared,
                report.agreed,
                report.disagreed,
                report.candidate_errors
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(report.samples.len(), 2);
        assert_eq!(report.samples[0].event_id, "e3", "newest first");
        assert_eq!(report.samples[1].current, "keep");
        assert_eq!(report.samples[1].candidate, "drop");
    }

    #[test]
    fn destinations_agree_whatever_their_order() {
        let a = Destinations {
            subscriptions: vec![],
            tags: vec!["x".into(), "y".into()],
        };
        let b = Destinations {
            subscriptions: vec![],
            tags: vec!["y".into(), "x".into()],
        };
        assert_eq!(a.describe(), b.describe());
    }

    #[test]
    fn keeps_only_the_newest_samples() {
        let stats = ShadowStats::default();
        for n in 0..(SAMPLES_KEPT + 5) {
            stats.record(&format!("e{n}"), "filter", &Ok(true), &Ok(false));
        }
        let report = stats.report();
        assert_eq!(report.samples.len(), SAMPLES_KEPT);
        assert_eq!(report.samples[0].event_id, format!("e{}", SAMPLES_KEPT + 4));
    }
}
