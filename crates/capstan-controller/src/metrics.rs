//! What the controller measures, behind a small trait so that the controller does not depend on
//! whoever exports the figures (the HTTP server's Prometheus endpoint implements [`Recorder`];
//! arrows in the crate graph point down).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Receives the controller's measurements. Every method has a no-op default, so an exporter
/// implements only what it shows. Calls happen on reconcile tasks and on the blocking pool:
/// implementations must be cheap and must not block.
pub trait Recorder: Send + Sync + fmt::Debug {
    /// One sync operation ended with `phase` (`Succeeded`, `Failed` or `Error`).
    fn sync_finished(&self, phase: &str) {
        let _ = phase;
    }

    /// One reconcile of one application that did work took `took` (the wake-ups that find
    /// nothing changed before the next refresh are not counted).
    fn reconcile_finished(&self, took: Duration) {
        let _ = took;
    }

    /// Resolving a revision against the remote (fetching when its refs moved) and reading the
    /// commit's tree took `took`.
    fn git_fetch_finished(&self, took: Duration) {
        let _ = took;
    }

    /// Rendering the manifests of one tree took `took`.
    fn render_finished(&self, took: Duration) {
        let _ = took;
    }

    /// `depth` applications are waiting for a reconcile because their live objects changed.
    fn queue_depth(&self, depth: usize) {
        let _ = depth;
    }

    /// This replica holds `held` of the `total` shards (see [`crate::shard`]).
    fn shards_held(&self, held: usize, total: usize) {
        let _ = (held, total);
    }
}

/// Records nothing (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl Recorder for NoMetrics {}

/// The default recorder handle: [`NoMetrics`].
pub fn none() -> Arc<dyn Recorder> {
    Arc::new(NoMetrics)
}
