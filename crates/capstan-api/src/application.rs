//! The `Application` resource (`applications.capstan.dev`, `v1alpha1`, namespaced).
//!
//! Field names and meanings follow Argo CD's Application so that existing manifests migrate by
//! renaming the apiVersion. Like Argo CD's, the resource has three parts besides metadata:
//! `spec` (what to deploy, owned by whoever declares the application), `operation` (a requested
//! sync, written by a person or the CLI and cleared by the controller once it has run) and
//! `status` (written only by the controller, through the status subresource).
//!
//! The rendering options of `spec.source` (`directory`, `kustomize`, `helm`) are kept as JSON
//! objects here and read by `capstan-render`'s typed options at reconcile time (an unknown or
//! mistyped field becomes a condition naming it): the renderer owns their shape, so it is
//! defined once.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{NamespaceResourceScope, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;

/// API group of Capstan's resources.
pub const GROUP: &str = "capstan.dev";
/// API version of the Application resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the Application resource.
pub const API_VERSION: &str = "capstan.dev/v1alpha1";
/// Kind of the Application resource.
pub const KIND: &str = "Application";
/// Plural (resource) name of the Application resource.
pub const PLURAL: &str = "applications";
/// Namespace Applications live in by default (where the controller watches).
pub const DEFAULT_NAMESPACE: &str = "capstan";
/// Destination server meaning "the cluster the controller runs against".
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// Destination name meaning "the cluster the controller runs against".
pub const IN_CLUSTER_NAME: &str = "in-cluster";
/// Finalizer that makes deleting an Application delete its objects.
pub const RESOURCES_FINALIZER: &str = "capstan.dev/resources-finalizer";
/// Default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i64 = 10;

/// An application: a path of a Git repository deployed to a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Always [`API_VERSION`].
    #[serde(default = "api_version")]
    pub api_version: String,
    /// Always [`KIND`].
    #[serde(default = "kind")]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to deploy, and how.
    pub spec: ApplicationSpec,
    /// A requested operation (a sync), executed by the controller and then cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// What the controller observed and did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ApplicationStatus>,
}

fn api_version() -> String {
    API_VERSION.to_string()
}

fn kind() -> String {
    KIND.to_string()
}

impl Application {
    /// A new Application named `name` in `namespace` with `spec`.
    pub fn new(namespace: &str, name: &str, spec: ApplicationSpec) -> Self {
        Application {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            spec,
            operation: None,
            status: None,
        }
    }

    /// The name (empty when unset, which the API server never allows).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// The namespace (empty when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The status, or an empty one.
    pub fn status_or_default(&self) -> ApplicationStatus {
        self.status.clone().unwrap_or_default()
    }

    /// The lock, when the application is locked.
    pub fn lock(&self) -> Option<&Lock> {
        self.status.as_ref().and_then(|s| s.lock.as_ref())
    }

    /// `spec.revisionHistoryLimit`, defaulted.
    pub fn revision_history_limit(&self) -> usize {
        let limit = self
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT);
        usize::try_from(limit.max(1)).unwrap_or(1)
    }

    /// The CustomResourceDefinition of Applications, with the OpenAPI schema generated from
    /// these types.
    pub fn crd() -> apiext::CustomResourceDefinition {
        crd()
    }
}

impl Resource for Application {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(API_VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `spec` of an Application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Project the application belongs to (`default` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// Where the manifests come from.
    pub source: ApplicationSource,
    /// Where they go.
    pub destination: ApplicationDestination,
    /// When and how to sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
    /// Fields left out of the comparison.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_differences: Vec<ResourceIgnoreDifferences>,
    /// How many entries `status.history` keeps (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
}

/// `spec.source`: a repository, a revision and how to render a path of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSource {
    /// Repository URL (https, ssh, `file://` or a local path).
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// Branch, tag, commit or semver range; `HEAD` (the default branch) when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_revision: String,
    /// Directory of the repository to render (`""`/`.` for the root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Chart name for Helm-repository sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Helm options (`valueFiles`, `values`, `valuesObject`, `parameters`, `releaseName`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub helm: Option<Value>,
    /// Kustomize options (`namePrefix`, `images`, `commonLabels`, `patches`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub kustomize: Option<Value>,
    /// Plain-directory options (`recurse`, `include`, `exclude`, `jsonnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub directory: Option<Value>,
}

/// An object whose fields the schema does not list (validated by the renderer's types).
fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// `spec.destination`: the cluster (by URL or name) and the default namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDestination {
    /// API server URL; `https://kubernetes.default.svc` is the controller's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Cluster name; `in-cluster` is the controller's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace given to namespaced objects that name none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// `spec.syncPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Sync automatically when Git and the cluster differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<SyncPolicyAutomated>,
    /// Sync options, `Key=Value` (`CreateNamespace=true`, `PruneLast=true`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// Retries of a failed sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStrategy>,
}

/// `spec.syncPolicy.automated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicyAutomated {
    /// Delete objects that are no longer in Git.
    #[serde(default)]
    pub prune: bool,
    /// Revert changes made in the cluster (sync again when live drifts from Git).
    #[serde(default)]
    pub self_heal: bool,
    /// Allow a sync that prunes everything because the render is empty.
    #[serde(default)]
    pub allow_empty: bool,
}

/// `spec.syncPolicy.retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    /// Maximum number of retries (negative: unlimited).
    #[serde(default)]
    pub limit: i64,
    /// Delay between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Retry backoff: `duration * factor^n`, at most `maxDuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// First delay (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Multiplier per retry (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<i64>,
    /// Longest delay (`3m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// `spec.ignoreDifferences[]` (same fields as the engine's `IgnoreDifference`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceIgnoreDifferences {
    /// API group (`""` core, `"*"` any).
    #[serde(default)]
    pub group: String,
    /// Kind (`"*"` any).
    pub kind: String,
    /// Only this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// RFC 6901 pointers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_pointers: Vec<String>,
    /// jq path expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jq_path_expressions: Vec<String>,
    /// Field managers whose fields are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields_managers: Vec<String>,
}

/// A requested operation (`operation` at the top level of the Application, as in Argo CD).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// A sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncOperation>,
    /// Who asked.
    #[serde(default)]
    pub initiated_by: OperationInitiator,
    /// Free-form information (name/value pairs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<Info>,
    /// Retries of this operation (defaults to the sync policy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStrategy>,
}

/// `operation.sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperation {
    /// Revision to sync to; `spec.source.targetRevision` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Source to sync (a rollback's); `spec.source` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// Delete objects no longer in Git.
    #[serde(default)]
    pub prune: bool,
    /// Plan and validate, apply nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Sync options for this sync, beside the policy's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// Set by a rollback: the history entry it returns to. The application is locked once the
    /// sync succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_id: Option<i64>,
    /// A selective sync: only these objects are applied or pruned (all of them when empty). As
    /// in Argo CD, a selective sync runs no hooks and is not recorded in `status.history`, so
    /// it cannot be rolled back to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<SyncOperationResource>,
}

/// One object of a selective sync (`operation.sync.resources[]`, Argo CD's
/// SyncOperationResource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperationResource {
    /// API group (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; empty matches the object in any namespace (and cluster-scoped objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl SyncOperationResource {
    /// Whether this entry names the object `group`/`kind` `namespace`/`name`.
    pub fn matches(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        self.group == group
            && self.kind == kind
            && self.name == name
            && (self.namespace.is_empty() || self.namespace == namespace)
    }

    /// Parses the CLI's form `GROUP:KIND:NAME` or `GROUP:KIND:NAMESPACE/NAME` (argocd's
    /// `--resource`; GROUP may be empty for the core group).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [group, kind, rest] = parts.as_slice() else {
            return Err(format!(
                "resource {text:?}: expected GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME"
            ));
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns.trim(), name.trim()),
            None => ("", rest.trim()),
        };
        let resource = SyncOperationResource {
            group: group.trim().to_string(),
            kind: kind.trim().to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        resource
            .validate()
            .map_err(|e| format!("resource {text:?}: {e}"))?;
        Ok(resource)
    }

    /// Checks the shape: kind and name are required, group may be empty.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.trim().is_empty() {
            return Err("kind is required".into());
        }
        if self.name.trim().is_empty() {
            return Err("name is required".into());
        }
        if self.name.contains('/') || self.namespace.contains('/') {
            return Err("name and namespace may not contain '/'".into());
        }
        Ok(())
    }
}

impl std::fmt::Display for SyncOperationResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:", self.group, self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.name)
    }
}

/// Who started an operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationInitiator {
    /// The user (from the CLI).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Started by the controller's automated sync.
    #[serde(default)]
    pub automated: bool,
}

/// A name/value pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `status` of an Application, written by the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// Comparison of Git and the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// Health of the application (worst of its objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The application's objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceStatus>,
    /// Errors and warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ApplicationCondition>,
    /// The current or last operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_state: Option<OperationState>,
    /// Completed syncs, oldest first, at most `spec.revisionHistoryLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionHistory>,
    /// When the application was last compared with Git (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
    /// Summary (images in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ApplicationSummary>,
    /// Set by a rollback: automated sync and self-heal are off, manual syncs to another
    /// revision are refused, until `capstan app unlock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Lock>,
    /// Which rendering tool was used (`directory`, `kustomize`, `helm`, `jsonnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
}

/// `status.sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `Synced`, `OutOfSync` or `Unknown`.
    pub status: String,
    /// The commit compared.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// What was compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_to: Option<ComparedTo>,
}

/// `status.sync.comparedTo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComparedTo {
    /// The source.
    pub source: ApplicationSource,
    /// The destination.
    pub destination: ApplicationDestination,
}

/// `Synced`.
pub const SYNC_SYNCED: &str = "Synced";
/// `OutOfSync`.
pub const SYNC_OUT_OF_SYNC: &str = "OutOfSync";
/// `Unknown`.
pub const SYNC_UNKNOWN: &str = "Unknown";

/// Health: a status (`Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing`, `Unknown`)
/// and a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The status.
    pub status: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One object of the application (`status.resources[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty when cluster-scoped).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Synced` or `OutOfSync`.
    pub status: String,
    /// Health, for kinds that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Live but no longer in Git: a prune would delete it.
    #[serde(default)]
    pub requires_pruning: bool,
}

/// `status.conditions[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationCondition {
    /// `ComparisonError`, `InvalidSpecError`, `SyncError`, `SharedResourceWarning`, ….
    #[serde(rename = "type")]
    pub type_: String,
    /// What is wrong, naming the file, field or object.
    pub message: String,
    /// When it was first seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// `status.operationState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationState {
    /// The operation.
    pub operation: Operation,
    /// `Running`, `Succeeded`, `Failed`, `Error` or `Terminating`.
    pub phase: String,
    /// Progress or outcome, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the sync did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_result: Option<SyncOperationResult>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Retries so far.
    #[serde(default)]
    pub retry_count: i64,
}

/// Operation phase `Running`.
pub const PHASE_RUNNING: &str = "Running";
/// Operation phase `Succeeded`.
pub const PHASE_SUCCEEDED: &str = "Succeeded";
/// Operation phase `Failed`.
pub const PHASE_FAILED: &str = "Failed";
/// Operation phase `Error`.
pub const PHASE_ERROR: &str = "Error";
/// Operation phase `Terminating`: a person asked the controller to stop the running operation.
pub const PHASE_TERMINATING: &str = "Terminating";
/// The message of an operation stopped on request (Argo CD's wording).
pub const MESSAGE_TERMINATED: &str = "Operation terminated";

/// `status.operationState.syncResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperationResult {
    /// Per object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceResult>,
    /// The commit synced.
    #[serde(default)]
    pub revision: String,
    /// The source synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
}

/// What a sync did to one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceResult {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Synced`, `SyncFailed`, `Pruned`, `PruneSkipped`.
    pub status: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `PreSync`, `Sync`, `PostSync`, `SyncFail` (the stage it ran in).
    #[serde(default)]
    pub sync_phase: String,
    /// Its wave.
    #[serde(default)]
    pub wave: i32,
    /// For hooks, the hook phase (`Running`, `Succeeded`, `Failed`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook_phase: String,
}

/// `status.history[]`: one completed sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionHistory {
    /// Increasing id.
    pub id: i64,
    /// The commit deployed.
    pub revision: String,
    /// When the sync finished (RFC 3339).
    pub deployed_at: String,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_started_at: Option<String>,
    /// The source deployed.
    pub source: ApplicationSource,
    /// Who started it.
    #[serde(default)]
    pub initiated_by: OperationInitiator,
}

/// `status.summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSummary {
    /// Container images of the live objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// `status.lock`: the application stays at `revision` until unlocked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    /// The commit it is locked at.
    pub revision: String,
    /// The source it is locked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// The history entry that was rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<i64>,
    /// Who locked it.
    #[serde(default)]
    pub locked_by: String,
    /// When (RFC 3339).
    pub locked_at: String,
}

/// The schema of the whole resource (what the CRD validates), without metadata.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct ApplicationShape {
    /// What to deploy, and how.
    spec: ApplicationSpec,
    /// A requested operation, executed by the controller and then cleared.
    operation: Option<Operation>,
    /// What the controller observed and did.
    status: Option<ApplicationStatus>,
}

/// The OpenAPI v3 schema of Applications, structural as Kubernetes requires.
pub fn openapi_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<ApplicationShape>())
        .unwrap_or(Value::Null);
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("title");
        obj.remove("$schema");
        obj.insert("type".into(), json!("object"));
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), json!({"type": "object"}));
        }
        obj.insert("required".into(), json!(["spec"]));
    }
    schema
}

/// The CRD `applications.capstan.dev`.
pub fn crd() -> apiext::CustomResourceDefinition {
    let column = |name: &str, path: &str| apiext::CustomResourceColumnDefinition {
        name: name.into(),
        type_: "string".into(),
        json_path: path.into(),
        ..Default::default()
    };
    // The generated schema has the shape of JSONSchemaProps by construction (the same
    // generator settings kube-derive uses); a failure here is a bug in these types.
    let schema: Option<apiext::JSONSchemaProps> = serde_json::from_value(openapi_schema()).ok();
    apiext::CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{PLURAL}.{GROUP}")),
            // Pruned, it would take every Application with it: an installation that manages
            // itself from Git never prunes it, whatever Git says later.
            annotations: Some(
                [(
                    crate::annotations::SYNC_OPTIONS.to_string(),
                    "Prune=false".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: apiext::CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: apiext::CustomResourceDefinitionNames {
                kind: KIND.into(),
                list_kind: Some(format!("{KIND}List")),
                plural: PLURAL.into(),
                singular: Some("application".into()),
                short_names: Some(vec!["app".into(), "apps".into()]),
                categories: Some(vec!["capstan".into()]),
            },
            scope: "Namespaced".into(),
            versions: vec![apiext::CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                schema: Some(apiext::CustomResourceValidation {
                    open_api_v3_schema: schema,
                }),
                subresources: Some(apiext::CustomResourceSubresources {
                    status: Some(apiext::CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(vec![
                    column("Sync Status", ".status.sync.status"),
                    column("Health Status", ".status.health.status"),
                    column("Revision", ".status.sync.revision"),
                    column("Locked", ".status.lock.revision"),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_cd_field_names_round_trip() {
        let yaml = json!({
            "apiVersion": "capstan.dev/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "guestbook", "namespace": "capstan"},
            "spec": {
                "project": "default",
                "source": {"repoURL": "https://example.invalid/repo.git", "targetRevision": "main",
                           "path": "guestbook", "helm": {"valueFiles": ["values.yaml"]}},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "guestbook"},
                "syncPolicy": {"automated": {"prune": true, "selfHeal": true, "allowEmpty": false},
                               "syncOptions": ["CreateNamespace=true"],
                               "retry": {"limit": 2, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "3m"}}},
                "ignoreDifferences": [{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}],
                "revisionHistoryLimit": 3
            },
            "operation": {"sync": {"revision": "abc", "prune": true, "dryRun": false},
                          "initiatedBy": {"username": "ann", "automated": false}}
        });
        let app: Application = serde_json::from_value(yaml.clone()).unwrap();
        assert_eq!(app.spec.source.repo_url, "https://example.invalid/repo.git");
        let automated = app.spec.sync_policy.as_ref().unwrap().automated.as_ref();
        assert!(automated.unwrap().self_heal);
        assert_eq!(app.revision_history_limit(), 3);
        assert_eq!(app.operation.as_ref().unwrap().initiated_by.username, "ann");
        assert_eq!(serde_json::to_value(&app).unwrap(), yaml);
    }

    #[test]
    fn selective_sync_resources_parse_as_argocd_writes_them() {
        let r = SyncOperationResource::parse("apps:Deployment:web").unwrap();
        assert_eq!(
            (r.group.as_str(), r.kind.as_str(), r.name.as_str()),
            ("apps", "Deployment", "web")
        );
        assert!(r.namespace.is_empty());
        assert!(r.matches("apps", "Deployment", "demo", "web"));
        assert!(!r.matches("", "Deployment", "demo", "web"));
        let r = SyncOperationResource::parse(":ConfigMap:demo/settings").unwrap();
        assert_eq!(r.group, "");
        assert_eq!(r.namespace, "demo");
        assert!(r.matches("", "ConfigMap", "demo", "settings"));
        assert!(!r.matches("", "ConfigMap", "other", "settings"));
        assert_eq!(r.to_string(), ":ConfigMap:demo/settings");
        for bad in [
            "web",
            "apps:Deployment",
            ":ConfigMap:",
            "apps::web",
            "a:b:c:d",
            ":ConfigMap:demo/",
        ] {
            assert!(SyncOperationResource::parse(bad).is_err(), "{bad} accepted");
        }
        let op: SyncOperation = serde_json::from_value(json!({
            "resources": [{"kind": "ConfigMap", "name": "a"}, {"group": "apps", "kind": "Deployment", "name": "b", "namespace": "demo"}]
        }))
        .unwrap();
        assert_eq!(op.resources.len(), 2);
        assert_eq!(op.resources[0].group, "");
    }

    #[test]
    fn crd_schema_is_structural_and_lists_the_argo_fields() {
        let crd = serde_json::to_value(crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(schema["type"], "object");
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["source"]["properties"]["repoURL"]["type"], "string");
        assert_eq!(
            spec["source"]["properties"]["helm"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert_eq!(
            spec["syncPolicy"]["properties"]["automated"]["properties"]["selfHeal"]["type"],
            "boolean"
        );
        let status = &schema["properties"]["status"]["properties"];
        for field in [
            "sync",
            "health",
            "resources",
            "conditions",
            "operationState",
            "history",
            "reconciledAt",
            "summary",
            "lock",
        ] {
            assert!(status.get(field).is_some(), "status.{field} missing");
        }
        assert!(schema["properties"]["operation"]["properties"]["sync"].is_object());
        let selected = &schema["properties"]["operation"]["properties"]["sync"]["properties"]["resources"]
            ["items"];
        assert_eq!(selected["required"], json!(["kind", "name"]), "{selected}");
        // Structural schemas forbid $ref and definitions.
        let text = crd.to_string();
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("definitions"));
        assert_eq!(crd["metadata"]["name"], "applications.capstan.dev");
    }
}
