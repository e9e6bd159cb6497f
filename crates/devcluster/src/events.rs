//! One storage for Events: `events.k8s.io/v1` is a second view of the core/v1 Events.
//!
//! Kubernetes stores every Event once (in its internal form, which is the core/v1 shape) and
//! converts on the way in and out of the `events.k8s.io/v1` endpoints; an Event written through
//! either API is listed and watched through both, with one resourceVersion history. The
//! devcluster does the same:
//!
//! - objects of `events.k8s.io/v1` have the storage key of core `events` (see
//!   [`crate::registry::ResourceInfo::storage_key`]), so a list, a watch or a namespace cleanup
//!   sees one set of objects whichever API it goes through;
//! - they are stored in core/v1 form: the simulated controllers (and every older client) write
//!   core Events, so storing that form keeps their path free of conversion and keeps the
//!   field selectors, printers and garbage collection of core Events working unchanged;
//! - [`to_events_v1`] converts a stored Event for the events.k8s.io reader (get, list, watch
//!   and the body a write returns), [`to_core`] converts what an events.k8s.io writer sends
//!   before it is stored (a patch is applied to the events.k8s.io view of the live object and
//!   the result converted back).
//!
//! The field mapping is Kubernetes' (`pkg/apis/events/v1` conversion): `note`↔`message`,
//! `regarding`↔`involvedObject`, `reportingController`↔`reportingComponent`,
//! `deprecatedSource`↔`source`, `deprecatedCount`/`deprecatedFirstTimestamp`/
//! `deprecatedLastTimestamp`↔`count`/`firstTimestamp`/`lastTimestamp`; `eventTime`, `series`,
//! `type`, `reason`, `action`, `related` and `reportingInstance` carry the same name in both.
//! A core Event that names only `source.component` (as old recorders write) reads with that
//! component as `reportingController`, which is what `kubectl events` shows for it.

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;

/// API group of the second Event API.
pub const GROUP: &str = "events.k8s.io";

/// `(events.k8s.io/v1 name, core/v1 name)` of the renamed fields.
const RENAMED: [(&str, &str); 7] = [
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];

/// Fields of the same name in both versions (besides `metadata`).
const SHARED: [&str; 7] = [
    "eventTime",
    "series",
    "type",
    "reason",
    "action",
    "related",
    "reportingInstance",
];

/// Whether a resource is the events.k8s.io view of the core Events.
pub fn is_events_v1(info: &ResourceInfo) -> bool {
    info.group == GROUP && info.resource == "events"
}

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, src: &str, dst: &str) {
    if let Some(v) = from.get(src)
        && !v.is_null()
    {
        to.insert(dst.to_string(), v.clone());
    }
}

/// The events.k8s.io/v1 form of a stored (core/v1) Event. An object already in that form is
/// returned unchanged, so the conversion may safely run twice.
pub fn to_events_v1(core: &Value) -> Value {
    let Some(m) = core.as_object() else {
        return core.clone();
    };
    if m.get("apiVersion").and_then(Value::as_str) == Some("events.k8s.io/v1") {
        return core.clone();
    }
    let mut out = Map::new();
    out.insert("kind".into(), Value::from("Event"));
    out.insert("apiVersion".into(), Value::from("events.k8s.io/v1"));
    copy(m, &mut out, "metadata", "metadata");
    for f in SHARED {
        copy(m, &mut out, f, f);
    }
    // eventTime is a required field of events.k8s.io/v1 (typed clients expect the key).
    out.entry("eventTime").or_insert(Value::Null);
    for (v1, c) in RENAMED {
        copy(m, &mut out, c, v1);
    }
    if !out.contains_key("reportingController")
        && let Some(component) = m
            .get("source")
            .and_then(|s| s.get("component"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
    {
        out.insert("reportingController".into(), Value::from(component));
    }
    Value::Object(out)
}

/// The core/v1 (stored) form of an events.k8s.io/v1 Event. An object already in core form is
/// returned unchanged.
pub fn to_core(v1: &Value) -> Value {
    let Some(m) = v1.as_object() else {
        return v1.clone();
    };
    if m.get("apiVersion").and_then(Value::as_str) != Some("events.k8s.io/v1") {
        return v1.clone();
    }
    let mut out = Map::new();
    out.insert("kind".into(), Value::from("Event"));
    out.insert("apiVersion".into(), Value::from("v1"));
    copy(m, &mut out, "metadata", "metadata");
    for f in SHARED {
        copy(m, &mut out, f, f);
    }
    for (v1_name, c) in RENAMED {
        copy(m, &mut out, v1_name, c);
    }
    // Fields the events.k8s.io schema does not know travel too: unknown-field validation of
    // the events.k8s.io request has already warned about (or refused) them.
    for (k, v) in m {
        if !out.contains_key(k)
            && !RENAMED.iter().any(|(n, _)| n == k)
            && !RENAMED.iter().any(|(_, c)| c == k)
        {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_every_field() {
        let core = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "web.1", "namespace": "demo", "resourceVersion": "7"},
            "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "demo"},
            "reason": "ScalingReplicaSet", "message": "Scaled up", "type": "Normal",
            "source": {"component": "deployment-controller"},
            "reportingComponent": "deployment-controller", "reportingInstance": "",
            "count": 2, "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:05Z", "eventTime": null,
            "action": "Scale", "related": {"kind": "ReplicaSet", "name": "web-1"},
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:05.000000Z"},
        });
        let v1 = to_events_v1(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "Scaled up");
        assert_eq!(v1["regarding"]["name"], "web");
        assert_eq!(v1["reportingController"], "deployment-controller");
        assert_eq!(v1["deprecatedSource"]["component"], "deployment-controller");
        assert_eq!(v1["deprecatedCount"], 2);
        assert_eq!(v1["deprecatedLastTimestamp"], "2026-01-01T00:00:05Z");
        assert_eq!(v1["series"]["count"], 2);
        assert!(v1.get("message").is_none() && v1.get("involvedObject").is_none());
        assert_eq!(to_events_v1(&v1), v1, "converting twice changes nothing");
        let mut back = to_core(&v1);
        // eventTime null is dropped on the way and means the same as absent.
        back["eventTime"] = Value::Null;
        assert_eq!(back, core);
    }

    #[test]
    fn source_component_stands_in_for_the_reporting_controller() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "source": {"component": "kubelet"}});
        assert_eq!(to_events_v1(&core)["reportingController"], "kubelet");
    }
}
