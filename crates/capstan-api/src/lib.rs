//! Capstan's shared vocabulary: the annotation and label names it reads and writes, and the
//! tracking id that ties a cluster object to the application that deployed it.
//!
//! Every such name has exactly one definition, here. Argo CD's spellings are listed beside
//! Capstan's own so that existing GitOps repositories keep working unchanged.

pub mod annotations;
pub mod application;
pub mod tracking;

pub use application::Application;
pub use tracking::{TrackingId, TrackingIdError};
