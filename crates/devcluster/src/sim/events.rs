//! core/v1 Events as the real components record them: one object per (object, reason,
//! message, source), its `count` and `lastTimestamp` bumped when it happens again.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::util::meta_str;
use super::{Kind, Sim};

/// (reason, message, source) of an event.
type EventKey = (String, String, String);

/// Events written so far, to aggregate repeats.
#[derive(Default)]
pub(crate) struct Recorder {
    /// involved object uid → (reason, message, source) → (event name, count).
    seen: HashMap<String, HashMap<EventKey, (String, i64)>>,
}

/// One event to record.
pub(crate) struct Ev<'a> {
    /// `Normal` or `Warning`.
    pub(crate) warning: bool,
    pub(crate) reason: &'a str,
    pub(crate) message: String,
    /// `source.component` ("deployment-controller", "kubelet", …).
    pub(crate) component: &'a str,
    /// `source.host` (the node, for kubelet events).
    pub(crate) host: Option<&'a str>,
    /// `involvedObject.fieldPath` ("spec.containers{app}").
    pub(crate) field_path: Option<String>,
}

impl Sim {
    /// Records an event about `obj` (best effort: a failed write is logged, as the real
    /// recorders do).
    pub(crate) fn event(&mut self, kind: Kind, obj: &Value, ev: Ev<'_>) {
        let ns = meta_str(obj, "namespace").to_string();
        let uid = meta_str(obj, "uid").to_string();
        let now = crate::api::now();
        let key = (
            ev.reason.to_string(),
            ev.message.clone(),
            format!("{}{:?}", ev.component, ev.field_path),
        );
        if let Some((name, count)) = self
            .events
            .seen
            .get(&uid)
            .and_then(|m| m.get(&key))
            .cloned()
            && let Ok(Some(existing)) = self.get(Kind::Event, &ns, &name)
        {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            match self.patch(Kind::Event, &existing, patch, ev.component) {
                Ok(_) => {
                    self.events
                        .seen
                        .entry(uid)
                        .or_default()
                        .insert(key, (name, count + 1));
                }
                Err(e) => tracing::debug!(error = %e, "event not updated"),
            }
            return;
        }
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("{}.{:x}", meta_str(obj, "name"), nanos);
        let mut involved = json!({
            "kind": kind.kind_name(),
            "namespace": ns,
            "name": meta_str(obj, "name"),
            "uid": uid,
            "apiVersion": kind.api_version(),
            "resourceVersion": meta_str(obj, "resourceVersion"),
        });
        if let Some(fp) = &ev.field_path {
            involved["fieldPath"] = json!(fp);
        }
        let mut source = json!({"component": ev.component});
        if let Some(h) = ev.host {
            source["host"] = json!(h);
        }
        let event = json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "reason": ev.reason,
            "message": ev.message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": if ev.warning { "Warning" } else { "Normal" },
            "eventTime": Value::Null,
            "reportingComponent": ev.component,
            "reportingInstance": ev.host.unwrap_or(""),
        });
        match self.create(Kind::Event, &ns, event, ev.component) {
            Ok(_) => {
                self.events
                    .seen
                    .entry(uid)
                    .or_default()
                    .insert(key, (name, 1));
            }
            Err(e) => tracing::debug!(error = %e, "event not recorded"),
        }
    }

    /// Forgets the aggregation state of a deleted object's events.
    pub(crate) fn forget_events(&mut self, uid: &str) {
        self.events.seen.remove(uid);
    }
}
