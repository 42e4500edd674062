//! The scheduling core: phones, windows, policies and the wave planner. No Kubernetes types
//! and no clock: `now` is always an argument, so every decision is testable as a pure function.

pub mod family;
pub mod mac;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod window;

pub use family::{PhoneFamily, ReArm};
pub use mac::{Mac, MacMap, MacSet};
pub use plan::{CheckWindow, Plan, SitePlan, Slot, StageSummary, Warning};
pub use planner::{
    ByMac, KeptSlot, PhoneFacts, plan, plan_rollout, plan_rollout_with, plan_with_leads,
    stage_order, stage_ranking, unix_nanos,
};
pub use policy::*;
pub use window::{DaySet, LocalTime, LocalWindow, Occurrence};
