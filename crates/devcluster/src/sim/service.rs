//! Services: node ports for NodePort/LoadBalancer services, a load balancer address for type
//! LoadBalancer, and the Endpoints of services with a selector (ready pod IPs in `addresses`,
//! the others in `notReadyAddresses`).

use serde_json::{Value, json};

use super::replicaset::{pod_active, pod_ready};
use super::util::{fnv32a, meta_str};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

/// The port of a pod a service port targets (a number, or a named container port).
fn target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        None => svc_port.get("port").and_then(Value::as_i64),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_i64),
        },
        _ => None,
    }
}

impl Sim {
    pub(crate) fn reconcile_service(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(svc) = self.get(Kind::Service, &key.ns, &key.name)? else {
            // The endpoints controller removes the Endpoints of a deleted service.
            return self.delete(Kind::Endpoints, &key.ns, &key.name, KCM);
        };
        if svc.deleting() {
            return Ok(());
        }
        let svc = self.allocate_node_ports(svc)?;
        let ty = svc
            .v
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let mut status = svc.v.get("status").cloned().unwrap_or_else(|| json!({}));
        if ty == "LoadBalancer" {
            let has = status
                .pointer("/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !has {
                let n = self.next_lb_ip;
                self.next_lb_ip = (self.next_lb_ip + 1) % 250;
                status["loadBalancer"] =
                    json!({"ingress": [{"ip": format!("172.18.255.{}", n + 1), "ipMode": "VIP"}]});
            }
        } else {
            status["loadBalancer"] = json!({});
        }
        self.write_status(Kind::Service, &svc, status, KCM)?;
        if svc
            .v
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            self.sync_endpoints(&svc)?;
        }
        Ok(())
    }

    /// Gives every port of a NodePort/LoadBalancer service a node port (30000-32767), as the
    /// API server allocates them.
    fn allocate_node_ports(&mut self, svc: Obj) -> Result<Obj, SimError> {
        let ty = svc
            .v
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if !matches!(ty, "NodePort" | "LoadBalancer") {
            return Ok(svc);
        }
        let Some(ports) = svc
            .v
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
        else {
            return Ok(svc);
        };
        if ports.iter().all(|p| p.get("nodePort").is_some()) {
            return Ok(svc);
        }
        let mut used: Vec<i64> = ports
            .iter()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let mut new_ports = Vec::new();
        for p in ports {
            let mut p = p;
            if p.get("nodePort").is_none() {
                let seed = format!("{}/{}/{}", svc.ns(), svc.name(), p);
                let mut n = 30000 + i64::from(fnv32a(seed.as_bytes()) % 2768);
                while used.contains(&n) {
                    n = 30000 + (n - 30000 + 1) % 2768;
                }
                used.push(n);
                p["nodePort"] = json!(n);
            }
            new_ports.push(p);
        }
        let v = self.patch(
            Kind::Service,
            &svc,
            json!({"spec": {"ports": new_ports}}),
            "kube-apiserver",
        )?;
        Ok(Obj { v })
    }

    fn sync_endpoints(&mut self, svc: &Obj) -> Result<(), SimError> {
        let ns = svc.ns().to_string();
        let names: Vec<String> = self
            .service_pods
            .get(&(ns.clone(), svc.name().to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        let mut pods = Vec::new();
        for name in names {
            let Some(pod) = self.get(Kind::Pod, &ns, &name)? else {
                continue;
            };
            if !pod_active(&pod.v) {
                continue;
            }
            let Some(ip) = pod.v.pointer("/status/podIP").and_then(Value::as_str) else {
                continue;
            };
            let mut addr = json!({
                "ip": ip,
                "targetRef": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod.uid()},
            });
            if let Some(node) = pod.v.pointer("/spec/nodeName") {
                addr["nodeName"] = node.clone();
            }
            if pod_ready(&pod.v) {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
            pods.push(pod);
        }
        let svc_ports = svc
            .v
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|sp| {
                let port = pods.iter().find_map(|p| target_port(sp, &p.v))?;
                let mut e = json!({"port": port, "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))});
                if let Some(n) = sp.get("name").filter(|n| n.as_str().is_some_and(|s| !s.is_empty())) {
                    e["name"] = n.clone();
                }
                if let Some(a) = sp.get("appProtocol") {
                    e["appProtocol"] = a.clone();
                }
                Some(e)
            })
            .collect();
        let subsets = if (ready.is_empty() && not_ready.is_empty()) || ports.is_empty() {
            Value::Null
        } else {
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            json!([s])
        };
        let labels = svc.v.pointer("/metadata/labels").cloned();
        match self.get(Kind::Endpoints, &ns, svc.name())? {
            None => {
                let mut ep = json!({"metadata": {"name": svc.name(), "namespace": ns}});
                if let Some(l) = labels {
                    ep["metadata"]["labels"] = l;
                }
                if !subsets.is_null() {
                    ep["subsets"] = subsets;
                }
                match self.create(Kind::Endpoints, &ns, ep, KCM) {
                    Ok(_) | Err(SimError::Api { code: 409, .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Some(ep) => {
                if ep.v.get("subsets").unwrap_or(&Value::Null) == &subsets {
                    return Ok(());
                }
                self.patch(Kind::Endpoints, &ep, json!({"subsets": subsets}), KCM)?;
                let _ = meta_str;
                Ok(())
            }
        }
    }
}
