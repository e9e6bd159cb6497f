//! Writes of the simulated controllers, through the same API functions as client requests.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Kind, Obj, Sim, SimError};
use crate::api::{self, Op};
use crate::apply::PatchKind;
use crate::status::ApiError;

/// The object a write stored: the reply carries it for the kinds simulated (served as stored),
/// so the body is parsed only if it does not.
fn written(reply: api::Reply) -> Result<Arc<Value>, SimError> {
    match reply.object {
        Some(v) => Ok(v),
        None => serde_json::from_slice(&reply.body)
            .map(Arc::new)
            .map_err(|e| SimError::Corrupt(e.to_string())),
    }
}

/// Field managers of the real components.
pub(crate) const KCM: &str = "kube-controller-manager";
pub(crate) const KUBELET: &str = "kubelet";
pub(crate) const SCHEDULER: &str = "kube-scheduler";

impl Sim {
    fn op(
        &self,
        kind: Kind,
        ns: &str,
        name: Option<&str>,
        subresource: Option<&str>,
        manager: &str,
    ) -> Result<Op, SimError> {
        let info = self
            .infos
            .get(&kind)
            .cloned()
            .ok_or_else(|| SimError::Api {
                kind: kind.kind_name(),
                namespace: ns.to_string(),
                name: name.unwrap_or("").to_string(),
                message: "the resource is not served".into(),
                code: 404,
            })?;
        Ok(Op {
            info,
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: name.map(String::from),
            subresource: subresource.map(String::from),
            query: HashMap::new(),
            manager: manager.to_string(),
            manager_explicit: true,
        })
    }

    fn api_err(kind: Kind, ns: &str, name: &str, e: ApiError) -> SimError {
        SimError::Api {
            kind: kind.kind_name(),
            namespace: ns.to_string(),
            name: name.to_string(),
            message: e.message,
            code: e.code,
        }
    }

    /// Creates an object; returns it as stored.
    pub(crate) fn create(
        &self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
        manager: &str,
    ) -> Result<Arc<Value>, SimError> {
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind_name());
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let op = self.op(kind, ns, None, None, manager)?;
        let reply =
            api::create(&self.state, &op, obj).map_err(|e| Self::api_err(kind, ns, &name, e))?;
        written(reply)
    }

    /// Replaces the status of `obj` (read earlier) with `status` unless it is already that;
    /// the write is conditional on the resourceVersion read. Returns whether it wrote.
    pub(crate) fn write_status(
        &self,
        kind: Kind,
        obj: &Obj,
        status: Value,
        manager: &str,
    ) -> Result<bool, SimError> {
        if obj.v.get("status") == Some(&status) {
            return Ok(false);
        }
        let mut new = Value::clone(&obj.v);
        new["status"] = status;
        let op = self.op(kind, obj.ns(), Some(obj.name()), Some("status"), manager)?;
        api::update(&self.state, &op, new)
            .map_err(|e| Self::api_err(kind, obj.ns(), obj.name(), e))?;
        Ok(true)
    }

    /// A JSON merge patch of the main resource (spec or metadata), conditional on the
    /// resourceVersion of `obj`.
    pub(crate) fn patch(
        &self,
        kind: Kind,
        obj: &Obj,
        mut patch: Value,
        manager: &str,
    ) -> Result<Arc<Value>, SimError> {
        if let Some(rv) = obj.v.pointer("/metadata/resourceVersion") {
            patch["metadata"]["resourceVersion"] = rv.clone();
        }
        let op = self.op(kind, obj.ns(), Some(obj.name()), None, manager)?;
        let reply = api::patch(&self.state, &op, PatchKind::Merge, patch)
            .map_err(|e| Self::api_err(kind, obj.ns(), obj.name(), e))?;
        written(reply)
    }

    /// Deletes an object (already gone is fine).
    pub(crate) fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        manager: &str,
    ) -> Result<(), SimError> {
        let op = self.op(kind, ns, Some(name), None, manager)?;
        let options = json!({"propagationPolicy": "Background"});
        match api::delete(&self.state, &op, Some(&options)) {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(Self::api_err(kind, ns, name, e)),
        }
    }
}
