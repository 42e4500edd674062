//! Wire types of the `phonefleet.io/v1alpha1` API: what operators `kubectl apply`.
//!
//! These structs are the CRDs (generated with `CustomResourceExt::crd()`), so their doc comments
//! are what `kubectl explain` shows. They hold strings as the operator wrote them; conversion
//! into the scheduling core's checked types happens once, in [`crate::validate`].

mod schedule;
mod site;

pub use schedule::*;
pub use site::*;

/// API group of every phonefleet resource.
pub const GROUP: &str = "phonefleet.io";
/// API version served and stored.
pub const VERSION: &str = "v1alpha1";
