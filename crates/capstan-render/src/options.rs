//! The render inputs: an Application's `spec.source` options (Argo CD's field names, camelCase in
//! serde) minus the repository and revision, and the destination context.
//!
//! These are the CRD spec types of the source; they live here until `capstan-api` grows the
//! Application types, then they move there unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How to render one path of a repository (Argo CD's `spec.source` minus `repoURL` and
/// `targetRevision`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceOptions {
    /// Directory inside the repository, relative to its root (`""` or `.` for the root).
    #[serde(default)]
    pub path: String,
    /// Chart name for Helm-repository sources. Not supported by the tree renderer (a Git path
    /// with a `Chart.yaml` is rendered as Helm without it); set it and rendering is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Plain-directory (and Jsonnet) options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryOptions>,
    /// Kustomize overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeOptions>,
    /// Helm options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmOptions>,
}

/// Options of a plain directory of manifests (`spec.source.directory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryOptions {
    /// Descend into subdirectories.
    #[serde(default)]
    pub recurse: bool,
    /// Glob (with `{a,b}` alternatives) a file's path relative to the source path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    /// Glob of files to leave out; wins over `include`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
    /// Jsonnet evaluation options for the `*.jsonnet` files of the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonnet: Option<JsonnetOptions>,
}

/// Jsonnet options (`spec.source.directory.jsonnet`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonnetOptions {
    /// `std.extVar` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_vars: Vec<JsonnetVar>,
    /// Top-level arguments passed when a file evaluates to a function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlas: Vec<JsonnetVar>,
    /// Library search paths (jpath), relative to the repository root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
}

/// One Jsonnet external variable or top-level argument.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonnetVar {
    /// Variable name.
    pub name: String,
    /// A string, or Jsonnet code when `code` is set.
    #[serde(default)]
    pub value: String,
    /// Evaluate `value` as Jsonnet code instead of passing it as a string.
    #[serde(default)]
    pub code: bool,
}

/// Kustomize overrides (`spec.source.kustomize`), applied through an overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeOptions {
    /// Prefix added to every object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Suffix added to every object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    /// Image overrides as `kustomize edit set image` takes them: `name=new:tag`, `name:tag`,
    /// `name@sha256:…`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Labels added to every object (and selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations added to every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub common_annotations: BTreeMap<String, String>,
    /// Namespace set on every namespaced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Replica count overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<KustomizeReplica>,
    /// Patches (inline or a file of the application's directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<KustomizePatch>,
    /// Kustomize components, paths relative to the application's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
}

/// A replica count override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeReplica {
    /// Name of the Deployment/StatefulSet/… (before prefix/suffix).
    pub name: String,
    /// Replica count: a number or a string holding one (Argo CD's IntOrString).
    pub count: serde_json::Value,
}

/// A Kustomize patch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizePatch {
    /// A patch file, relative to the application's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An inline strategic-merge or JSON6902 patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Which objects the patch applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<KustomizeSelector>,
    /// Patch options (`allowNameChange`, `allowKindChange`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, bool>,
}

/// A Kustomize patch target selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// API group.
    pub group: Option<String>,
    /// API version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (a regular expression for Kustomize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Annotation selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_selector: Option<String>,
}

/// Helm options (`spec.source.helm`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmOptions {
    /// Values files, relative to the chart directory, merged in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_files: Vec<String>,
    /// A YAML values document, merged after the values files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// Values as an object; takes the place of `values` when both are set (as in Argo CD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_object: Option<serde_json::Value>,
    /// `--set` parameters, applied last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<HelmParameter>,
    /// Release name; the application's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Release namespace; the destination namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `.Capabilities.KubeVersion`; the context's cluster version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// `.Capabilities.APIVersions`; the context's list when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    /// Leave out the chart's `crds/` directory.
    #[serde(default)]
    pub skip_crds: bool,
    /// Whether Helm test hooks are left out. Capstan's default (unset) is to leave them out,
    /// because a test Pod is not part of the desired state; `false` keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tests: Option<bool>,
    /// Pass repository credentials to dependency fetches on other hosts (accepted for
    /// compatibility; Capstan fetches anonymous HTTP(S) dependencies only).
    #[serde(default)]
    pub pass_credentials: bool,
    /// Skip values files that do not exist instead of failing.
    #[serde(default)]
    pub ignore_missing_value_files: bool,
}

/// One `--set` parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmParameter {
    /// Dotted/indexed key, e.g. `image.tag` or `servers[0].port`.
    pub name: String,
    /// The value, typed as `--set` types it (numbers, booleans, null) unless `force_string`.
    #[serde(default)]
    pub value: String,
    /// Keep the value a string (`--set-string`).
    #[serde(default)]
    pub force_string: bool,
}

/// Where the application goes: what the tools are told about the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderContext {
    /// The application's name (Helm's default release name).
    pub app_name: String,
    /// The destination namespace.
    pub namespace: String,
    /// The destination cluster's version (`v1.32.0`), for Helm's capabilities.
    #[serde(default)]
    pub kube_version: Option<String>,
    /// The destination cluster's API versions (`apps/v1`, `apps/v1/Deployment`).
    #[serde(default)]
    pub api_versions: Vec<String>,
}
