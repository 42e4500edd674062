//! Step 2: the rollout gates — which stage is released and which models are halted — from the
//! members' progress and the gate state last written to the status.

use std::collections::BTreeSet;

use super::members::Members;
use crate::api::RolloutStatus;
use crate::controller::gating::{self, GateEvent, GatePolicy, GatedPhone};
use crate::controller::requests::Requests;
use crate::core::{ModelId, Schedule};

/// What the gates decided.
#[derive(Clone, Debug)]
pub(super) struct Gates {
    /// The gate state for the status; `None` without firmware.
    pub rollout: Option<RolloutStatus>,
    pub events: Vec<GateEvent>,
    /// Models whose phones get no more slots.
    pub halted: BTreeSet<String>,
    /// The same by the fleet's model index, for the per-phone questions.
    pub halted_ids: Vec<bool>,
    /// The last released stage (0: only the first).
    pub released: u32,
    /// Firmware set and not paused: slots are handed out.
    pub active: bool,
    /// Events for operator requests carried out by this decision: (reason, note).
    pub request_events: Vec<(&'static str, String)>,
}

impl Gates {
    pub fn is_halted(&self, model: ModelId) -> bool {
        self.halted_ids
            .get(model.0 as usize)
            .copied()
            .unwrap_or(false)
    }
}

/// Evaluates the gates of `schedule` over `members` (whose models index `models`), from the
/// `previous` gate state.
///
/// Operator requests apply here: `unhalt` lifts a halt before the gates are evaluated, and
/// `promote` and the requests' records are applied to the result.
pub(super) fn evaluate(
    schedule: &Schedule,
    models: &[String],
    previous: Option<&RolloutStatus>,
    members: &Members,
    requests: Option<&Requests>,
) -> Gates {
    let rollout = &schedule.rollout;
    let mut request_events = Vec::new();
    let (state, events) = match &schedule.firmware {
        Some(fw) => {
            // Read in place: a copy of every member was 32 MB at a million phones.
            let gated = members.iter().map(|m| GatedPhone {
                mac: m.mac,
                model: models.get(m.model.0 as usize).map_or("", String::as_str),
                stage: m.stage,
                state: m.state,
            });
            let policy = GatePolicy {
                stages: rollout.stages.len() as u32,
                success: rollout.success_threshold,
                failure: rollout.failure_threshold,
                paused: rollout.paused,
            };
            let was_halted: Vec<String> = previous
                .filter(|o| o.firmware_version == fw.version)
                .map(|o| o.halted_models.clone())
                .unwrap_or_default();
            let lifted = requests.map(|r| r.unhalted(previous));
            let previous = match &lifted {
                Some(l) => l.as_ref(),
                None => previous,
            };
            let (mut state, events) = gating::evaluate(&fw.version, previous, gated, policy);
            if let Some(r) = requests {
                let names: Vec<String> = rollout.stages.iter().map(|s| s.name.clone()).collect();
                request_events = r.finish(&mut state, &names, &was_halted);
            }
            (Some(state), events)
        }
        None => (None, Vec::new()),
    };
    let halted: BTreeSet<String> = state
        .iter()
        .flat_map(|s| s.halted_models.iter().cloned())
        .collect();
    Gates {
        halted_ids: models.iter().map(|m| halted.contains(m)).collect(),
        halted,
        released: state.as_ref().map_or(0, |s| s.released_stage),
        active: schedule.firmware.is_some() && !rollout.paused,
        rollout: state,
        events,
        request_events,
    }
}
