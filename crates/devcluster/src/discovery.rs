//! Discovery documents (legacy and aggregated v2/v2beta1) and the OpenAPI documents kubectl reads.
//!
//! kubectl asks `/openapi/v3` which group versions exist and then, before a PATCH or apply,
//! whether the PATCH operation of the kind accepts the `fieldValidation` query parameter (it looks
//! for an operation carrying `x-kubernetes-group-version-kind` for that kind). When it does,
//! validation happens on the server and kubectl needs no schemas. The schemas served here are
//! permissive objects and deliberately do not carry `x-kubernetes-group-version-kind`: when
//! kubectl finds a schema for a kind it computes client-side apply patches from it (kubectl
//! 1.30+), and a schema without properties makes that fail with warnings; without one, kubectl
//! uses its compiled-in types, as it does against servers without OpenAPI v3. The operations
//! carry the kind, which is what the field validation check reads.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceInfo};

fn scope(r: &ResourceInfo) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// `/api`: the legacy core versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[(String, Vec<Arc<ResourceInfo>>)]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs.clone(), "preferredVersion": vs[0]})
}

/// `/apis`: the legacy group list.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .snapshot()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let snap = reg.snapshot();
    let (_, vs) = snap.iter().find(|(g, _)| g == group && !g.is_empty())?;
    let mut g = group_json(group, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resource list.
pub fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let snap = reg.snapshot();
    let (_, vs) = snap.iter().find(|(g, _)| g == group)?;
    let (_, resources) = vs.iter().find(|(v, _)| v == version)?;
    let mut out = Vec::new();
    for r in resources {
        let mut e = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        if r.status {
            out.push(json!({
                "name": format!("{}/status", r.resource), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if r.scale.is_some() {
            out.push(json!({
                "name": format!("{}/scale", r.resource), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "resource": r.resource,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    let mut subs = Vec::new();
    if r.status {
        subs.push(json!({
            "subresource": "status",
            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "verbs": ["get", "patch", "update"],
        }));
    }
    if r.scale.is_some() {
        subs.push(json!({
            "subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"],
        }));
    }
    if !subs.is_empty() {
        e["subresources"] = Value::Array(subs);
    }
    e
}

/// Aggregated discovery for `/api` (`core == true`) or `/apis`, in API version `v2` or `v2beta1`.
pub fn aggregated(reg: &Registry, core: bool, api_version: &str) -> Value {
    let items: Vec<Value> = reg
        .snapshot()
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|(v, rs)| {
                    json!({
                        "version": v,
                        "resources": rs.iter().map(|r| aggregated_resource(r)).collect::<Vec<_>>(),
                        "freshness": "Current",
                    })
                })
                .collect();
            let meta = if g.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{api_version}"),
        "metadata": {},
        "items": items,
    })
}

/// Which aggregated discovery version the Accept header asks for, if any (v2 preferred).
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    let mut best: Option<&'static str> = None;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if !p.contains("as=APIGroupDiscoveryList") || !p.contains("g=apidiscovery.k8s.io") {
            continue;
        }
        if p.contains("v=v2beta1") {
            best = best.or(Some("v2beta1"));
        } else if p.contains("v=v2") {
            return Some("v2");
        }
    }
    best
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn schema_name(r: &ResourceInfo) -> String {
    // Kubernetes names its schemas after the Go package; any unique dotted name works for
    // clients, which find schemas by their x-kubernetes-group-version-kind.
    let group = if r.group.is_empty() { "core" } else { &r.group };
    format!("io.devcluster.{group}.{}.{}", r.version, r.kind)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The OpenAPI v3 document of one group version.
pub fn openapi_v3_group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let snap = reg.snapshot();
    let (_, vs) = snap.iter().find(|(g, _)| g == group)?;
    let (_, resources) = vs.iter().find(|(v, _)| v == version)?;
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let write_params = || {
        vec![
            query_param(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            query_param(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
            ),
            query_param(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.",
            ),
            query_param("pretty", "If 'true', then the output is pretty printed."),
        ]
    };
    for r in resources {
        let name = schema_name(r);
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let this_gvk = gvk(&r.group, &r.version, &r.kind);
        schemas.insert(
            name.clone(),
            json!({
                "description": format!("{} ({})", r.kind, r.api_version()),
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            }),
        );
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.resource)
        } else {
            format!("{prefix}/{}", r.resource)
        };
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": ok,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": this_gvk,
            })
        };
        let mut patch_params = write_params();
        patch_params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        let mut item_ops = json!({
            "get": op("get", vec![]),
            "put": op("put", write_params()),
            "patch": op("patch", patch_params.clone()),
            "delete": op("delete", vec![query_param("dryRun", "dry run"), query_param("propagationPolicy", "propagation")]),
        });
        item_ops["patch"]["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
        }});
        paths.insert(format!("{collection}/{{name}}"), item_ops);
        paths.insert(
            collection.clone(),
            json!({"get": op("list", vec![]), "post": op("post", write_params())}),
        );
        if r.status {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": op("get", vec![]), "put": op("put", write_params()), "patch": op("patch", patch_params)}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v3`: where each group version's document lives.
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let hash = format!(
        "{:016X}",
        reg.generation().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1CE
    );
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.snapshot() {
        for (v, _) in vs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2` as JSON (permissive definitions that name their kinds).
pub fn openapi_v2(reg: &Registry) -> Value {
    let mut defs = serde_json::Map::new();
    for (_, vs) in reg.snapshot() {
        for (_, rs) in vs {
            for r in rs {
                defs.insert(
                    schema_name(&r),
                    json!({
                        "type": "object",
                        "x-kubernetes-group-version-kind": [gvk(&r.group, &r.version, &r.kind)],
                    }),
                );
            }
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": defs})
}

fn pb_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// `/openapi/v2` in the protobuf form kubectl asks for (gnostic `openapi_v2.Document`): a
/// minimal valid document (swagger version, info, empty paths). kubectl 1.27 refuses to run
/// `apply` without one; it checks field validation support through OpenAPI v3, served in full.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    pb_field(&mut info, 1, b"Kubernetes");
    pb_field(&mut info, 2, b"v1.33.0");
    let mut doc = Vec::new();
    pb_field(&mut doc, 1, b"2.0");
    pb_field(&mut doc, 2, &info);
    pb_field(&mut doc, 8, b"");
    doc
}
