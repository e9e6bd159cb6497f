//! Annotation and label names. Where Argo CD (or Helm) has an equivalent, Capstan honours both;
//! Capstan's own spelling wins when an object carries both.

/// Annotation holding the [`TrackingId`](crate::TrackingId) of the application owning an object.
pub const TRACKING_ID: &str = "capstan.dev/tracking-id";
/// Argo CD's tracking annotation, read so that objects deployed by Argo CD are recognised.
pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";

/// Sync wave of an object (an integer, default 0); lower waves are applied first.
pub const SYNC_WAVE: &str = "capstan.dev/sync-wave";
/// Argo CD's sync-wave annotation.
pub const ARGOCD_SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";

/// Hook phase(s) of an object: `PreSync`, `Sync`, `PostSync`, `SyncFail`, `Skip` (comma separated).
pub const HOOK: &str = "capstan.dev/hook";
/// Argo CD's hook annotation.
pub const ARGOCD_HOOK: &str = "argocd.argoproj.io/hook";
/// Helm's hook annotation (`pre-install`, `post-upgrade`, `test`, …), mapped onto sync phases.
pub const HELM_HOOK: &str = "helm.sh/hook";

/// When a hook is deleted: `HookSucceeded`, `HookFailed`, `BeforeHookCreation` (comma separated).
pub const HOOK_DELETE_POLICY: &str = "capstan.dev/hook-delete-policy";
/// Argo CD's hook delete policy annotation.
pub const ARGOCD_HOOK_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
/// Helm's hook delete policy annotation (`hook-succeeded`, `hook-failed`, `before-hook-creation`).
pub const HELM_HOOK_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
/// Helm's hook weight, used as the wave of a Helm hook when no sync-wave is given.
pub const HELM_HOOK_WEIGHT: &str = "helm.sh/hook-weight";

/// Per-object sync options, comma separated `Key=Value` (`Prune=false`, `Delete=false`, …).
pub const SYNC_OPTIONS: &str = "capstan.dev/sync-options";
/// Argo CD's per-object sync options annotation.
pub const ARGOCD_SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";

/// Any value excludes the object from the application's health.
pub const IGNORE_HEALTHCHECK: &str = "capstan.dev/ignore-healthcheck";
/// Argo CD's spelling of [`IGNORE_HEALTHCHECK`].
pub const ARGOCD_IGNORE_HEALTHCHECK: &str = "argocd.argoproj.io/ignore-healthcheck";

/// Refresh interval of one application (a duration such as `30s`, `5m`), overriding the global one.
pub const REFRESH_INTERVAL: &str = "capstan.dev/refresh-interval";
/// Set to `normal` or `hard` to ask the controller for an immediate refresh.
pub const REFRESH: &str = "capstan.dev/refresh";
/// On an Application: the paths (`;`-separated; relative to `spec.source.path`, or from the
/// repository root with a leading `/`; `.` is the application's path) whose changes concern it.
/// A push webhook that lists its changed files refreshes the application only when one of them
/// lies under one of these paths. Without the annotation every push of the followed ref does.
pub const MANIFEST_GENERATE_PATHS: &str = "capstan.dev/manifest-generate-paths";
/// Argo CD's spelling of [`MANIFEST_GENERATE_PATHS`].
pub const ARGOCD_MANIFEST_GENERATE_PATHS: &str = "argocd.argoproj.io/manifest-generate-paths";

/// The field manager Capstan applies with (server-side apply).
pub const FIELD_MANAGER: &str = "capstan";

/// Label on the Leases through which controller replicas share the applications: `shard` on a
/// shard's lease, `member` on a replica's own.
pub const CONTROLLER_LEASE: &str = "capstan.dev/controller-lease";
/// Annotation on those Leases: the shard count their holder partitions the applications by.
pub const SHARDS: &str = "capstan.dev/shards";

/// Reads the first present annotation among `names` (Capstan's spelling first).
pub fn first<'a>(
    annotations: Option<&'a serde_json::Map<String, serde_json::Value>>,
    names: &[&str],
) -> Option<&'a str> {
    let annotations = annotations?;
    names
        .iter()
        .find_map(|name| annotations.get(*name).and_then(|v| v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capstan_spelling_wins_over_argocd() {
        let ann = json!({ ARGOCD_SYNC_WAVE: "5", SYNC_WAVE: "-1" });
        let map = ann.as_object();
        assert_eq!(first(map, &[SYNC_WAVE, ARGOCD_SYNC_WAVE]), Some("-1"));
        let only_argo = json!({ ARGOCD_SYNC_WAVE: "5" });
        assert_eq!(
            first(only_argo.as_object(), &[SYNC_WAVE, ARGOCD_SYNC_WAVE]),
            Some("5")
        );
        assert_eq!(first(None, &[SYNC_WAVE]), None);
    }
}
