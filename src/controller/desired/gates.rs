//! Step 2: the rollout gates — which stage is released and which models are halted — from the
//! members' progress and the gate state last written to the status.

use std::collections::BTreeSet;

use super::members::Members;
use crate::api::RolloutStatus;
use crate::controller::gating::{self, GateEvent, GatePolicy, GatedPhone};
use crate::core::Schedule;

/// What the gates decided.
#[derive(Clone, Debug)]
pub(super) struct Gates {
    /// The gate state for the status; `None` without firmware.
    pub rollout: Option<RolloutStatus>,
    pub events: Vec<GateEvent>,
    /// Models whose phones get no more slots.
    pub halted: BTreeSet<String>,
    /// The last released stage (0: only the first).
    pub released: u32,
    /// Firmware set and not paused: slots are handed out.
    pub active: bool,
}

impl Gates {
    pub fn is_halted(&self, model: &str) -> bool {
        self.halted.contains(model)
    }
}

/// Evaluates the gates of `schedule` over `members`, from the `previous` gate state.
pub(super) fn evaluate(
    schedule: &Schedule,
    previous: Option<&RolloutStatus>,
    members: &Members<'_>,
) -> Gates {
    let rollout = &schedule.rollout;
    let (state, events) = match &schedule.firmware {
        Some(fw) => {
            let gated: Vec<GatedPhone<'_>> = members
                .iter()
                .map(|m| GatedPhone {
                    mac: m.mac,
                    model: m.model,
                    stage: m.stage,
                    state: m.state,
                })
                .collect();
            let policy = GatePolicy {
                stages: rollout.stages.len() as u32,
                success: rollout.success_threshold,
                failure: rollout.failure_threshold,
                paused: rollout.paused,
            };
            let (state, events) = gating::evaluate(&fw.version, previous, &gated, policy);
            (Some(state), events)
        }
        None => (None, Vec::new()),
    };
    Gates {
        halted: state
            .iter()
            .flat_map(|s| s.halted_models.iter().cloned())
            .collect(),
        released: state.as_ref().map_or(0, |s| s.released_stage),
        active: schedule.firmware.is_some() && !rollout.paused,
        rollout: state,
        events,
    }
}
