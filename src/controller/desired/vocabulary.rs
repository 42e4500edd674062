//! The closed sets the decision speaks in: phases, condition types and reasons. Metrics label
//! their series with them and the docs list them; both iterate `ALL`, so a new value cannot be
//! forgotten in one of them.

use std::fmt;

/// Phases shown in `kubectl get phoneschedules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Invalid,
    Pending,
    Idle,
    Paused,
    Halted,
    Progressing,
    Completed,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Invalid,
        Phase::Pending,
        Phase::Idle,
        Phase::Paused,
        Phase::Halted,
        Phase::Progressing,
        Phase::Completed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Invalid => "Invalid",
            Phase::Pending => "Pending",
            Phase::Idle => "Idle",
            Phase::Paused => "Paused",
            Phase::Halted => "Halted",
            Phase::Progressing => "Progressing",
            Phase::Completed => "Completed",
        }
    }
}

/// Condition types, as `kubectl wait --for=condition=…` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
}

impl ConditionType {
    pub const ALL: [ConditionType; 3] = [
        ConditionType::Ready,
        ConditionType::Progressing,
        ConditionType::Degraded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

/// Condition and event reasons of a PhoneSchedule: a fixed set, so they can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Reconciled,
    InvalidSpec,
    NoMatchingSites,
    NoFirmware,
    RolloutProgressing,
    RolloutPaused,
    RolloutComplete,
    RolloutHalted,
    StageReleased,
    SiteConflict,
    InvalidSite,
    UnknownModel,
    AsExpected,
    /// Operator requests (`kubectl phonefleet retry|unhalt|promote`), as events.
    RetryRequested,
    ModelUnhalted,
    StagePromoted,
    /// A phone of this schedule's sites is also claimed by a schedule of another namespace:
    /// the provisioning server serves it to neither (cluster-wide mode).
    PhoneConflict,
}

impl Reason {
    pub const ALL: [Reason; 17] = [
        Reason::Reconciled,
        Reason::InvalidSpec,
        Reason::NoMatchingSites,
        Reason::NoFirmware,
        Reason::RolloutProgressing,
        Reason::RolloutPaused,
        Reason::RolloutComplete,
        Reason::RolloutHalted,
        Reason::StageReleased,
        Reason::SiteConflict,
        Reason::InvalidSite,
        Reason::UnknownModel,
        Reason::AsExpected,
        Reason::RetryRequested,
        Reason::ModelUnhalted,
        Reason::StagePromoted,
        Reason::PhoneConflict,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::NoMatchingSites => "NoMatchingSites",
            Reason::NoFirmware => "NoFirmware",
            Reason::RolloutProgressing => "RolloutProgressing",
            Reason::RolloutPaused => "RolloutPaused",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::RolloutHalted => "RolloutHalted",
            Reason::StageReleased => "StageReleased",
            Reason::SiteConflict => "SiteConflict",
            Reason::InvalidSite => "InvalidSite",
            Reason::UnknownModel => "UnknownModel",
            Reason::AsExpected => "AsExpected",
            Reason::RetryRequested => "RetryRequested",
            Reason::ModelUnhalted => "ModelUnhalted",
            Reason::StagePromoted => "StagePromoted",
            Reason::PhoneConflict => "PhoneConflict",
        }
    }
}

impl From<crate::selection::Exclusion> for Reason {
    fn from(e: crate::selection::Exclusion) -> Reason {
        use crate::selection::Exclusion;
        match e {
            Exclusion::SiteConflict => Reason::SiteConflict,
            Exclusion::InvalidSite => Reason::InvalidSite,
            Exclusion::UnknownModel => Reason::UnknownModel,
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Phase, ConditionType, Reason);

/// The names as string constants, for code that compares status fields.
pub mod phase {
    use super::Phase;
    pub const INVALID: &str = Phase::Invalid.as_str();
    pub const PENDING: &str = Phase::Pending.as_str();
    pub const IDLE: &str = Phase::Idle.as_str();
    pub const PAUSED: &str = Phase::Paused.as_str();
    pub const HALTED: &str = Phase::Halted.as_str();
    pub const PROGRESSING: &str = Phase::Progressing.as_str();
    pub const COMPLETED: &str = Phase::Completed.as_str();
}

/// Condition type names as string constants.
pub mod condition {
    use super::ConditionType;
    pub const READY: &str = ConditionType::Ready.as_str();
    pub const PROGRESSING: &str = ConditionType::Progressing.as_str();
    pub const DEGRADED: &str = ConditionType::Degraded.as_str();
}

/// Reason names as string constants.
pub mod reason {
    use super::Reason;
    pub const RECONCILED: &str = Reason::Reconciled.as_str();
    pub const INVALID_SPEC: &str = Reason::InvalidSpec.as_str();
    pub const NO_MATCHING_SITES: &str = Reason::NoMatchingSites.as_str();
    pub const NO_FIRMWARE: &str = Reason::NoFirmware.as_str();
    pub const ROLLOUT_PROGRESSING: &str = Reason::RolloutProgressing.as_str();
    pub const ROLLOUT_PAUSED: &str = Reason::RolloutPaused.as_str();
    pub const ROLLOUT_COMPLETE: &str = Reason::RolloutComplete.as_str();
    pub const ROLLOUT_HALTED: &str = Reason::RolloutHalted.as_str();
    pub const STAGE_RELEASED: &str = Reason::StageReleased.as_str();
    pub const SITE_CONFLICT: &str = Reason::SiteConflict.as_str();
    pub const INVALID_SITE: &str = Reason::InvalidSite.as_str();
    pub const UNKNOWN_MODEL: &str = Reason::UnknownModel.as_str();
    pub const AS_EXPECTED: &str = Reason::AsExpected.as_str();
    pub const RETRIED: &str = Reason::RetryRequested.as_str();
    pub const UNHALTED: &str = Reason::ModelUnhalted.as_str();
    pub const PROMOTED: &str = Reason::StagePromoted.as_str();
    pub const PHONE_CONFLICT: &str = Reason::PhoneConflict.as_str();
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLLER_DOC: &str = include_str!("../../../docs/controller.md");
    const METRICS_DOC: &str = include_str!("../../../docs/metrics.md");

    #[test]
    fn every_reason_and_condition_type_is_documented() {
        for r in Reason::ALL {
            assert!(
                CONTROLLER_DOC.contains(&format!("`{r}`")),
                "{r} not in docs/controller.md"
            );
        }
        for c in ConditionType::ALL {
            assert!(
                CONTROLLER_DOC.contains(&format!("`{c}`")),
                "{c} not in docs/controller.md"
            );
        }
    }

    #[test]
    fn every_phase_is_a_documented_metric_label() {
        for p in Phase::ALL {
            assert!(
                METRICS_DOC.contains(&format!("`{p}`")),
                "{p} not in docs/metrics.md"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        let phases: std::collections::BTreeSet<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(phases.len(), Phase::ALL.len());
    }
}
