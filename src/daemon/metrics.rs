//! Prometheus metrics: a small in-process registry rendered as the text exposition format.
//! Label sets are tiny (lanes × outcomes), so a mutex-guarded map is plenty.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the latency histograms, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn help(name: &str) -> (&'static str, &'static str) {
    match name {
        "tapgate_taps_total" => ("counter", "Taps by lane, direction and outcome."),
        "tapgate_tap_stage_seconds" => ("histogram", "Time per tap stage."),
        "tapgate_aggregator_requests_total" => (
            "counter",
            "Aggregator calls by endpoint and response code (or transport failure).",
        ),
        "tapgate_journal_operations" => (
            "gauge",
            "Journal operations by state; ATTENTION needs a person.",
        ),
        "tapgate_reader_up" => ("gauge", "1 when the lane's reader is present."),
        "tapgate_relay_failures_total" => ("counter", "Relay commands that failed."),
        "tapgate_free_exit" => (
            "gauge",
            "1 while the station is in free-exit (emergency) mode.",
        ),
        "tapgate_journal_writable" => ("gauge", "1 when the journal accepts writes."),
        "tapgate_exits_unpaid_total" => (
            "counter",
            "Exits let out unpaid because the aggregator could not be used, by reason.",
        ),
        "tapgate_holds_without_journey_total" => (
            "counter",
            "Successful holds found without a journey and sent to refund.",
        ),
        "tapgate_amount_mismatches_total" => (
            "counter",
            "Aggregator answers naming another amount than the payment's (ATTENTION).",
        ),
        "tapgate_fast_opens_total" => (
            "counter",
            "Gates opened before the aggregator answered ([policy.fast_open]).",
        ),
        "tapgate_fast_open_refused_total" => (
            "counter",
            "Taps with no answer within wait_ms that fast open refused (exposure_cap, degraded).",
        ),
        "tapgate_fast_opens_unpaid_total" => (
            "counter",
            "Fast-opened payments that ended unpaid (the passenger is on the unpaid list).",
        ),
        "tapgate_fast_opens_unpaid_rupiah_total" => (
            "counter",
            "Rupiah of fast-opened payments that ended unpaid.",
        ),
        "tapgate_fast_open_exposure_rupiah" => (
            "gauge",
            "Rupiah opened for and not yet confirmed by the aggregator.",
        ),
        "tapgate_fast_open_degraded" => (
            "gauge",
            "1 while fast open is off because the aggregator has stopped answering.",
        ),
        "tapgate_taps_refused_unpaid_total" => (
            "counter",
            "Tap-ins refused because the passenger is on the unpaid list.",
        ),
        _ => ("untyped", "tapgate metric."),
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (name, own(labels));
        *self.lock().counters.entry(key).or_insert(0) += 1;
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = (name, own(labels));
        *self.lock().counters.entry(key).or_insert(0) += n;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.lock().gauges.insert((name, own(labels)), v);
    }

    /// Records one observation in a histogram, seconds.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        let mut g = self.lock();
        let h = g.histograms.entry((name, own(labels))).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The current value of a counter (tests, `doctor`).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.lock()
            .counters
            .get(&(name, own(labels)))
            .copied()
            .unwrap_or(0)
    }

    /// The current value of a gauge, `None` while it was never set (tests, `doctor`).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Option<f64> {
        self.lock().gauges.get(&(name, own(labels))).copied()
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        let mut last = "";
        let mut header = |out: &mut String, name: &'static str| {
            if name != last {
                let (kind, text) = help(name);
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
                last = name;
            }
        };
        for ((name, labels), v) in &g.counters {
            header(&mut out, name);
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
        }
        for ((name, labels), v) in &g.gauges {
            header(&mut out, name);
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
        }
        for ((name, labels), h) in &g.histograms {
            header(&mut out, name);
            for (i, b) in BUCKETS.iter().enumerate() {
                let le = b.to_string();
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(labels, Some(&le)),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                fmt_labels(labels, Some("+Inf")),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
        }
        out
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.inc(
            "tapgate_taps_total",
            &[("lane", "in-1"), ("outcome", "approved")],
        );
        m.inc(
            "tapgate_taps_total",
            &[("lane", "in-1"), ("outcome", "approved")],
        );
        m.set("tapgate_free_exit", &[], 1.0);
        m.observe(
            "tapgate_tap_stage_seconds",
            &[("stage", "aggregator")],
            0.03,
        );
        let t = m.render();
        assert!(t.contains("# TYPE tapgate_taps_total counter"), "{t}");
        assert!(
            t.contains("tapgate_taps_total{lane=\"in-1\",outcome=\"approved\"} 2"),
            "{t}"
        );
        assert!(t.contains("tapgate_free_exit 1"), "{t}");
        assert!(
            t.contains("tapgate_tap_stage_seconds_bucket{stage=\"aggregator\",le=\"0.025\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("tapgate_tap_stage_seconds_bucket{stage=\"aggregator\",le=\"0.05\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("tapgate_tap_stage_seconds_count{stage=\"aggregator\"} 1"),
            "{t}"
        );
        assert_eq!(
            m.counter(
                "tapgate_taps_total",
                &[("lane", "in-1"), ("outcome", "approved")]
            ),
            2
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.inc("tapgate_relay_failures_total", &[("lane", "a\"b")]);
        assert!(m.render().contains("lane=\"a\\\"b\""));
    }
}
