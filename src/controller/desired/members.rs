//! Step 1: who takes part in the rollout, in which stage, and what the provisioning server has
//! seen of each phone for the current firmware.

use crate::children::{PhoneProgress, PhoneState};
use crate::controller::requests::Requests;
use crate::core::{Fleet, Mac, MacMap, ModelId, stage_order};

/// A phone the firmware applies to, with what decides its file. 24 bytes: a decision holds
/// one per phone of the fleet at once (with the model as a name it was 40).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub mac: Mac,
    /// Progress towards the current firmware version; `None` before any.
    pub state: Option<PhoneState>,
    /// Position in its site's `phones`: the index of everything the decision keeps per phone.
    pub phone: u32,
    /// Index into the fleet's `models`.
    pub model: ModelId,
    pub stage: u32,
}

impl Member {
    /// Upgraded or failed: never planned again for this version.
    pub fn done(&self) -> bool {
        matches!(self.state, Some(PhoneState::Upgraded | PhoneState::Failed))
    }

    /// Downloading or rebooting: must keep whatever slot it has.
    pub fn busy(&self) -> bool {
        matches!(
            self.state,
            Some(PhoneState::Downloading | PhoneState::Rebooting)
        )
    }

    pub fn is(&self, state: PhoneState) -> bool {
        self.state == Some(state)
    }
}

/// The members of each site, in the fleet's site order, each site's in stage-rank order.
#[derive(Clone, Debug, Default)]
pub(super) struct Members {
    pub by_site: Vec<Vec<Member>>,
}

impl Members {
    pub fn iter(&self) -> impl Iterator<Item = &Member> + Clone {
        self.by_site.iter().flatten()
    }
}

/// The members of `fleet`: every placed phone its firmware applies to (none without firmware),
/// staged by [`stage_ranking`], with its progress towards the firmware's version.
///
/// A failure an operator request (`retry`, `unhalt`) forgives counts as no progress, so the
/// phone is planned again.
pub(super) fn of_fleet(
    fleet: &Fleet,
    progress: &MacMap<PhoneProgress>,
    requests: Option<&Requests>,
) -> Members {
    let firmware = fleet.schedule.firmware.as_ref();
    let by_site = fleet
        .sites
        .iter()
        .map(|site| {
            let (order, bounds) = stage_order(site, &fleet.schedule);
            let mut members = Vec::with_capacity(order.len());
            for (stage, range) in bounds.windows(2).enumerate() {
                for &phone in &order[range[0]..range[1]] {
                    let p = &site.phones[phone as usize];
                    let (mac, model) = (p.mac, fleet.models[p.model.0 as usize].as_str());
                    let model_id = p.model;
                    let state = firmware.and_then(|fw| {
                        progress
                            .get(&mac)
                            .filter(|p| p.target == fw.version)
                            .filter(|p| {
                                p.state != PhoneState::Failed
                                    || !requests.is_some_and(|r| r.forgives(mac, model, p.since))
                            })
                            .map(|p| p.state)
                    });
                    members.push(Member {
                        mac,
                        state,
                        phone,
                        model: model_id,
                        stage: stage as u32,
                    });
                }
            }
            members
        })
        .collect();
    Members { by_site }
}

#[cfg(test)]
mod tests {
    /// A decision holds one member per phone of the fleet: 24 MB at a million phones.
    #[test]
    fn a_member_is_twenty_four_bytes() {
        assert_eq!(std::mem::size_of::<super::Member>(), 24);
    }
}
