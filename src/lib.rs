//! phonefleet: schedules auto-provisioning and firmware rollouts for fleets of IP desk phones.

pub mod api;
pub mod core;
pub mod validate;
