//! The tracking id: `<app-namespace>_<app-name>:<group>/<kind>:<namespace>/<name>`.
//!
//! It is written into the [`TRACKING_ID`](crate::annotations::TRACKING_ID) annotation of every
//! object Capstan applies. It names the owning application and the object itself, so an object
//! copied by hand into another namespace (or another application's object with the same name) is
//! not mistaken for one of ours.

use std::fmt;

/// Identifies an object deployed by an application. The core group is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackingId {
    /// Namespace of the Application resource.
    pub app_namespace: String,
    /// Name of the Application resource.
    pub app_name: String,
    /// API group of the object (`""` for the core group).
    pub group: String,
    /// Kind of the object.
    pub kind: String,
    /// Namespace of the object (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// A tracking annotation that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tracking id {value:?}: expected <app-namespace>_<app-name>:<group>/<kind>:<namespace>/<name>"
)]
pub struct TrackingIdError {
    /// The value that failed to parse.
    pub value: String,
}

impl TrackingId {
    /// Parses the annotation value. Kubernetes names cannot contain `_`, `:` or `/`, so the
    /// first `_` separates the application namespace from its name.
    pub fn parse(value: &str) -> Result<Self, TrackingIdError> {
        let err = || TrackingIdError {
            value: value.to_string(),
        };
        let mut parts = value.splitn(3, ':');
        let app = parts.next().ok_or_else(err)?;
        let gk = parts.next().ok_or_else(err)?;
        let nn = parts.next().ok_or_else(err)?;
        let (app_namespace, app_name) = app.split_once('_').ok_or_else(err)?;
        let (group, kind) = gk.split_once('/').ok_or_else(err)?;
        let (namespace, name) = nn.split_once('/').ok_or_else(err)?;
        if app_namespace.is_empty() || app_name.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(err());
        }
        Ok(Self {
            app_namespace: app_namespace.to_string(),
            app_name: app_name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// True when this id belongs to the application `app_namespace/app_name`.
    pub fn is_owned_by(&self, app_namespace: &str, app_name: &str) -> bool {
        self.app_namespace == app_namespace && self.app_name == app_name
    }
}

impl fmt::Display for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}:{}/{}:{}/{}",
            self.app_namespace, self.app_name, self.group, self.kind, self.namespace, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_namespaced_and_cluster_scoped_objects() {
        for s in [
            "capstan_guestbook:apps/Deployment:default/guestbook-ui",
            "capstan_guestbook:/Namespace:/guestbook",
            "team-a_my-app:rbac.authorization.k8s.io/ClusterRole:/viewer",
        ] {
            let id = TrackingId::parse(s).expect(s);
            assert_eq!(id.to_string(), s);
        }
        let id = TrackingId::parse("capstan_guestbook:/Namespace:/guestbook").unwrap();
        assert_eq!(id.group, "");
        assert_eq!(id.namespace, "");
        assert!(id.is_owned_by("capstan", "guestbook"));
        assert!(!id.is_owned_by("capstan", "other"));
    }

    #[test]
    fn rejects_malformed_values() {
        for s in [
            "",
            "capstan-guestbook:apps/Deployment:default/x",
            "a_b:apps:default/x",
            "a_b:apps/Deployment",
            "a_b:apps/Deployment:default/",
        ] {
            let err = TrackingId::parse(s).unwrap_err();
            assert_eq!(err.value, s);
            assert!(err.to_string().contains("invalid tracking id"));
        }
    }
}
