//! Capstan's HTTP API server (axum): applications, their resource trees, manifests, history and
//! events, the actions a person takes on them (sync, refresh, rollback, lock/unlock, auto-sync,
//! terminate), a server-sent-events stream of changes, local users with sessions, and
//! Prometheus metrics on a separate listener.
//!
//! Like Argo CD's API server it keeps no state of its own beyond sessions: it reads
//! Applications from an in-memory cache fed by a watch ([`cache`]), reads live objects from the
//! cluster, and performs actions by writing to the Application resource ([`actions`]), exactly
//! as the CLI does; the controller carries them out.
//!
//! Start it with [`serve`]; every route is listed in [`routes`] and documented in
//! [`openapi::document`].

pub mod actions;
pub mod auth;
pub mod cache;
pub mod error;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod ui;
pub mod webhook;

use crate::auth::{Auth, CSRF_HEADER, RateLimit, Role, SESSION_COOKIE, User};
use crate::cache::{AppCache, Filter};
use crate::error::{ApiError, ServerError};
use crate::live::Discovery;
pub use crate::metrics::Metrics;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use capstan_api::application::Application;
use futures::{Stream, StreamExt};
use kube::api::Api;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the API (default 127.0.0.1:8080; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Address of the metrics endpoint (no authentication); `None` serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Namespace of the users Secret (the controller's namespace).
    pub namespace: String,
    /// Namespace whose Applications are served; `None`: all namespaces.
    pub applications_namespace: Option<String>,
    /// Plain-HTTP development mode: the session cookie is sent without `Secure` (browsers drop
    /// Secure cookies over http except on localhost). Never on a network-facing server.
    pub insecure_cookies: bool,
    /// Session lifetime.
    pub session_ttl: Duration,
    /// Login rate limit.
    pub rate_limit: RateLimit,
    /// Metrics handle (clone it to the controller before calling [`serve`]).
    pub metrics: Metrics,
    /// Name of the Secret in `namespace` holding the Git webhook secrets (keys `github`,
    /// `gitlab`, `gitea`); see [`webhook`].
    pub webhook_secret: String,
    /// The controller's rendering and live state, for the diff and the desired manifests;
    /// `None`: those routes answer 503.
    pub controller: Option<capstan_controller::manifests::Handle>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            namespace: capstan_api::application::DEFAULT_NAMESPACE.to_string(),
            applications_namespace: Some(capstan_api::application::DEFAULT_NAMESPACE.to_string()),
            insecure_cookies: false,
            session_ttl: Duration::from_secs(12 * 3600),
            rate_limit: RateLimit::default(),
            metrics: Metrics::new(),
            webhook_secret: webhook::DEFAULT_SECRET_NAME.to_string(),
            controller: None,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, login).
    Public,
    /// Any logged-in user (reads, session).
    Read,
    /// Logged-in admins only (actions).
    Action,
}

/// One route of the API.
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path (axum / OpenAPI template syntax).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: fn() -> MethodRouter<AppState>,
}

const APP: &str = "/api/v1/applications/{namespace}/{name}";

/// The route table: the router, the access check and the OpenAPI test are all driven by it.
static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::GET,
        path: "/healthz",
        access: Access::Public,
        handler: || get(healthz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/readyz",
        access: Access::Public,
        handler: || get(readyz),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/session",
        access: Access::Public,
        handler: || post(login),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/session",
        access: Access::Read,
        handler: || get(whoami),
    },
    RouteSpec {
        method: Method::DELETE,
        path: "/api/v1/session",
        access: Access::Read,
        handler: || delete(logout),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        access: Access::Read,
        handler: || get(openapi_json),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/events",
        access: Access::Read,
        handler: || get(event_stream),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications",
        access: Access::Read,
        handler: || get(list_apps),
    },
    RouteSpec {
        method: Method::GET,
        path: APP,
        access: Access::Read,
        handler: || get(get_app),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications/{namespace}/{name}/resource-tree",
        access: Access::Read,
        handler: || get(resource_tree),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications/{namespace}/{name}/manifests",
        access: Access::Read,
        handler: || get(manifests),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications/{namespace}/{name}/diff",
        access: Access::Read,
        handler: || get(app_diff),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications/{namespace}/{name}/history",
        access: Access::Read,
        handler: || get(history),
    },
    RouteSpec {
        method: Method::GET,
        path: "/api/v1/applications/{namespace}/{name}/events",
        access: Access::Read,
        handler: || get(app_events),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/applications/{namespace}/{name}/sync",
        access: Access::Action,
        handler: || post(sync),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/applications/{namespace}/{name}/refresh",
        access: Access::Action,
        handler: || post(refresh),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/applications/{namespace}/{name}/rollback",
        access: Access::Action,
        handler: || post(rollback),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/applications/{namespace}/{name}/lock",
        access: Access::Action,
        handler: || post(lock),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/v1/applications/{namespace}/{name}/unlock",
        access: Access::Action,
        handler: || post(unlock),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/api/v1/applications/{namespace}/{name}/auto-sync",
        access: Access::Action,
        handler: || put(auto_sync),
    },
    RouteSpec {
        method: Method::DELETE,
        path: "/api/v1/applications/{namespace}/{name}/operation",
        access: Access::Action,
        handler: || delete(terminate),
    },
    RouteSpec {
        method: Method::POST,
        path: "/api/webhook",
        // No session: every delivery is verified by its provider's HMAC or token instead.
        access: Access::Public,
        handler: || {
            post(webhook::receive).layer(axum::extract::DefaultBodyLimit::max(webhook::BODY_LIMIT))
        },
    },
];

/// Every route of the API: method, path and access.
pub fn routes() -> Vec<(Method, &'static str, Access)> {
    ROUTES
        .iter()
        .map(|r| (r.method.clone(), r.path, r.access))
        .collect()
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    client: kube::Client,
    cache: AppCache,
    auth: Arc<Auth>,
    config: Arc<Config>,
    discovery: Arc<Discovery>,
    shutdown: watch::Receiver<bool>,
}

/// The API router over `state` (without the metrics endpoint, which has its own listener).
fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .merge(ui::routes())
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// A started server. The initial admin password is here once, for the caller to show.
pub struct Server {
    /// The API's address.
    pub addr: SocketAddr,
    /// The metrics endpoint's address.
    pub metrics_addr: Option<SocketAddr>,
    /// The generated password of `admin`, when this start created the users Secret.
    pub initial_admin_password: Option<String>,
    /// The application cache (for tests and benchmarks: it is the watch's feed).
    pub cache: AppCache,
    /// The metrics served on the metrics listener (give a clone to the controller's
    /// `Config::recorder` so that its syncs and durations appear).
    pub metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("metrics_addr", &self.metrics_addr)
            .field(
                "initial_admin_password",
                &self.initial_admin_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Server {
    /// Waits until the server has stopped (after the shutdown future completed and open
    /// requests finished; event streams end at shutdown).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the HTTP server task failed");
        }
    }
}

/// Binds the listeners, creates the users Secret with a generated admin password if it does not
/// exist, starts the Application watch and serves until `shutdown` completes.
///
/// Wiring into `capstan server`: `let s = serve(config, client, signal).await?;` print
/// `s.initial_admin_password` once if `Some`, then `s.wait().await` beside the controller.
pub async fn serve(
    config: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, ServerError> {
    serve_with(config, client, shutdown, true).await
}

/// [`serve`] without the Application watch: the cache is fed only through [`Server::cache`].
/// For benchmarks and tests that seed tens of thousands of applications directly.
pub async fn serve_unwatched(
    config: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, ServerError> {
    serve_with(config, client, shutdown, false).await
}

async fn serve_with(
    config: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    watch_apps: bool,
) -> Result<Server, ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "the API",
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        what: "the API",
        addr: config.listen,
        source,
    })?;
    let metrics_listener = match config.metrics_listen {
        Some(m) => Some(
            TcpListener::bind(m)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "metrics",
                    addr: m,
                    source,
                })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let initial_admin_password = auth::bootstrap(&client, &config.namespace).await?;
    let auth = Auth::new(
        client.clone(),
        &config.namespace,
        config.session_ttl,
        config.rate_limit,
    )?;
    let cache = AppCache::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let watch_task = if watch_apps {
        let api: Api<Application> = match &config.applications_namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Some(tokio::spawn(cache::run_watch(api, cache.clone())))
    } else {
        None
    };
    let state = AppState {
        client,
        cache: cache.clone(),
        auth: Arc::new(auth),
        config: Arc::new(config.clone()),
        discovery: Arc::new(Discovery::default()),
        shutdown: stop_rx.clone(),
    };
    let app = router(state);
    let metrics_app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state((config.metrics.clone(), cache.clone()));
    let task = tokio::spawn(async move {
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let api = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let metrics = async {
            if let Some(l) = metrics_listener {
                axum::serve(l, metrics_app)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .await
            } else {
                Ok(())
            }
        };
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (api, metrics, ()) = tokio::join!(api, metrics, signal);
        if let Err(e) = api {
            tracing::error!(error = %e, "the API server failed");
        }
        if let Err(e) = metrics {
            tracing::error!(error = %e, "the metrics server failed");
        }
        if let Some(t) = watch_task {
            t.abort();
        }
    });
    Ok(Server {
        addr,
        metrics_addr,
        initial_admin_password,
        cache,
        metrics: config.metrics.clone(),
        task,
    })
}

async fn metrics_text(State((metrics, cache)): State<(Metrics, AppCache)>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(&cache.counts()),
    )
        .into_response()
}

/// The session token of a request and whether it came from the cookie.
fn token_of(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some((t.trim().to_string(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| (v.to_string(), true))
        })
}

/// Authentication, CSRF and authorization of every matched route, by the route table.
async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    // A route missing from the table is treated as an action: deny by default.
    let access = ROUTES
        .iter()
        .find(|r| r.path == path && r.method == method)
        .map_or(Access::Action, |r| r.access);
    if access == Access::Public {
        return next.run(req).await;
    }
    let Some((token, from_cookie)) = token_of(req.headers()) else {
        return unauthorized("log in first (POST /api/v1/session)");
    };
    let Some(user) = state.auth.authenticate(&token) else {
        return unauthorized("the session is unknown or expired; log in again");
    };
    let safe = matches!(method, Method::GET | Method::OPTIONS);
    if from_cookie && !safe && !req.headers().contains_key(CSRF_HEADER) {
        return ApiError::forbidden(format!(
            "a cookie-authenticated {method} needs the {CSRF_HEADER} header"
        ))
        .into_response();
    }
    if access == Access::Action && user.role != Role::Admin {
        return ApiError::forbidden(format!(
            "user {} is read-only and may not {method} {path}",
            user.username
        ))
        .into_response();
    }
    req.extensions_mut().insert(user);
    req.extensions_mut().insert(SessionToken(token));
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::unauthorized(message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Headers every response carries: no sniffing, no framing, no caching of API data.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

#[derive(Clone)]
struct SessionToken(String);

/// Parses an optional JSON body: empty means the default.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.cache.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "application cache not loaded yet",
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: LoginRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body: {e} (expected {{\"username\", \"password\"}})"
        ))
    })?;
    let (token, user) = state
        .auth
        .login(&req.username, &req.password, peer.ip())
        .await?;
    let ttl = state.auth.ttl().as_secs();
    let secure = if state.config.insecure_cookies {
        ""
    } else {
        "; Secure"
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={ttl}{secure}"
    );
    let mut r = Json(json!({
        "username": user.username,
        "role": user.role,
        "token": token,
        "expiresIn": ttl,
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn whoami(Extension(user): Extension<User>) -> Json<User> {
    Json(user)
}

async fn logout(
    State(state): State<AppState>,
    Extension(token): Extension<SessionToken>,
) -> Response {
    state.auth.logout(&token.0);
    let mut r = StatusCode::NO_CONTENT.into_response();
    let secure = if state.config.insecure_cookies {
        ""
    } else {
        "; Secure"
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn openapi_json() -> Json<Value> {
    Json(openapi::document())
}

/// The stream of changes: `ready` once subscribed, then `added`, `updated`, `resources` and
/// `deleted` events (JSON), and `resync` when this client fell behind and must reload.
async fn event_stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.cache.subscribe();
    let ready = futures::stream::once(async { Ok(SseEvent::default().event("ready").data("{}")) });
    let changes = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(change) => {
                let data = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
                SseEvent::default().event(change.event_name()).data(data)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("resync")
                .data(json!({"missed": n}).to_string()),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    let mut stop = state.shutdown.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Sse::new(ready.chain(changes).take_until(stopped)).keep_alive(KeepAlive::default())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    project: Option<String>,
    sync: Option<String>,
    health: Option<String>,
    search: Option<String>,
    namespace: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// Most applications one page returns.
pub const MAX_PAGE: usize = 1000;
/// Applications per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

fn split(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

async fn list_apps(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match q.continue_token.as_deref() {
        Some(t) => Some(
            cache::decode_token(t)
                .ok_or_else(|| ApiError::bad_request(format!("continue: invalid token {t:?}")))?,
        ),
        None => None,
    };
    let filter = Filter {
        projects: split(&q.project),
        sync: split(&q.sync),
        health: split(&q.health),
        search: q.search.filter(|s| !s.is_empty()),
        namespace: q.namespace.filter(|s| !s.is_empty()),
    };
    let page = state.cache.list(&filter, limit, after.as_ref());
    Ok(Json(page).into_response())
}

fn cached(state: &AppState, ns: &str, name: &str) -> Result<Arc<Application>, ApiError> {
    state
        .cache
        .get(ns, name)
        .ok_or_else(|| ApiError::not_found(format!("application {ns}/{name} not found")))
}

async fn get_app(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Application>, ApiError> {
    Ok(Json(cached(&state, &ns, &name)?.as_ref().clone()))
}

async fn resource_tree(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = cached(&state, &ns, &name)?;
    let nodes = live::tree(&state.client, &state.discovery, &app).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

/// The controller handle, or 503 when this server runs without one.
fn controller(state: &AppState) -> Result<&capstan_controller::manifests::Handle, ApiError> {
    state.config.controller.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs without the controller, which renders the desired manifests: \
             the diff and desired manifests are served by `capstan server` and `capstan up`",
        )
    })
}

/// A failed comparison as an HTTP error: what the application's source or spec holds is the
/// client's to fix (422), a cluster failure keeps the cluster's code.
fn comparison_error(e: capstan_controller::ControllerError) -> ApiError {
    use capstan_controller::ControllerError as E;
    match e {
        E::NotFound(m) => ApiError::not_found(m),
        E::Refused(m) => ApiError::conflict(m),
        E::Kube { what, source } => ApiError::kube(&what, source),
        E::Watch { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        E::InvalidSpec(_) | E::UnknownKind { .. } | E::Other(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
    }
}

async fn manifests(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<live::ObjectQuery>,
) -> Result<Json<Value>, ApiError> {
    let app = cached(&state, &ns, &name)?;
    let handle = controller(&state)?;
    let id = capstan_controller::manifests::ObjectId {
        group: q.group.clone(),
        kind: q.kind.clone(),
        namespace: q.namespace.clone(),
        name: q.name.clone(),
    };
    // A source that cannot be rendered does not hide the live object: the answer says why the
    // desired side is missing instead.
    let (desired, desired_error) = match handle.desired_object(&app, None, &id).await {
        Ok(desired) => (desired, None),
        Err(e) => {
            let e = comparison_error(e);
            if e.status != StatusCode::UNPROCESSABLE_ENTITY {
                return Err(e);
            }
            (None, Some(e.message))
        }
    };
    // The live side comes from the resource tree, which also holds the objects the
    // application's objects own (ReplicaSets, Pods); an object only Git has yet is not in the
    // tree and has no live manifest. When Git cannot be rendered, whether Git has the object is
    // unknown: the answer says why rather than that the object does not exist.
    let live = match live::manifest(&state.client, &state.discovery, &app, &q).await {
        Ok(live) => live,
        Err(e)
            if e.status == StatusCode::NOT_FOUND
                && (desired.is_some() || desired_error.is_some()) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let mut answer = json!({ "live": live, "desired": desired });
    if let Some(message) = desired_error {
        answer["desiredError"] = Value::String(message);
    }
    Ok(Json(answer))
}

#[derive(Deserialize, Default)]
struct DiffQuery {
    revision: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn app_diff(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let app = cached(&state, &ns, &name)?;
    let handle = controller(&state)?;
    let revision = q.revision.as_deref().filter(|r| !r.is_empty());
    let diff = handle
        .diff(&app, revision)
        .await
        .map_err(comparison_error)?;
    let items: Vec<_> = diff.items.iter().filter(|i| q.all || i.differs()).collect();
    Ok(Json(json!({ "revision": diff.revision, "items": items })))
}

async fn history(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = cached(&state, &ns, &name)?;
    let status = app.status_or_default();
    Ok(Json(json!({
        "history": status.history,
        "lock": status.lock,
        "operationState": status.operation_state,
    })))
}

async fn app_events(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let app = cached(&state, &ns, &name)?;
    let events = live::events(&state.client, &state.discovery, &app).await?;
    Ok(Json(json!({ "events": events })))
}

fn apps_api(state: &AppState, ns: &str) -> Api<Application> {
    Api::namespaced(state.client.clone(), ns)
}

/// Audits a done action and answers with its message.
async fn done(
    state: &AppState,
    ns: &str,
    name: &str,
    reason: &str,
    message: String,
    extra: Value,
) -> Response {
    tracing::info!(application = %format!("{ns}/{name}"), reason, "{message}");
    match apps_api(state, ns).get_opt(name).await {
        Ok(Some(app)) => actions::audit(&state.client, &app, reason, &message).await,
        Ok(None) => tracing::warn!("application {ns}/{name} vanished before its audit event"),
        Err(e) => tracing::error!(error = %e, "reading {ns}/{name} for its audit event"),
    }
    let mut out = json!({"message": message});
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), extra) {
        o.extend(extra);
    }
    (StatusCode::ACCEPTED, Json(out)).into_response()
}

async fn sync(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: actions::SyncRequest = body(&bytes)?;
    let message = actions::sync(&apps_api(&state, &ns), &name, req, &user).await?;
    Ok(done(&state, &ns, &name, "SyncRequested", message, json!({})).await)
}

async fn refresh(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: actions::RefreshRequest = body(&bytes)?;
    let message = actions::refresh(&apps_api(&state, &ns), &name, req.hard, &user).await?;
    Ok(done(&state, &ns, &name, "RefreshRequested", message, json!({})).await)
}

async fn rollback(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: actions::RollbackRequest = body(&bytes)?;
    let (id, message) = actions::rollback(&apps_api(&state, &ns), &name, req, &user).await?;
    Ok(done(
        &state,
        &ns,
        &name,
        "RollbackRequested",
        message,
        json!({"id": id}),
    )
    .await)
}

async fn lock(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let message = actions::lock(&apps_api(&state, &ns), &ns, &name, &user).await?;
    Ok(done(&state, &ns, &name, "Locked", message, json!({})).await)
}

async fn unlock(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match actions::unlock(&apps_api(&state, &ns), &name, &user).await? {
        Some(message) => Ok(done(&state, &ns, &name, "Unlocked", message, json!({})).await),
        None => Ok(
            Json(json!({"message": format!("application {ns}/{name} was not locked")}))
                .into_response(),
        ),
    }
}

async fn auto_sync(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: actions::AutoSyncRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body: {e} (expected {{\"enabled\": true|false}})"
        ))
    })?;
    let message =
        actions::set_auto_sync(&apps_api(&state, &ns), &ns, &name, req.enabled, &user).await?;
    let reason = if req.enabled {
        "AutoSyncEnabled"
    } else {
        "AutoSyncDisabled"
    };
    Ok(done(&state, &ns, &name, reason, message, json!({})).await)
}

async fn terminate(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let message = actions::terminate(&apps_api(&state, &ns), &ns, &name, &user).await?;
    Ok(done(
        &state,
        &ns,
        &name,
        "OperationTerminated",
        message,
        json!({}),
    )
    .await)
}
