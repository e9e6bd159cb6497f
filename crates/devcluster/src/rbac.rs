//! Role-based access control over the stored `rbac.authorization.k8s.io/v1` objects, and the
//! identities it is about: service-account tokens (TokenRequest and legacy token Secrets).
//!
//! # Evaluation
//!
//! [`Rbac`] keeps an index built from the store: roles and cluster roles by name, bindings by
//! key, and binding keys by subject (a ServiceAccount subject is indexed as its user name
//! `system:serviceaccount:NS:NAME`). A request looks up only the bindings of its user and of its
//! groups, so its cost does not grow with the number of roles in the cluster.
//!
//! The index follows the store's change feed. Before answering, the authorizer drains the
//! events that are already in the feed: the store publishes an event before it acknowledges the
//! write, so a binding created (or deleted) by a request that has been answered is always seen
//! by every request that starts afterwards — no window of stale grants, no spurious 403 right
//! after a `kubectl create rolebinding`. If the feed overflowed (more unread changes than it
//! holds) the index is rebuilt from the store.
//!
//! # Rules, as Kubernetes evaluates them
//!
//! - The `system:masters` group is always allowed (the admin user of the kubeconfig is in it).
//! - A rule matches when its verbs, apiGroups and resources match (`*` matches anything;
//!   `pods/log` names a subresource and `*/scale` any resource's subresource) and, when it has
//!   resourceNames, the request names one of them (so a list never matches such a rule).
//! - A RoleBinding grants its role (a Role of its namespace or a ClusterRole) in its namespace
//!   only; a ClusterRoleBinding grants a ClusterRole everywhere.
//! - Subjects: `User`, `Group`, `ServiceAccount` (its namespace defaults to the binding's).
//! - Discovery, OpenAPI, `/version` and health are served to every authenticated user without
//!   asking the authorizer — what the default `system:discovery` and
//!   `system:public-info-viewer` bindings to `system:authenticated` grant on a real cluster.
//!   `nonResourceURLs` rules are evaluated for SelfSubjectAccessReviews.
//! - With RBAC on, the default roles exist as on a real cluster (`cluster-admin` for
//!   `system:masters`, `admin`/`edit`/`view` aggregated from labelled ClusterRoles, the
//!   discovery and basic-user roles for `system:authenticated`); see [`bootstrap`].

mod bootstrap;
mod proto;
mod review;
mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::State;
use crate::auth::{Attributes, Authorizer, UserInfo};
use crate::status::ApiError;
use crate::store::{Event, EventType};

pub use bootstrap::{aggregate, bootstrap, spawn_aggregation};
pub use review::self_subject_access_review;
pub use tokens::{SigningKey, spawn_token_controller, token_request};

/// Storage keys of the objects the index follows.
const ROLES: &str = "rbac.authorization.k8s.io/roles";
const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";
const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";
const SECRETS: &str = "/secrets";

/// The group whose members are always allowed.
pub const MASTERS: &str = "system:masters";

/// Groups every authenticated user belongs to.
pub const AUTHENTICATED: &str = "system:authenticated";

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources` (`pods`, `pods/log`, `*`, `*/scale`).
    pub resources: Vec<String>,
    /// `resourceNames` (empty = any).
    pub resource_names: Vec<String>,
    /// `nonResourceURLs` (`/healthz`, `/apis/*`).
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// Whether the rule allows a resource request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        has(&self.verbs, a.verb)
            && has(&self.api_groups, a.group)
            && self.matches_resource(a.resource, a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == a.name))
    }

    fn matches_resource(&self, resource: &str, sub: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if sub.is_empty() {
                return r == resource;
            }
            // "pods/log" exactly, or "*/log" for any resource's subresource.
            match r.split_once('/') {
                Some((res, s)) => s == sub && (res == resource || res == "*"),
                None => false,
            }
        })
    }

    /// Whether the rule allows a non-resource request (`get /healthz`).
    pub fn allows_path(&self, verb: &str, path: &str) -> bool {
        has(&self.verbs, verb)
            && self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || u == path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
    }
}

/// Who a binding names, normalized: a ServiceAccount subject is its user name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    User(String),
    Group(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoleKind {
    Role,
    ClusterRole,
}

#[derive(Debug)]
struct Binding {
    role_kind: RoleKind,
    role_name: String,
    subjects: Vec<Subject>,
}

/// (namespace, name); the namespace is "" for cluster-scoped objects.
type Key = (String, String);

/// What a legacy token Secret says about its token.
#[derive(Clone, Debug)]
pub(crate) struct SecretToken {
    pub namespace: String,
    pub service_account: String,
    /// `kubernetes.io/service-account.uid`, when set.
    pub uid: Option<String>,
}

#[derive(Default)]
struct Index {
    roles: HashMap<Key, Arc<[Rule]>>,
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    bindings: HashMap<Key, Binding>,
    /// Bindings of RoleBindings have their namespace in the key; ClusterRoleBindings "".
    by_subject: HashMap<Subject, HashSet<Key>>,
    /// Legacy Secret tokens: token → owner, and secret → token (to forget a changed one).
    secret_tokens: HashMap<String, SecretToken>,
    token_of_secret: HashMap<Key, String>,
}

fn key_of(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn rules_of(obj: &Value) -> Arc<[Rule]> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_json).collect::<Vec<_>>())
        .unwrap_or_default()
        .into()
}

fn binding_of(obj: &Value, binding_ns: &str) -> Option<Binding> {
    let role_ref = obj.get("roleRef")?;
    let role_kind = match role_ref.get("kind").and_then(Value::as_str)? {
        "Role" => RoleKind::Role,
        "ClusterRole" => RoleKind::ClusterRole,
        _ => return None,
    };
    let role_name = role_ref.get("name").and_then(Value::as_str)?.to_string();
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subs| {
            subs.iter()
                .filter_map(|s| {
                    let name = s.get("name").and_then(Value::as_str)?;
                    match s.get("kind").and_then(Value::as_str)? {
                        "User" => Some(Subject::User(name.to_string())),
                        "Group" => Some(Subject::Group(name.to_string())),
                        "ServiceAccount" => {
                            let ns = s
                                .get("namespace")
                                .and_then(Value::as_str)
                                .filter(|n| !n.is_empty())
                                .unwrap_or(binding_ns);
                            Some(Subject::User(service_account_user(ns, name)))
                        }
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Binding {
        role_kind,
        role_name,
        subjects,
    })
}

/// The user name of a service account.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The user a service account authenticates as, with the groups Kubernetes gives it.
pub fn service_account_info(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: service_account_user(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED.into(),
        ],
    }
}

impl Index {
    fn remove_binding(&mut self, key: &Key) {
        if let Some(old) = self.bindings.remove(key) {
            for s in &old.subjects {
                if let Some(set) = self.by_subject.get_mut(s) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_subject.remove(s);
                    }
                }
            }
        }
    }

    fn put_binding(&mut self, key: Key, b: Binding) {
        self.remove_binding(&key);
        for s in &b.subjects {
            self.by_subject
                .entry(s.clone())
                .or_default()
                .insert(key.clone());
        }
        self.bindings.insert(key, b);
    }

    fn remove_secret(&mut self, key: &Key) {
        if let Some(t) = self.token_of_secret.remove(key) {
            self.secret_tokens.remove(&t);
        }
    }

    fn put_secret(&mut self, key: Key, obj: &Value) {
        self.remove_secret(&key);
        if let Some((token, owner)) = tokens::secret_token(&key.0, obj) {
            self.token_of_secret.insert(key, token.clone());
            self.secret_tokens.insert(token, owner);
        }
    }

    /// Applies one stored change; other types are ignored.
    fn apply(&mut self, skey: &str, ns: &str, name: &str, kind: EventType, bytes: &[u8]) {
        let key = key_of(ns, name);
        let deleted = kind == EventType::Deleted;
        let relevant = matches!(
            skey,
            ROLES | CLUSTER_ROLES | ROLE_BINDINGS | CLUSTER_ROLE_BINDINGS | SECRETS
        );
        if !relevant {
            return;
        }
        let obj: Option<Value> = if deleted {
            None
        } else {
            // Stored bytes were serialized by the server; an unreadable object grants nothing.
            serde_json::from_slice(bytes).ok()
        };
        match (skey, obj) {
            (ROLES, Some(o)) => {
                self.roles.insert(key, rules_of(&o));
            }
            (ROLES, None) => {
                self.roles.remove(&key);
            }
            (CLUSTER_ROLES, Some(o)) => {
                self.cluster_roles.insert(key.1, rules_of(&o));
            }
            (CLUSTER_ROLES, None) => {
                self.cluster_roles.remove(&key.1);
            }
            (ROLE_BINDINGS | CLUSTER_ROLE_BINDINGS, Some(o)) => match binding_of(&o, ns) {
                // A ClusterRoleBinding may only reference a ClusterRole.
                Some(b) if !(skey == CLUSTER_ROLE_BINDINGS && b.role_kind == RoleKind::Role) => {
                    self.put_binding(key, b)
                }
                _ => self.remove_binding(&key),
            },
            (ROLE_BINDINGS | CLUSTER_ROLE_BINDINGS, None) => self.remove_binding(&key),
            (SECRETS, Some(o)) => self.put_secret(key, &o),
            (SECRETS, None) => self.remove_secret(&key),
            _ => {}
        }
    }

    fn rebuild(state: &State) -> Index {
        let mut idx = Index::default();
        for skey in [
            ROLES,
            CLUSTER_ROLES,
            ROLE_BINDINGS,
            CLUSTER_ROLE_BINDINGS,
            SECRETS,
        ] {
            let (_, items, _) = state.store.list(skey, None, None, None, &|_, _, _| true);
            for st in items {
                let Ok(v) = st.value() else { continue };
                let meta = |f: &str| {
                    v.pointer(&format!("/metadata/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let (ns, name) = (meta("namespace"), meta("name"));
                idx.apply(skey, &ns, &name, EventType::Added, &st.bytes);
            }
        }
        idx
    }

    /// Evaluates a request for a user; `Err` carries the RBAC reason (roles not found).
    fn decide(
        &self,
        user: &UserInfo,
        allows: &dyn Fn(&Rule) -> bool,
        namespace: &str,
    ) -> Result<(), String> {
        let mut missing: Vec<String> = Vec::new();
        let subjects = std::iter::once(Subject::User(user.name.clone()))
            .chain(user.groups.iter().cloned().map(Subject::Group));
        for subject in subjects {
            let Some(keys) = self.by_subject.get(&subject) else {
                continue;
            };
            for key in keys {
                let Some(b) = self.bindings.get(key) else {
                    continue;
                };
                if !key.0.is_empty() && key.0 != namespace {
                    continue;
                }
                let rules = match b.role_kind {
                    RoleKind::Role => self.roles.get(&key_of(&key.0, &b.role_name)),
                    RoleKind::ClusterRole => self.cluster_roles.get(&b.role_name),
                };
                match rules {
                    Some(rules) if rules.iter().any(allows) => return Ok(()),
                    Some(_) => {}
                    None => missing.push(match b.role_kind {
                        RoleKind::Role => format!(
                            "role.rbac.authorization.k8s.io \"{}\" not found",
                            b.role_name
                        ),
                        RoleKind::ClusterRole => format!(
                            "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                            b.role_name
                        ),
                    }),
                }
            }
        }
        if missing.is_empty() {
            Err(String::new())
        } else {
            missing.sort();
            missing.dedup();
            Err(format!("RBAC: {}", missing.join(", ")))
        }
    }
}

struct Feed {
    events: broadcast::Receiver<Arc<Event>>,
}

/// The RBAC index and the service-account token machinery of one server.
pub struct Rbac {
    enforce: bool,
    feed: Mutex<Feed>,
    index: RwLock<Index>,
    state: std::sync::OnceLock<Weak<State>>,
    signing: SigningKey,
    ca_pem: String,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbac")
            .field("enforce", &self.enforce)
            .finish_non_exhaustive()
    }
}

impl Rbac {
    /// A new index over `store`. `enforce` decides whether [`Rbac::authorizer`] is the
    /// server's authorizer (the token machinery works either way). `ca_pem` goes into legacy
    /// token Secrets as `ca.crt`.
    pub fn new(
        store: &crate::store::Store,
        enforce: bool,
        signing: SigningKey,
        ca_pem: String,
    ) -> Rbac {
        Rbac {
            enforce,
            // Subscribed before the first rebuild (in `attach`), so no change falls between.
            feed: Mutex::new(Feed {
                events: store.subscribe_all(),
            }),
            index: RwLock::new(Index::default()),
            state: std::sync::OnceLock::new(),
            signing,
            ca_pem,
        }
    }

    /// Connects the index to the server state and loads what the store holds. Call once,
    /// right after the state exists.
    pub fn attach(&self, state: &Arc<State>) {
        let _ = self.state.set(Arc::downgrade(state));
        let idx = Index::rebuild(state);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = idx;
    }

    /// Whether RBAC is enforced.
    pub fn enforced(&self) -> bool {
        self.enforce
    }

    fn state(&self) -> Option<Arc<State>> {
        self.state.get().and_then(Weak::upgrade)
    }

    /// Brings the index up to date with every change already published by the store.
    fn catch_up(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending: Vec<Arc<Event>> = Vec::new();
        let mut lagged = false;
        loop {
            match feed.events.try_recv() {
                Ok(e) => {
                    if matches!(
                        &*e.key,
                        ROLES | CLUSTER_ROLES | ROLE_BINDINGS | CLUSTER_ROLE_BINDINGS | SECRETS
                    ) {
                        pending.push(e);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => break,
            }
        }
        if lagged {
            if let Some(state) = self.state() {
                let idx = Index::rebuild(&state);
                *self.index.write().unwrap_or_else(|e| e.into_inner()) = idx;
            }
            return;
        }
        if pending.is_empty() {
            return;
        }
        // The feed lock is still held: a request that drains after us waits until these
        // changes are in the index.
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        for e in pending {
            idx.apply(&e.key, &e.namespace, &e.name, e.kind, &e.bytes);
        }
    }

    /// Decides a resource request by the stored roles and bindings.
    pub fn check(&self, attrs: &Attributes<'_>) -> Result<(), String> {
        if attrs.user.groups.iter().any(|g| g == MASTERS) {
            return Ok(());
        }
        self.catch_up();
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        idx.decide(attrs.user, &|r| r.allows(attrs), attrs.namespace)
    }

    /// Decides a non-resource request (`get /healthz`). Discovery, OpenAPI, version and health
    /// paths are allowed to every authenticated user (see the module docs).
    pub fn check_path(&self, user: &UserInfo, verb: &str, path: &str) -> Result<(), String> {
        if user.groups.iter().any(|g| g == MASTERS) || public_path(verb, path) {
            return Ok(());
        }
        self.catch_up();
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        idx.decide(user, &|r| r.allows_path(verb, path), "")
    }

    /// The user of a legacy token Secret's token, if its Secret and service account exist.
    fn secret_token_owner(&self, token: &str) -> Option<SecretToken> {
        self.catch_up();
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        idx.secret_tokens.get(token).cloned()
    }

    /// An [`Authorizer`] enforcing RBAC with this index.
    pub fn authorizer(self: &Arc<Self>) -> Arc<dyn Authorizer> {
        Arc::new(RbacAuthorizer(self.clone()))
    }
}

/// Paths every authenticated user may get (system:discovery, system:public-info-viewer).
fn public_path(verb: &str, path: &str) -> bool {
    verb == "get"
        && (matches!(
            path,
            "/api" | "/apis" | "/healthz" | "/livez" | "/readyz" | "/version" | "/openapi"
        ) || ["/api/", "/apis/", "/openapi/", "/version/"]
            .iter()
            .any(|p| path.starts_with(p)))
}

struct RbacAuthorizer(Arc<Rbac>);

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String> {
        self.0.check(attrs)
    }
}

/// The 403 a refused request gets, worded as Kubernetes words it.
pub fn forbidden(attrs: &Attributes<'_>, reason: &str) -> ApiError {
    let group_resource = if attrs.group.is_empty() {
        attrs.resource.to_string()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    };
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.to_string()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let what = if attrs.name.is_empty() {
        group_resource
    } else {
        format!("{group_resource} \"{}\"", attrs.name)
    };
    let scope = if attrs.namespace.is_empty() {
        " at the cluster scope".to_string()
    } else {
        format!(" in the namespace \"{}\"", attrs.namespace)
    };
    let mut message = format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
        attrs.user.name, attrs.verb, attrs.group
    );
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    let mut details = json!({"kind": attrs.resource});
    if !attrs.name.is_empty() {
        details["name"] = json!(attrs.name);
    }
    if !attrs.group.is_empty() {
        details["group"] = json!(attrs.group);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(message)
    }
}

/// Authenticates a bearer token that is not a static one: a TokenRequest token or the token
/// of a legacy service-account token Secret. The service account must still exist (with the
/// same uid the token was issued for).
pub fn authenticate(state: &State, token: &str) -> Option<UserInfo> {
    let rbac = &state.rbac;
    if let Some(user) = tokens::verify_bound(state, &rbac.signing, token) {
        return Some(user);
    }
    let owner = rbac.secret_token_owner(token)?;
    let sa = state
        .store
        .get("/serviceaccounts", &owner.namespace, &owner.service_account)?;
    if let Some(uid) = &owner.uid {
        let v = sa.value().ok()?;
        if v.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return None;
        }
    }
    Some(service_account_info(
        &owner.namespace,
        &owner.service_account,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn attrs<'a>(
        u: &'a UserInfo,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user: u,
            verb,
            group,
            resource,
            subresource: sub,
            namespace: ns,
            name,
        }
    }

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn rule_matching_follows_kubernetes() {
        let u = user("u", &[]);
        let r =
            rule(json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}));
        assert!(r.allows(&attrs(&u, "get", "", "pods", "", "a", "p")));
        assert!(r.allows(&attrs(&u, "get", "", "pods", "log", "a", "p")));
        assert!(!r.allows(&attrs(&u, "get", "", "pods", "exec", "a", "p")));
        assert!(!r.allows(&attrs(&u, "list", "", "pods", "", "a", "")));
        assert!(!r.allows(&attrs(&u, "get", "apps", "pods", "", "a", "p")));
        let star = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(star.allows(&attrs(
            &u,
            "delete",
            "apps",
            "deployments",
            "scale",
            "",
            "x"
        )));
        let sub =
            rule(json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]}));
        assert!(sub.allows(&attrs(
            &u,
            "update",
            "apps",
            "deployments",
            "scale",
            "a",
            "d"
        )));
        assert!(!sub.allows(&attrs(&u, "update", "apps", "deployments", "", "a", "d")));
        let named = rule(
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"], "resourceNames": ["one"]}),
        );
        assert!(named.allows(&attrs(&u, "get", "", "configmaps", "", "a", "one")));
        assert!(!named.allows(&attrs(&u, "get", "", "configmaps", "", "a", "two")));
        assert!(!named.allows(&attrs(&u, "list", "", "configmaps", "", "a", "")));
        let paths = rule(json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}));
        assert!(paths.allows_path("get", "/healthz"));
        assert!(paths.allows_path("get", "/apis/apps/v1"));
        assert!(!paths.allows_path("get", "/metrics"));
        assert!(!paths.allows_path("post", "/healthz"));
    }

    #[test]
    fn bindings_are_indexed_by_subject_and_scoped() {
        let mut idx = Index::default();
        let role =
            json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]});
        idx.apply(
            CLUSTER_ROLES,
            "",
            "reader",
            EventType::Added,
            role.to_string().as_bytes(),
        );
        let rb = json!({"roleRef": {"kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Group", "name": "team"}]});
        idx.apply(
            ROLE_BINDINGS,
            "a",
            "rb",
            EventType::Added,
            rb.to_string().as_bytes(),
        );
        let sa = service_account_info("a", "sa");
        let other_sa = service_account_info("b", "sa");
        let member = user("bob", &["team"]);
        fn get(idx: &Index, u: &UserInfo, ns: &str) -> Result<(), String> {
            let a = attrs(u, "get", "", "configmaps", "", ns, "x");
            idx.decide(u, &|r| r.allows(&a), ns)
        }
        assert!(get(&idx, &sa, "a").is_ok());
        assert!(
            get(&idx, &sa, "b").is_err(),
            "a RoleBinding grants in its namespace only"
        );
        assert!(
            get(&idx, &other_sa, "a").is_err(),
            "the subject's namespace defaults to the binding's"
        );
        assert!(get(&idx, &member, "a").is_ok());
        idx.apply(ROLE_BINDINGS, "a", "rb", EventType::Deleted, b"");
        assert!(get(&idx, &sa, "a").is_err(), "a deleted binding revokes");
        assert!(idx.by_subject.is_empty(), "no stale index entries");
        let dangling = json!({"roleRef": {"kind": "Role", "name": "nope"},
            "subjects": [{"kind": "User", "name": "bob"}]});
        idx.apply(
            ROLE_BINDINGS,
            "a",
            "d",
            EventType::Added,
            dangling.to_string().as_bytes(),
        );
        assert_eq!(
            get(&idx, &member, "a").unwrap_err(),
            "RBAC: role.rbac.authorization.k8s.io \"nope\" not found"
        );
    }

    #[test]
    fn forbidden_message_is_worded_like_kubernetes() {
        let u = service_account_info("ns", "sa");
        let e = forbidden(&attrs(&u, "list", "", "pods", "", "ns", ""), "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"pods\" in API group \"\" in the namespace \"ns\""
        );
        let e = forbidden(
            &attrs(&u, "patch", "apps", "deployments", "scale", "", "web"),
            "",
        );
        assert_eq!(
            e.message,
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            e.details,
            Some(json!({"kind": "deployments", "name": "web", "group": "apps"}))
        );
    }
}
