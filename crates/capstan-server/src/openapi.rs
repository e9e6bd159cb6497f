//! The OpenAPI 3 document of the API, written by hand next to the route table ([`crate::routes`]);
//! a test checks that every route is documented and that nothing undocumented is served.

use serde_json::{Value, json};

fn app_params() -> Value {
    json!([
        {"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}
    ])
}

fn op(summary: &str, tag: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": [tag], "responses": responses})
}

fn app_op(summary: &str, tag: &str, body: Option<Value>, responses: Value) -> Value {
    let mut o = op(summary, tag, responses);
    o["parameters"] = app_params();
    if let Some(schema) = body {
        o["requestBody"] =
            json!({"required": false, "content": {"application/json": {"schema": schema}}});
    }
    o
}

fn json_ok(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
}

fn errors() -> Value {
    json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn action(summary: &str, body: Option<Value>) -> Value {
    app_op(
        summary,
        "actions",
        body,
        json!({"202": json_ok("requested; the controller carries it out"),
               "400": errors(), "401": errors(), "403": errors(), "404": errors(), "409": errors()}),
    )
}

fn read(summary: &str) -> Value {
    app_op(
        summary,
        "applications",
        None,
        json!({"200": json_ok("ok"), "401": errors(), "404": errors()}),
    )
}

/// The document.
pub fn document() -> Value {
    let app = "/api/v1/applications/{namespace}/{name}";
    let mut paths = serde_json::Map::new();
    let mut add = |path: String, method: &str, operation: Value| {
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = operation;
    };
    add(
        "/healthz".into(),
        "get",
        json!({"summary": "Liveness (no session needed)", "tags": ["health"], "security": [],
        "responses": {"200": {"description": "alive"}}}),
    );
    add(
        "/readyz".into(),
        "get",
        json!({"summary": "Readiness: the application cache is loaded (no session needed)", "tags": ["health"], "security": [],
        "responses": {"200": {"description": "ready"}, "503": {"description": "not ready yet"}}}),
    );
    add(
        "/api/v1/session".into(),
        "post",
        json!({
        "summary": "Log in: sets the session cookie and returns a bearer token",
        "tags": ["session"], "security": [],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string", "format": "password"}}}}}},
        "responses": {"200": {"description": "logged in (Set-Cookie capstan_session, HttpOnly, SameSite=Strict)",
                              "content": {"application/json": {"schema": {"type": "object", "properties": {
                                  "username": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "readonly"]},
                                  "token": {"type": "string"}, "expiresIn": {"type": "integer"}}}}}},
                      "401": errors(), "429": {"description": "too many failed logins; see Retry-After"}}}),
    );
    add(
        "/api/v1/session".into(),
        "get",
        op(
            "The logged-in user and role",
            "session",
            json!({"200": json_ok("the user"), "401": errors()}),
        ),
    );
    add(
        "/api/v1/session".into(),
        "delete",
        op(
            "Log out (the token is revoked)",
            "session",
            json!({"204": {"description": "logged out"}, "401": errors()}),
        ),
    );
    add(
        "/api/v1/openapi.json".into(),
        "get",
        op(
            "This document",
            "meta",
            json!({"200": json_ok("OpenAPI 3 document")}),
        ),
    );
    add(
        "/api/v1/events".into(),
        "get",
        json!({
        "summary": "Server-sent events: ready, added, updated, resources, deleted (data: JSON), resync when the client fell behind",
        "tags": ["events"],
        "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "401": errors()}}),
    );
    add(
        "/api/v1/applications".into(),
        "get",
        json!({
        "summary": "List applications (from the server's watch cache), filtered and paged",
        "tags": ["applications"],
        "parameters": [
            {"name": "project", "in": "query", "schema": {"type": "string"}, "description": "comma separated"},
            {"name": "sync", "in": "query", "schema": {"type": "string"}, "description": "Synced, OutOfSync, Unknown (comma separated)"},
            {"name": "health", "in": "query", "schema": {"type": "string"}, "description": "Healthy, Progressing, Degraded, … (comma separated)"},
            {"name": "search", "in": "query", "schema": {"type": "string"}, "description": "case-insensitive substring of namespace/name or repoURL"},
            {"name": "namespace", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": crate::MAX_PAGE, "default": crate::DEFAULT_PAGE}},
            {"name": "continue", "in": "query", "schema": {"type": "string"}, "description": "token from the previous page"}
        ],
        "responses": {"200": {"description": "a page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}},
                      "400": errors(), "401": errors()}}),
    );
    add(
        app.into(),
        "get",
        read("The Application resource (spec, operation, status)"),
    );
    add(
        format!("{app}/resource-tree"),
        "get",
        read("Objects of the application and what they own (ReplicaSets, Pods, Jobs), with health"),
    );
    let mut manifests = app_op(
        "Live and desired manifests of one object of the application (Secret values masked); desired is rendered from the current target revision, null when Git does not have the object (or cannot be rendered: desiredError says why, naming the file or field), live null when the cluster does not",
        "applications",
        None,
        json!({"200": {"description": "the two manifests", "content": {"application/json": {"schema": {
                   "type": "object", "properties": {
                       "live": {"type": "object", "nullable": true},
                       "desired": {"type": "object", "nullable": true},
                       "desiredError": {"type": "string", "description": "present when the source cannot be rendered"}}}}}},
               "401": errors(), "404": errors(),
               "503": {"description": "the server runs without the controller", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}),
    );
    if let Some(params) = manifests["parameters"].as_array_mut() {
        for (name, required) in [
            ("group", false),
            ("kind", true),
            ("name", true),
            ("namespace", false),
        ] {
            params.push(json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}}));
        }
    }
    add(format!("{app}/manifests"), "get", manifests);
    let mut diff = app_op(
        "Diff of the application: Git (at the target revision, or `revision`) against the cluster, per object, as the controller compares (ignoreDifferences, normalization); Secret values masked",
        "applications",
        None,
        json!({"200": {"description": "the commit compared and the objects: those that differ (not Synced, not hooks), or all with all=true",
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Diff"}}}},
               "401": errors(), "404": errors(),
               "422": {"description": "the revision cannot be resolved or the source cannot be rendered (the message names the file or field)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
               "503": {"description": "the server runs without the controller", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}),
    );
    if let Some(params) = diff["parameters"].as_array_mut() {
        params.push(json!({"name": "revision", "in": "query", "required": false, "schema": {"type": "string"},
                           "description": "branch, tag, commit or semver range instead of spec.source.targetRevision"}));
        params.push(json!({"name": "all", "in": "query", "required": false, "schema": {"type": "boolean", "default": false},
                           "description": "list Synced objects and hooks too"}));
    }
    add(format!("{app}/diff"), "get", diff);
    add(
        format!("{app}/history"),
        "get",
        read("Deployment history, lock and last operation"),
    );
    add(
        format!("{app}/events"),
        "get",
        read("Kubernetes Events of the application and its objects"),
    );
    add(
        format!("{app}/sync"),
        "post",
        action(
            "Request a sync",
            Some(json!({"type": "object", "properties": {
        "revision": {"type": "string"}, "prune": {"type": "boolean"}, "dryRun": {"type": "boolean"},
        "resources": {"type": "array", "description": "selective sync: only these objects are applied (and pruned); no hooks run and no history entry is written, as in Argo CD",
            "items": {"oneOf": [
                {"type": "object", "required": ["kind", "name"], "properties": {
                    "group": {"type": "string"}, "kind": {"type": "string"},
                    "namespace": {"type": "string"}, "name": {"type": "string"}}},
                {"type": "string", "description": "GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME"}]}}}})),
        ),
    );
    add(
        format!("{app}/refresh"),
        "post",
        action(
            "Request a refresh",
            Some(json!({"type": "object", "properties": {"hard": {"type": "boolean"}}})),
        ),
    );
    add(
        format!("{app}/rollback"),
        "post",
        action(
            "Roll back to a history entry (default: the previous one) and lock",
            Some(json!({"type": "object", "properties": {"id": {"type": "integer"}}})),
        ),
    );
    add(
        format!("{app}/lock"),
        "post",
        action("Lock at the current revision", None),
    );
    add(format!("{app}/unlock"), "post", action("Unlock", None));
    add(
        format!("{app}/auto-sync"),
        "put",
        action(
            "Enable or disable automated sync",
            Some(
                json!({"type": "object", "required": ["enabled"], "properties": {"enabled": {"type": "boolean"}}}),
            ),
        ),
    );
    add(
        format!("{app}/operation"),
        "delete",
        action("Terminate the requested or running operation", None),
    );
    add(
        "/api/webhook".into(),
        "post",
        json!({
        "summary": "Git push webhook (GitHub, GitLab, Gitea): refreshes the applications whose repoURL and targetRevision match the push. No session: verified by X-Hub-Signature-256, X-Gitlab-Token or X-Gitea-Signature against the Secret capstan-webhook (keys github, gitlab, gitea)",
        "tags": ["webhook"], "security": [],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "verified; the names of the refreshed applications (empty for ping and other events)",
                              "content": {"application/json": {"schema": {"type": "object", "properties": {
                                  "provider": {"type": "string", "enum": ["github", "gitlab", "gitea"]},
                                  "event": {"type": "string"}, "ref": {"type": "string"},
                                  "refreshed": {"type": "array", "items": {"type": "string"}}}}}}},
                      "400": errors(), "401": errors(), "413": {"description": "payload over 1 MiB"},
                      "502": {"description": "some refreshes could not be written (listed in `failed`)"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Capstan API", "version": "v1",
                 "description": "Every route except /healthz, /readyz, POST /api/v1/session and the HMAC-verified POST /api/webhook needs a session: a bearer token, or the session cookie plus the X-Capstan-CSRF header on POST/PUT/DELETE. Actions need the admin role."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                "Diff": {"type": "object", "properties": {
                    "revision": {"type": "string", "description": "the full commit id compared"},
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "group": {"type": "string"}, "kind": {"type": "string"},
                        "namespace": {"type": "string"}, "name": {"type": "string"},
                        "status": {"type": "string", "enum": ["Synced", "OutOfSync", "Missing", "Extraneous"]},
                        "hook": {"type": "boolean"},
                        "unified": {"type": "string", "description": "unified diff from live (-) to desired (+), Secret values masked"}}}}}},
                "Page": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object"}},
                    "continue": {"type": "string"}, "total": {"type": "integer"}}}
            }
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        let routes = crate::routes();
        for (method, path, _) in &routes {
            let m = method.as_str().to_lowercase();
            assert!(
                paths.get(*path).and_then(|p| p.get(&m)).is_some(),
                "{method} {path} missing from the OpenAPI document"
            );
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            documented,
            routes.len(),
            "the document lists routes the router does not serve"
        );
    }
}
