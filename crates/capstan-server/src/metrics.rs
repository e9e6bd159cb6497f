//! Prometheus metrics, in the text exposition format (written by hand: nine series do not need
//! a metrics library).
//!
//! [`Metrics`] is a cheap, cloneable handle. The controller records into it (syncs, reconcile,
//! Git fetch and render durations, queue depth), the webhook handler counts its deliveries; the
//! server serves it on its own listener, together with the `capstan_applications{sync,health}`
//! gauge it counts from its application cache at scrape time.
//!
//! The series:
//! - `capstan_applications{sync, health}` (gauge): applications by sync and health status;
//! - `capstan_syncs_total{result}` (counter): finished syncs by result (`Succeeded`, `Failed`,
//!   `Error`);
//! - `capstan_webhook_requests_total{provider, result}` (counter): Git webhook deliveries by
//!   provider (`github`, `gitlab`, `gitea`, `unknown` when no provider header is set) and
//!   result: `refreshed` (a push refreshed at least one application), `ignored` (verified, but
//!   a ping, another event, or a push no application follows), `unauthorized` (no secret
//!   configured, signature or token missing or wrong), `invalid` (no provider header, malformed
//!   payload), `error` (Capstan could not read the secret or refresh an application). A body
//!   over the size limit is refused before the handler and is not counted;
//! - `capstan_reconcile_duration_seconds`, `capstan_git_fetch_duration_seconds`,
//!   `capstan_render_duration_seconds` (histograms);
//! - `capstan_queue_depth` (gauge): applications waiting for a reconcile;
//! - `capstan_shards` and `capstan_shards_held` (gauges): the shards the applications are split
//!   into and how many of them this replica holds (both 0 when the controller does not shard).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Bucket bounds (seconds) of the duration histograms: from a cached no-change reconcile
/// (milliseconds) to a slow Git fetch (a minute).
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A histogram of durations.
struct Histogram {
    /// Per bucket (not cumulative; summed when rendered), plus one for `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations in nanoseconds (an integer keeps the update lock-free).
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

struct Inner {
    syncs: Mutex<BTreeMap<String, u64>>,
    /// Webhook deliveries by (provider, result).
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    reconcile: Histogram,
    git_fetch: Histogram,
    render: Histogram,
    queue_depth: AtomicI64,
    shards: AtomicI64,
    shards_held: AtomicI64,
}

/// Handle to Capstan's metrics. Clones share the same series.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Empty series.
    pub fn new() -> Self {
        Metrics(Arc::new(Inner {
            syncs: Mutex::new(BTreeMap::new()),
            webhooks: Mutex::new(BTreeMap::new()),
            reconcile: Histogram::new(),
            git_fetch: Histogram::new(),
            render: Histogram::new(),
            queue_depth: AtomicI64::new(0),
            shards: AtomicI64::new(0),
            shards_held: AtomicI64::new(0),
        }))
    }

    /// Counts one finished sync with its result (`Succeeded`, `Failed`, `Error`).
    pub fn record_sync(&self, result: &str) {
        let mut syncs = self.0.syncs.lock().unwrap_or_else(PoisonError::into_inner);
        *syncs.entry(result.to_string()).or_insert(0) += 1;
    }

    /// Counts one webhook delivery of `provider` with its `result` (see the module
    /// documentation for the values).
    pub fn record_webhook(&self, provider: &str, result: &str) {
        let mut webhooks = self
            .0
            .webhooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *webhooks
            .entry((provider.to_string(), result.to_string()))
            .or_insert(0) += 1;
    }

    /// Records how long one reconcile of one application took.
    pub fn observe_reconcile(&self, d: Duration) {
        self.0.reconcile.observe(d);
    }

    /// Records how long one Git fetch took.
    pub fn observe_git_fetch(&self, d: Duration) {
        self.0.git_fetch.observe(d);
    }

    /// Records how long one render took.
    pub fn observe_render(&self, d: Duration) {
        self.0.render.observe(d);
    }

    /// Sets the number of applications waiting for a reconcile.
    pub fn set_queue_depth(&self, depth: i64) {
        self.0.queue_depth.store(depth, Ordering::Relaxed);
    }

    /// Sets the shard gauges: this replica holds `held` of `total` shards.
    pub fn set_shards(&self, held: i64, total: i64) {
        self.0.shards_held.store(held, Ordering::Relaxed);
        self.0.shards.store(total, Ordering::Relaxed);
    }

    /// The text exposition of every series, with `applications` counted by (sync, health).
    pub fn render(&self, applications: &BTreeMap<(String, String), u64>) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP capstan_applications Applications by sync and health status.\n");
        out.push_str("# TYPE capstan_applications gauge\n");
        for ((sync, health), n) in applications {
            let _ = writeln!(
                out,
                "capstan_applications{{sync=\"{}\",health=\"{}\"}} {n}",
                escape(sync),
                escape(health)
            );
        }
        out.push_str("# HELP capstan_syncs_total Finished syncs by result.\n");
        out.push_str("# TYPE capstan_syncs_total counter\n");
        {
            let syncs = self.0.syncs.lock().unwrap_or_else(PoisonError::into_inner);
            for (result, n) in syncs.iter() {
                let _ = writeln!(
                    out,
                    "capstan_syncs_total{{result=\"{}\"}} {n}",
                    escape(result)
                );
            }
        }
        out.push_str(
            "# HELP capstan_webhook_requests_total Git webhook deliveries by provider and result.\n",
        );
        out.push_str("# TYPE capstan_webhook_requests_total counter\n");
        {
            let webhooks = self
                .0
                .webhooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for ((provider, result), n) in webhooks.iter() {
                let _ = writeln!(
                    out,
                    "capstan_webhook_requests_total{{provider=\"{}\",result=\"{}\"}} {n}",
                    escape(provider),
                    escape(result)
                );
            }
        }
        self.0.reconcile.render(
            &mut out,
            "capstan_reconcile_duration_seconds",
            "Duration of one application reconcile.",
        );
        self.0.git_fetch.render(
            &mut out,
            "capstan_git_fetch_duration_seconds",
            "Duration of one Git fetch.",
        );
        self.0.render.render(
            &mut out,
            "capstan_render_duration_seconds",
            "Duration of one manifest render.",
        );
        let gauges = [
            (
                "capstan_queue_depth",
                "Applications waiting for a reconcile.",
                &self.0.queue_depth,
            ),
            (
                "capstan_shards",
                "Shards the applications are split into.",
                &self.0.shards,
            ),
            (
                "capstan_shards_held",
                "Shards this replica holds the lease of.",
                &self.0.shards_held,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

/// The controller's measurements land in these series.
impl capstan_controller::metrics::Recorder for Metrics {
    fn sync_finished(&self, phase: &str) {
        self.record_sync(phase);
    }

    fn reconcile_finished(&self, took: Duration) {
        self.observe_reconcile(took);
    }

    fn git_fetch_finished(&self, took: Duration) {
        self.observe_git_fetch(took);
    }

    fn render_finished(&self, took: Duration) {
        self.observe_render(took);
    }

    fn queue_depth(&self, depth: usize) {
        self.set_queue_depth(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn shards_held(&self, held: usize, total: usize) {
        self.set_shards(
            i64::try_from(held).unwrap_or(i64::MAX),
            i64::try_from(total).unwrap_or(i64::MAX),
        );
    }
}

/// Escapes a label value (backslash, quote, newline) as the exposition format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::new();
        m.observe_reconcile(Duration::from_millis(3));
        m.observe_reconcile(Duration::from_millis(200));
        m.observe_reconcile(Duration::from_secs(120));
        m.record_sync("Succeeded");
        m.record_sync("Succeeded");
        m.record_sync("Fa\"iled");
        m.set_queue_depth(7);
        m.record_webhook("github", "refreshed");
        m.record_webhook("github", "refreshed");
        m.record_webhook("gitlab", "unauthorized");
        let mut apps = BTreeMap::new();
        apps.insert(("Synced".to_string(), "Healthy".to_string()), 3);
        let text = m.render(&apps);
        assert!(text.contains("capstan_applications{sync=\"Synced\",health=\"Healthy\"} 3\n"));
        assert!(text.contains("capstan_syncs_total{result=\"Succeeded\"} 2\n"));
        assert!(text.contains("capstan_syncs_total{result=\"Fa\\\"iled\"} 1\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_bucket{le=\"60\"} 2\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("capstan_reconcile_duration_seconds_count 3\n"));
        assert!(text.contains("capstan_queue_depth 7\n"));
        assert!(text.contains(
            "capstan_webhook_requests_total{provider=\"github\",result=\"refreshed\"} 2\n"
        ));
        assert!(text.contains(
            "capstan_webhook_requests_total{provider=\"gitlab\",result=\"unauthorized\"} 1\n"
        ));
        assert!(text.contains("capstan_git_fetch_duration_seconds_count 0\n"));
    }

    #[test]
    fn the_controller_records_through_the_trait() {
        use capstan_controller::metrics::Recorder;
        let m = Metrics::new();
        let recorder: std::sync::Arc<dyn Recorder> = std::sync::Arc::new(m.clone());
        recorder.sync_finished("Failed");
        recorder.reconcile_finished(Duration::from_millis(20));
        recorder.git_fetch_finished(Duration::from_millis(2));
        recorder.render_finished(Duration::from_millis(2));
        recorder.render_finished(Duration::from_millis(3));
        recorder.queue_depth(4);
        recorder.shards_held(2, 3);
        let text = m.render(&BTreeMap::new());
        assert!(text.contains("capstan_shards 3\n"), "{text}");
        assert!(text.contains("capstan_shards_held 2\n"), "{text}");
        assert!(
            text.contains("capstan_syncs_total{result=\"Failed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("capstan_reconcile_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("capstan_git_fetch_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("capstan_render_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(text.contains("capstan_queue_depth 4\n"), "{text}");
    }
}
