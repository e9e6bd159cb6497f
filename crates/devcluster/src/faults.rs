//! Fault injection for reliability tests: a cluster that misbehaves on purpose. Off by default.
//!
//! What it can do, all at once if asked:
//! - fail a fraction of requests (`errorRate`) with one of `codes` (500 InternalError, 503
//!   ServiceUnavailable, 429 TooManyRequests, 504 Timeout): a proper `kind: Status` body; 429
//!   and 503 carry `Retry-After: 1` (and `details.retryAfterSeconds`), as the API server sends
//!   them;
//! - add `latency` (plus up to `latencyJitter`) before a request is served;
//! - end watch streams `dropWatchAfter` after they started (clients must re-watch);
//! - refuse every write with 503 while `refuseWrites` is on, or during `refuseWritesWindow`
//!   (`START..END`, offsets from the moment the configuration was set: server start for the
//!   command-line flags, the PUT for the admin endpoint);
//! - with `onlyWrites`, the random failures hit mutating verbs only (POST, PUT, PATCH, DELETE).
//!
//! `seed` makes the random choices reproducible (one generator, drawn in request order).
//! `/healthz`, `/readyz`, `/livez`, `/version` and the admin endpoint are never faulted.
//!
//! # Admin endpoint
//!
//! `GET /devcluster/faults` returns the configuration as JSON; `PUT /devcluster/faults` with the
//! same JSON replaces it (absent fields are off). Only members of `system:masters` (the admin
//! token of the kubeconfig) may use it:
//!
//! ```text
//! curl -k -H "Authorization: Bearer $TOKEN" -X PUT https://127.0.0.1:PORT/devcluster/faults \
//!   -d '{"errorRate": 0.2, "codes": [500, 503, 429], "onlyWrites": true, "latency": "50ms"}'
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::status::ApiError;

/// Path of the admin endpoint.
pub const ADMIN_PATH: &str = "/devcluster/faults";

/// The status codes a fault may answer.
pub const SUPPORTED_CODES: &[u16] = &[429, 500, 503, 504];

/// A bad fault configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    /// A duration that does not parse.
    #[error("{field}: invalid duration {value:?} (expected e.g. 250ms, 5s, 1m)")]
    Duration {
        /// The field or flag.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// A window that is not `START..END` with START < END.
    #[error("{field}: invalid window {value:?} (expected START..END, e.g. 10s..20s)")]
    Window {
        /// The field or flag.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// An error rate outside [0, 1].
    #[error("errorRate: {0} is not a fraction between 0 and 1")]
    Rate(f64),
    /// A status code faults cannot answer.
    #[error("codes: {0} is not one of 429, 500, 503, 504")]
    Code(String),
}

/// A span of time after the configuration was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start offset.
    pub start: Duration,
    /// End offset (exclusive).
    pub end: Duration,
}

impl Window {
    /// Parses `START..END` (`10s..20s`).
    pub fn parse(field: &'static str, s: &str) -> Result<Window, FaultError> {
        let bad = || FaultError::Window {
            field,
            value: s.to_string(),
        };
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let start = parse_duration(field, a.trim())?;
        let end = parse_duration(field, b.trim())?;
        if start >= end {
            return Err(bad());
        }
        Ok(Window { start, end })
    }

    fn contains(&self, t: Duration) -> bool {
        self.start <= t && t < self.end
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}..{}",
            fmt_duration(self.start),
            fmt_duration(self.end)
        )
    }
}

/// Parses a duration such as `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us` (`0` alone is zero).
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, FaultError> {
    let bad = || FaultError::Duration {
        field,
        value: s.to_string(),
    };
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_micros().is_multiple_of(1000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::fmt_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::parse_duration("duration", &s))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

mod window_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Window;

    pub fn serialize<S: Serializer>(w: &Option<Window>, s: S) -> Result<S::Ok, S::Error> {
        match w {
            Some(w) => s.serialize_str(&w.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Window>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| Window::parse("refuseWritesWindow", &s))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// What to inject; the default injects nothing. Also the JSON of the admin endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction of requests (of writes, with `only_writes`) that fail, 0 to 1.
    pub error_rate: f64,
    /// Codes the failures answer, chosen at random; empty means 500.
    pub codes: Vec<u16>,
    /// Added before each request is served.
    #[serde(with = "duration_opt", skip_serializing_if = "Option::is_none")]
    pub latency: Option<Duration>,
    /// Up to this much more latency, at random.
    #[serde(with = "duration_opt", skip_serializing_if = "Option::is_none")]
    pub latency_jitter: Option<Duration>,
    /// Watch streams end this long after they started.
    #[serde(with = "duration_opt", skip_serializing_if = "Option::is_none")]
    pub drop_watch_after: Option<Duration>,
    /// Refuse every write (503) while on.
    pub refuse_writes: bool,
    /// Refuse every write during this window after the configuration was set.
    #[serde(with = "window_opt", skip_serializing_if = "Option::is_none")]
    pub refuse_writes_window: Option<Window>,
    /// Random failures hit mutating verbs only.
    pub only_writes: bool,
    /// Seed of the random choices, for reproducible runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl FaultConfig {
    /// Checks the rate and the codes.
    pub fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(FaultError::Rate(self.error_rate));
        }
        if let Some(c) = self.codes.iter().find(|c| !SUPPORTED_CODES.contains(c)) {
            return Err(FaultError::Code(c.to_string()));
        }
        Ok(())
    }

    /// Parses a comma-separated list of codes (`500,503,429`).
    pub fn parse_codes(s: &str) -> Result<Vec<u16>, FaultError> {
        s.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<u16>()
                    .ok()
                    .filter(|n| SUPPORTED_CODES.contains(n))
                    .ok_or_else(|| FaultError::Code(c.to_string()))
            })
            .collect()
    }

    /// Whether anything at all is injected.
    pub fn is_active(&self) -> bool {
        self.error_rate > 0.0
            || self.latency.is_some_and(|d| !d.is_zero())
            || self.latency_jitter.is_some_and(|d| !d.is_zero())
            || self.drop_watch_after.is_some()
            || self.refuse_writes
            || self.refuse_writes_window.is_some()
    }
}

/// An injected failure: the error and whether it carries `Retry-After: 1`.
#[derive(Debug)]
pub struct Fault {
    /// The Status answered.
    pub error: ApiError,
    /// Seconds for the `Retry-After` header, if any.
    pub retry_after: Option<u32>,
}

struct Active {
    config: FaultConfig,
    since: Instant,
    rng: Mutex<StdRng>,
}

/// The fault injector of one server (cheap to consult when nothing is injected).
pub struct Faults {
    active: RwLock<Arc<Active>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("config", &self.config())
            .finish()
    }
}

fn is_write(method: &hyper::Method) -> bool {
    matches!(
        *method,
        hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH | hyper::Method::DELETE
    )
}

fn exempt(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(
        p,
        "/healthz" | "/readyz" | "/livez" | "/version" | ADMIN_PATH
    ) || ["/healthz/", "/readyz/", "/livez/"]
        .iter()
        .any(|x| path.starts_with(x))
}

fn fault(code: u16) -> Fault {
    let (reason, message, retry) = match code {
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
            true,
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            true,
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
            false,
        ),
        _ => (
            "InternalError",
            "an error on the server (\"injected fault\") has prevented the request from succeeding",
            false,
        ),
    };
    let details = if retry {
        json!({"causes": [{"message": "injected fault"}], "retryAfterSeconds": 1})
    } else {
        json!({"causes": [{"message": "injected fault"}]})
    };
    Fault {
        error: ApiError {
            code,
            reason,
            message: message.to_string(),
            details: Some(details),
        },
        retry_after: retry.then_some(1),
    }
}

impl Faults {
    /// An injector with this configuration (validated), starting now.
    pub fn new(config: FaultConfig) -> Result<Faults, FaultError> {
        config.validate()?;
        Ok(Faults {
            active: RwLock::new(Arc::new(Self::activate(config))),
        })
    }

    fn activate(config: FaultConfig) -> Active {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Active {
            config,
            since: Instant::now(),
            rng: Mutex::new(rng),
        }
    }

    fn current(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> FaultConfig {
        self.current().config.clone()
    }

    /// Replaces the configuration (time windows restart now).
    pub fn set(&self, config: FaultConfig) -> Result<(), FaultError> {
        config.validate()?;
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Self::activate(config));
        Ok(())
    }

    /// Called first for every request: sleeps the injected latency, then decides whether the
    /// request fails. `None` lets it through.
    pub async fn intercept(&self, method: &hyper::Method, path: &str) -> Option<Fault> {
        if exempt(path) {
            return None;
        }
        let active = self.current();
        let c = &active.config;
        if !c.is_active() {
            return None;
        }
        let (delay, roll, pick) = {
            let mut rng = active.rng.lock().unwrap_or_else(|e| e.into_inner());
            let jitter = c
                .latency_jitter
                .filter(|j| !j.is_zero())
                .map(|j| j.mul_f64(rng.random::<f64>()))
                .unwrap_or_default();
            let roll: f64 = rng.random();
            let pick = if c.codes.is_empty() {
                0
            } else {
                rng.random_range(0..c.codes.len())
            };
            (c.latency.unwrap_or_default() + jitter, roll, pick)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let write = is_write(method);
        let refusing = c.refuse_writes
            || c.refuse_writes_window
                .is_some_and(|w| w.contains(active.since.elapsed()));
        if write && refusing {
            let mut f = fault(503);
            f.error.message =
                "the server is refusing writes for now (injected fault); try again later".into();
            return Some(f);
        }
        if c.only_writes && !write {
            return None;
        }
        if roll < c.error_rate {
            return Some(fault(c.codes.get(pick).copied().unwrap_or(500)));
        }
        None
    }

    /// How long a watch may stream: `timeout`, shortened to `dropWatchAfter` when set.
    pub fn watch_timeout(&self, timeout: Duration) -> Duration {
        match self.current().config.drop_watch_after {
            Some(d) => timeout.min(d),
            None => timeout,
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            active: RwLock::new(Arc::new(Self::activate(FaultConfig::default()))),
        }
    }
}

/// Serves `GET`/`PUT` [`ADMIN_PATH`] for an authenticated user; only `system:masters` may.
pub fn admin(
    faults: &Faults,
    user: &crate::auth::UserInfo,
    method: &hyper::Method,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    if !user.groups.iter().any(|g| g == crate::rbac::MASTERS) {
        return Err(ApiError::forbidden(format!(
            "forbidden: User \"{}\" cannot {} path \"{ADMIN_PATH}\"",
            user.name,
            method.as_str().to_ascii_lowercase()
        )));
    }
    match *method {
        hyper::Method::GET => {}
        hyper::Method::PUT => {
            let config: FaultConfig = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("fault configuration: {e}")))?;
            faults
                .set(config)
                .map_err(|e| ApiError::bad_request(format!("fault configuration: {e}")))?;
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    serde_json::to_value(faults.config()).map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_windows_parse() {
        assert_eq!(parse_duration("f", "50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("f", "1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("f", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("f", "0"), Ok(Duration::ZERO));
        assert!(parse_duration("f", "5").is_err());
        assert!(parse_duration("f", "fast").is_err());
        assert!(parse_duration("f", "-1s").is_err());
        let w = Window::parse("w", "10s..20s").unwrap();
        assert!(w.contains(Duration::from_secs(10)) && !w.contains(Duration::from_secs(20)));
        assert!(Window::parse("w", "20s..10s").is_err());
        assert!(Window::parse("w", "10s").is_err());
        assert_eq!(w.to_string(), "10s..20s");
    }

    #[test]
    fn config_json_round_trips_and_rejects_bad_values() {
        let c: FaultConfig = serde_json::from_str(
            r#"{"errorRate":0.2,"codes":[500,503,429],"latency":"50ms","dropWatchAfter":"5s",
                "refuseWritesWindow":"1s..2s","onlyWrites":true,"seed":7}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let back: FaultConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<FaultConfig>(r#"{"errorrate":0.2}"#).is_err());
        assert!(serde_json::from_str::<FaultConfig>(r#"{"latency":"soon"}"#).is_err());
        let bad = FaultConfig {
            error_rate: 1.5,
            ..FaultConfig::default()
        };
        assert_eq!(bad.validate(), Err(FaultError::Rate(1.5)));
        assert_eq!(
            FaultConfig::parse_codes("500, 418"),
            Err(FaultError::Code("418".into()))
        );
    }

    #[tokio::test]
    async fn seeded_faults_are_reproducible_and_near_the_rate() {
        let cfg = FaultConfig {
            error_rate: 0.2,
            codes: vec![500, 503, 429],
            only_writes: true,
            seed: Some(42),
            ..FaultConfig::default()
        };
        let run = || async {
            let f = Faults::new(cfg.clone()).unwrap();
            let mut out = Vec::new();
            for _ in 0..1000 {
                out.push(
                    f.intercept(&hyper::Method::POST, "/api/v1/namespaces/a/configmaps")
                        .await
                        .map(|f| f.error.code),
                );
            }
            // Reads are never failed with onlyWrites.
            assert!(
                f.intercept(&hyper::Method::GET, "/api/v1/pods")
                    .await
                    .is_none()
            );
            out
        };
        let a = run().await;
        assert_eq!(a, run().await, "the same seed gives the same faults");
        let failed = a.iter().flatten().count();
        assert!(
            (150..250).contains(&failed),
            "{failed} of 1000 failed at rate 0.2"
        );
        for code in [500, 503, 429] {
            assert!(a.contains(&Some(code)), "code {code} is drawn");
        }
        let f = Faults::new(cfg).unwrap();
        assert!(
            f.intercept(&hyper::Method::POST, "/healthz")
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn refused_writes_answer_503_with_retry_after() {
        let f = Faults::new(FaultConfig {
            refuse_writes: true,
            ..FaultConfig::default()
        })
        .unwrap();
        let fault = f
            .intercept(&hyper::Method::DELETE, "/api/v1/namespaces/a/pods/p")
            .await
            .expect("writes are refused");
        assert_eq!((fault.error.code, fault.retry_after), (503, Some(1)));
        assert_eq!(fault.error.reason, "ServiceUnavailable");
        assert!(
            f.intercept(&hyper::Method::GET, "/api/v1/pods")
                .await
                .is_none()
        );
    }
}
