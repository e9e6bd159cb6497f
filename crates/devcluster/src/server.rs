//! HTTP(S) plumbing: TLS, HTTP/1.1 and HTTP/2, authentication, authorization, routing, bodies,
//! and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::State;
use crate::api::{self, Op, Reply, Selectors};
use crate::apply::PatchKind;
use crate::auth::{Attributes, UserInfo};
use crate::discovery;
use crate::registry::ResourceInfo;
use crate::status::ApiError;
use crate::store::{EventType, WatchStart};
use crate::table;

/// Request bodies above this size are refused (as Kubernetes does, at 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(
    code: u16,
    body: Bytes,
    warnings: &[String],
    content_type: &str,
) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private");
    for w in warnings {
        let text = format!("299 - {}", Value::String(w.clone()));
        b = b.header("warning", text);
    }
    // The builder only fails on invalid header values; ours are ASCII we produced.
    b.body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn ok_json(v: &Value) -> Response<Body> {
    json_response(200, Bytes::from(v.to_string()), &[], "application/json")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        e.code,
        Bytes::from(e.to_status().to_string()),
        &[],
        "application/json",
    )
}

/// Accepts connections until `shutdown` turns true; each connection is served on its own task,
/// and all of them are dropped (closed) when this future returns or is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let shutdown = shutdown.clone();
                async move { Ok::<_, Infallible>(handle(state, req, shutdown).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Decodes a percent-encoded query component (`+` is a space).
fn decode_component(s: &str) -> String {
    percent_decode(s, true)
}

/// Decodes `%XX` escapes (an invalid escape stays as written); `+` becomes a space when
/// `plus_is_space` (query components) and stays a `+` otherwise.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k), decode_component(v));
    }
    out
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The default field manager: the User-Agent's program name, as Kubernetes derives it.
fn manager_from_user_agent(ua: &str) -> String {
    let prog = ua.split('/').next().unwrap_or("").trim();
    if prog.is_empty() {
        "unknown".into()
    } else {
        prog.chars().take(128).collect()
    }
}

async fn read_body(body: Incoming, declared: Option<usize>) -> Result<Bytes, ApiError> {
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large(MAX_BODY))
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading the request body: {e}"
                )))
            }
        }
    }
}

/// Serves one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(f) = state.faults.intercept(&method, &path).await {
        tracing::debug!(%method, %path, code = f.error.code, "injected fault");
        let mut r = error_response(&f.error);
        if let Some(secs) = f.retry_after {
            r.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from(secs));
        }
        return r;
    }
    match route(state, req, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, "request refused");
            error_response(&e)
        }
    }
}

async fn route(
    state: Arc<State>,
    req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    // Health and version are public, as on a real server.
    match path.as_str() {
        "/healthz" | "/readyz" | "/livez" => {
            return Ok(Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .body(full("ok"))
                .unwrap_or_else(|_| Response::new(full("ok"))));
        }
        "/version" => {
            return Ok(ok_json(&json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-devcluster",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
                "platform": "linux/amd64",
            })));
        }
        _ => {}
    }
    let user = authenticate(&state, &req)?;
    let user = crate::impersonation::apply(&state, req.headers(), user)?;
    if path == crate::faults::ADMIN_PATH {
        let method = req.method().clone();
        let body = read_body(req.into_body(), None).await?;
        return crate::faults::admin(&state.faults, &user, &method, &body).map(|v| ok_json(&v));
    }
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode_component)
        .collect();
    let accept = header(&req, "accept").to_string();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    if req.method() == Method::GET {
        match seg.as_slice() {
            ["api"] => {
                if let Some(v) = discovery::wants_aggregated(&accept) {
                    return Ok(aggregated_response(&state, true, v));
                }
                return Ok(ok_json(&discovery::api_versions(&state.server_address)));
            }
            ["apis"] => {
                if let Some(v) = discovery::wants_aggregated(&accept) {
                    return Ok(aggregated_response(&state, false, v));
                }
                return Ok(ok_json(&discovery::api_group_list(&state.registry)));
            }
            ["api", v] => {
                return discovery::api_resource_list(&state.registry, "", v)
                    .map(|d| ok_json(&d))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["apis", g] => {
                return discovery::api_group(&state.registry, g)
                    .map(|d| ok_json(&d))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["apis", g, v] => {
                return discovery::api_resource_list(&state.registry, g, v)
                    .map(|d| ok_json(&d))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["openapi", "v2"] => {
                if accept.contains("protobuf") {
                    return Ok(Response::builder()
                        .header(
                            "content-type",
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        )
                        .body(full(discovery::openapi_v2_protobuf()))
                        .unwrap_or_else(|_| Response::new(full(Bytes::new()))));
                }
                return Ok(ok_json(&discovery::openapi_v2(&state.registry)));
            }
            ["openapi", "v3"] => return Ok(ok_json(&discovery::openapi_v3_root(&state.registry))),
            ["openapi", "v3", "api", v] => {
                return discovery::openapi_v3_group_version(&state.registry, "", v)
                    .map(|d| ok_json(&d))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["openapi", "v3", "apis", g, v] => {
                return discovery::openapi_v3_group_version(&state.registry, g, v)
                    .map(|d| ok_json(&d))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            _ => {}
        }
    }
    let (group, version, rest): (&str, &str, &[&str]) = match seg.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => return Err(ApiError::no_route(&path)),
    };
    // Virtual resources that are not stored: access reviews and service-account tokens.
    let token_name = match rest {
        ["namespaces", ns, "serviceaccounts", name, "token"] if group.is_empty() => {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    };
    let review =
        group == "authorization.k8s.io" && version == "v1" && rest == ["selfsubjectaccessreviews"];
    if review || token_name.is_some() {
        if req.method() != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let query = parse_query(req.uri().query());
        let content_type = header(&req, "content-type").to_string();
        let body = read_body(req.into_body(), None).await?;
        let reply = match token_name {
            Some((ns, name)) => {
                crate::rbac::token_request(&state, &user, &ns, &name, &query, &content_type, &body)?
            }
            None => crate::rbac::self_subject_access_review(&state, &user, &content_type, &body)?,
        };
        return Ok(json_response(
            reply.code,
            reply.body,
            &[],
            "application/json",
        ));
    }
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, r, ..] if *r != "status" && *r != "finalize" => (Some(*ns), &rest[2..]),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route(&path)),
    };
    let info = state
        .registry
        .get(group, version, resource)
        .ok_or_else(|| ApiError::no_route(&path))?;
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::no_route(&path));
    }
    if let Some(s) = sub {
        let ok = (s == "status" && info.status) || (s == "scale" && info.scale.is_some());
        if !ok {
            return Err(ApiError::no_route(&path));
        }
    }
    let query = parse_query(req.uri().query());
    let is_watch = watch_path || query.get("watch").is_some_and(|w| w == "1" || w == "true");
    let verb = match (req.method().clone(), name.is_some(), is_watch) {
        (Method::GET, _, true) => "watch",
        (Method::GET, true, false) => "get",
        (Method::GET, false, false) => "list",
        (Method::POST, false, _) => "create",
        (Method::PUT, true, _) => "update",
        (Method::PATCH, true, _) => "patch",
        (Method::DELETE, true, _) => "delete",
        (Method::DELETE, false, _) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    if info.namespaced && namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::no_route(&path));
    }
    if !info.verbs.iter().any(|v| v == verb) {
        return Err(ApiError::method_not_allowed());
    }
    let attrs = Attributes {
        user: &user,
        verb,
        group: &info.group,
        resource: &info.resource,
        subresource: sub.unwrap_or(""),
        namespace: namespace.unwrap_or(""),
        name: name.unwrap_or(""),
    };
    if let Err(why) = state.authorizer.authorize(&attrs) {
        return Err(crate::rbac::forbidden(&attrs, &why));
    }
    let explicit_manager = query.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    let op = Op {
        info: info.clone(),
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: sub.map(String::from),
        manager: explicit_manager
            .clone()
            .unwrap_or_else(|| manager_from_user_agent(header(&req, "user-agent"))),
        manager_explicit: explicit_manager.is_some(),
        query,
    };
    if let Some(m) = &explicit_manager
        && m.chars().count() > 128
    {
        return Err(ApiError::bad_request(
            "fieldManager: Too long: may not be more than 128 bytes",
        ));
    }
    let as_table = table::wants_table(&accept);
    let content_type = header(&req, "content-type").to_string();
    let declared_len = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let state2 = state.clone();
    match verb {
        "watch" => watch_response(state, op, as_table, shutdown),
        "get" => {
            let body = api::get(&state, &op)?;
            if as_table && op.subresource.is_none() {
                let v: Value =
                    serde_json::from_slice(&body).map_err(|e| ApiError::internal(e.to_string()))?;
                let full = op.query.get("includeObject").is_some_and(|s| s == "Object");
                return Ok(ok_json(&table::table(&info, &[v], None, None, full)));
            }
            Ok(json_response(200, body, &[], "application/json"))
        }
        "list" => {
            let listed = api::list(&state, &op)?;
            if as_table {
                let objs: Vec<Value> = listed
                    .items
                    .iter()
                    .filter_map(|s| {
                        serde_json::from_slice(&api::served_version(&info, s.bytes.clone())).ok()
                    })
                    .collect();
                let full = op.query.get("includeObject").is_some_and(|s| s == "Object");
                return Ok(ok_json(&table::table(
                    &info,
                    &objs,
                    Some(listed.rv),
                    listed.cont.as_deref(),
                    full,
                )));
            }
            Ok(json_response(
                200,
                api::list_body(&info, &listed),
                &[],
                "application/json",
            ))
        }
        _ => {
            let body = read_body(req.into_body(), declared_len).await?;
            let reply = write_verb(&state2, &op, verb, &content_type, &body)?;
            Ok(json_response(
                reply.code,
                reply.body,
                &reply.warnings,
                "application/json",
            ))
        }
    }
}

fn write_verb(
    state: &State,
    op: &Op,
    verb: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match verb {
        "create" | "update" => {
            let obj = match essence.as_str() {
                "application/json" | "application/yaml" | "" => api::decode_body(body, &essence)?,
                crate::protobuf::CONTENT_TYPE => crate::protobuf::decode(body)?,
                _ => return Err(ApiError::unsupported_media_type(&essence)),
            };
            if verb == "create" {
                api::create(state, op, obj)
            } else {
                api::update(state, op, obj)
            }
        }
        "patch" => {
            let kind = PatchKind::from_content_type(&essence)
                .ok_or_else(|| ApiError::unsupported_media_type(&essence))?;
            let patch = api::decode_body(
                body,
                if kind == PatchKind::Apply {
                    "application/yaml"
                } else {
                    "application/json"
                },
            )?;
            api::patch(state, op, kind, patch)
        }
        "delete" | "deletecollection" => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(api::decode_body(body, "application/json")?)
            };
            if let Some(o) = &options
                && !o.is_object()
            {
                return Err(ApiError::bad_request("DeleteOptions must be an object"));
            }
            if verb == "delete" {
                api::delete(state, op, options.as_ref())
            } else {
                api::delete_collection(state, op, options.as_ref())
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn aggregated_response(state: &State, core: bool, version: &str) -> Response<Body> {
    let doc = discovery::aggregated(&state.registry, core, version);
    json_response(
        200,
        Bytes::from(doc.to_string()),
        &[],
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
    )
}

fn authenticate(state: &State, req: &Request<Incoming>) -> Result<UserInfo, ApiError> {
    let auth = header(req, "authorization");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::unauthorized());
    }
    state
        .authenticator
        .authenticate(token)
        .or_else(|| crate::rbac::authenticate(state, token))
        .ok_or_else(ApiError::unauthorized)
}

fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta});
    event_line("BOOKMARK", obj.to_string().as_bytes())
}

fn expired_line(message: String) -> Bytes {
    event_line(
        "ERROR",
        ApiError::expired(message)
            .to_status()
            .to_string()
            .as_bytes(),
    )
}

fn watch_response(
    state: Arc<State>,
    op: Op,
    as_table: bool,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Response<Body>, ApiError> {
    let sel = Selectors::from_query(&op)?;
    let info = op.info.clone();
    let q = |k: &str| op.query.get(k).map(String::as_str).unwrap_or("");
    let send_initial = q("sendInitialEvents") == "true";
    let bookmarks = q("allowWatchBookmarks") == "true";
    let rv_param = q("resourceVersion");
    let (start, min_rv) = if send_initial || rv_param.is_empty() || rv_param == "0" {
        (WatchStart::Current, 0)
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}")))?;
        (WatchStart::After(rv), rv)
    };
    let timeout = match q("timeoutSeconds") {
        "" => Duration::from_secs(1800),
        t => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let timeout = state.faults.watch_timeout(timeout);
    let skey = info.storage_key();
    let ns = op.namespace.clone();
    let pinned = op.name.clone();
    let full_rows = q("includeObject") == "Object";
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let started = state.store.watch(&skey, start);
    let render = {
        let info = info.clone();
        move |kind: EventType, bytes: &Bytes| -> Bytes {
            let bytes = &api::served_version(&info, bytes.clone());
            if as_table {
                match serde_json::from_slice::<Value>(bytes) {
                    Ok(v) => event_line(
                        kind.as_str(),
                        table::table(&info, &[v], None, None, full_rows)
                            .to_string()
                            .as_bytes(),
                    ),
                    Err(_) => event_line(kind.as_str(), bytes),
                }
            } else {
                event_line(kind.as_str(), bytes)
            }
        }
    };
    let matches = move |ens: &str, ename: &str, bytes: &[u8]| {
        ns.as_deref().is_none_or(|n| n == ens)
            && pinned.as_deref().is_none_or(|n| n == ename)
            && sel.matches(ens, ename, bytes)
    };
    // What this watcher sees of a change: a modification that moves an object into or out of
    // the selection is an ADDED or a DELETED for it.
    let decide = move |e: &crate::store::Event| -> Option<EventType> {
        let now = matches(&e.namespace, &e.name, &e.bytes);
        match (e.kind, &e.prev) {
            (EventType::Modified, Some(prev)) => {
                match (matches(&e.namespace, &e.name, prev), now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            (kind, _) => now.then_some(kind),
        }
    };
    tokio::spawn(async move {
        let (initial, mut events, subscribed_rv) = match started {
            Ok(s) => s,
            Err(floor) => {
                let _ = tx
                    .send(expired_line(format!(
                        "too old resource version: {min_rv} ({floor})"
                    )))
                    .await;
                return;
            }
        };
        // Every change up to `seen_rv` has reached this watcher: a safe bookmark position.
        let mut seen_rv = min_rv.max(subscribed_rv);
        let mut last_rv = min_rv;
        for e in initial {
            let Some(kind) = decide(&e) else { continue };
            last_rv = last_rv.max(e.rv);
            if tx.send(render(kind, &e.bytes)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(&info, seen_rv, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            let line = tokio::select! {
                ev = events.recv() => match ev {
                    Ok(e) => {
                        seen_rv = seen_rv.max(e.rv);
                        if &*e.key != skey.as_str() || e.rv <= min_rv {
                            continue;
                        }
                        let Some(kind) = decide(&e) else { continue };
                        last_rv = last_rv.max(e.rv);
                        render(kind, &e.bytes)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(expired_line(format!(
                            "too old resource version: {last_rv} (the watcher fell behind)"
                        ))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => bookmark(&info, seen_rv, false),
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = tx.send(bookmark(&info, seen_rv.max(last_rv), false)).await;
                    }
                    return;
                }
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .map_err(|e| ApiError::internal(e.to_string()))
}
