//! PersistentVolumeClaims are bound at once to a volume named `pvc-<uid>` with the capacity
//! and access modes they request, as a dynamic provisioner and the binder would.

use serde_json::{Value, json};

use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

impl Sim {
    pub(crate) fn reconcile_pvc(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(pvc) = self.get(Kind::Pvc, &key.ns, &key.name)? else {
            return Ok(());
        };
        if pvc.deleting() {
            return Ok(());
        }
        let pvc = if pvc
            .v
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let volume = format!("pvc-{}", pvc.uid());
            let v = self.patch(
                Kind::Pvc,
                &pvc,
                json!({
                    "metadata": {"annotations": {
                        "pv.kubernetes.io/bind-completed": "yes",
                        "pv.kubernetes.io/bound-by-controller": "yes",
                    }},
                    "spec": {"volumeName": volume},
                }),
                KCM,
            )?;
            Obj { v }
        } else {
            pvc
        };
        let mut status = json!({"phase": "Bound"});
        if let Some(m) = pvc.v.pointer("/spec/accessModes") {
            status["accessModes"] = m.clone();
        }
        if let Some(s) = pvc.v.pointer("/spec/resources/requests/storage") {
            status["capacity"] = json!({"storage": s});
        }
        self.write_status(Kind::Pvc, &pvc, status, KCM)?;
        Ok(())
    }
}
