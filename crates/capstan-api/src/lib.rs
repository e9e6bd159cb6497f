//! Capstan's shared vocabulary: the annotation and label names it reads and writes, the
//! tracking id that ties a cluster object to the application that deployed it, and the rule for
//! the names Capstan makes up.
//!
//! Every such name has exactly one definition, here. Argo CD's spellings are listed beside
//! Capstan's own so that existing GitOps repositories keep working unchanged.

pub mod annotations;
pub mod application;
pub mod names;
pub mod tracking;

pub use application::Application;
pub use tracking::{TrackingId, TrackingIdError};
