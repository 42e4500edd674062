//! phonefleet: schedules auto-provisioning and firmware rollouts for fleets of IP desk phones.

pub mod allocator;
pub mod api;
pub mod children;
pub mod clock;
pub mod controller;
pub mod core;
pub mod decision;
pub mod live;
pub mod manifest;
pub mod metrics;
pub mod plan_report;
pub mod plugin;
pub mod progress;
pub mod render;
pub mod run;
pub mod scope;
pub mod selection;
pub mod selector;
pub mod server;
pub mod simulator;
pub mod validate;
