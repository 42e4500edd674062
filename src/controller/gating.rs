//! Stage gates and halts, decided purely from the phones' reported progress.
//!
//! A stage is released when the phones of the stages released so far (models not halted) have
//! come back upgraded in at least the success-threshold ratio. A model whose failure ratio over
//! the released stages exceeds the failure threshold is halted: its phones get no more slots,
//! while other models go on. Halting per model matches the failure the design guards against
//! (a firmware that bricks one model); the halt holds until the firmware version changes.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::RolloutStatus;
use crate::children::PhoneState;
use crate::core::{Mac, Percent};

/// One phone as gating sees it.
#[derive(Clone, Copy, Debug)]
pub struct GatedPhone<'a> {
    pub mac: Mac,
    pub model: &'a str,
    pub stage: u32,
    /// Progress towards the current target version, if the phone reported any.
    pub state: Option<PhoneState>,
}

/// Thresholds and switches from the schedule.
#[derive(Clone, Copy, Debug)]
pub struct GatePolicy {
    pub stages: u32,
    pub success: Percent,
    pub failure: Percent,
    pub paused: bool,
}

/// What changed at this evaluation, for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateEvent {
    StageReleased {
        stage: u32,
        upgraded: u32,
        total: u32,
    },
    ModelHalted {
        model: String,
        failed: u32,
        total: u32,
    },
}

/// Evaluates the gates for `version`, starting from the previous state (reset when the version
/// changed). Releases at most one stage per evaluation, so every release is seen in status.
pub fn evaluate<'a>(
    version: &str,
    previous: Option<&RolloutStatus>,
    phones: impl Iterator<Item = GatedPhone<'a>> + Clone,
    policy: GatePolicy,
) -> (RolloutStatus, Vec<GateEvent>) {
    let mut state = match previous {
        Some(p) if p.firmware_version == version => p.clone(),
        _ => RolloutStatus {
            firmware_version: version.to_owned(),
            released_stage: 0,
            halted_models: Vec::new(),
            requests: Vec::new(),
        },
    };
    state.released_stage = state.released_stage.min(policy.stages.saturating_sub(1));
    let mut events = Vec::new();

    let released = |p: &GatedPhone<'_>| p.stage <= state.released_stage;
    let mut per_model: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for p in phones.clone().filter(|p| released(p)) {
        let entry = per_model.entry(p.model).or_default();
        entry.0 += 1;
        if p.state == Some(PhoneState::Failed) {
            entry.1 += 1;
        }
    }
    let mut halted: BTreeSet<String> = state.halted_models.iter().cloned().collect();
    for (model, (total, failed)) in per_model {
        if failed > 0
            && u64::from(failed) * 100 > u64::from(policy.failure.get()) * u64::from(total)
            && halted.insert(model.to_owned())
        {
            events.push(GateEvent::ModelHalted {
                model: model.to_owned(),
                failed,
                total,
            });
        }
    }
    state.halted_models = halted.iter().cloned().collect();

    // With no phone at all (a schedule reconciled before its sites are seen) every gate would
    // pass vacuously and release every stage at once.
    let last = policy.stages.saturating_sub(1);
    if !policy.paused && state.released_stage < last && phones.clone().next().is_some() {
        let (mut total, mut upgraded) = (0u32, 0u32);
        for p in phones.filter(|p| released(p) && !halted.contains(p.model)) {
            total += 1;
            if p.state == Some(PhoneState::Upgraded) {
                upgraded += 1;
            }
        }
        if u64::from(upgraded) * 100 >= u64::from(policy.success.get()) * u64::from(total) {
            state.released_stage += 1;
            events.push(GateEvent::StageReleased {
                stage: state.released_stage,
                upgraded,
                total,
            });
        }
    }
    (state, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(
        n: u64,
        model: &'static str,
        stage: u32,
        state: Option<PhoneState>,
    ) -> GatedPhone<'static> {
        GatedPhone {
            mac: Mac::from_u64(n).unwrap(),
            model,
            stage,
            state,
        }
    }

    fn policy() -> GatePolicy {
        GatePolicy {
            stages: 3,
            success: Percent::new(90).unwrap(),
            failure: Percent::new(10).unwrap(),
            paused: false,
        }
    }

    const UP: Option<PhoneState> = Some(PhoneState::Upgraded);
    const FAILED: Option<PhoneState> = Some(PhoneState::Failed);

    #[test]
    fn canary_success_releases_the_next_stage_only() {
        let phones = [
            phone(1, "A", 0, UP),
            phone(2, "A", 1, None),
            phone(3, "A", 2, None),
        ];
        let (state, events) = evaluate("2.0", None, phones.iter().copied(), policy());
        assert_eq!(state.released_stage, 1);
        assert_eq!(
            events,
            [GateEvent::StageReleased {
                stage: 1,
                upgraded: 1,
                total: 1
            }]
        );
        // Stage 1 not done yet: nothing more.
        let (again, events) = evaluate("2.0", Some(&state), phones.iter().copied(), policy());
        assert_eq!(again, state);
        assert!(events.is_empty());
    }

    #[test]
    fn below_the_success_threshold_nothing_is_released() {
        let phones = [
            phone(1, "A", 0, UP),
            phone(2, "A", 0, None),
            phone(3, "A", 1, None),
        ];
        let (state, events) = evaluate("2.0", None, phones.iter().copied(), policy());
        assert_eq!(state.released_stage, 0);
        assert!(events.is_empty());
    }

    #[test]
    fn a_failing_model_halts_alone_and_the_others_go_on() {
        let phones = [
            phone(1, "BAD", 0, FAILED),
            phone(2, "GOOD", 0, UP),
            phone(3, "GOOD", 1, None),
            phone(4, "BAD", 1, None),
        ];
        let (state, events) = evaluate("2.0", None, phones.iter().copied(), policy());
        assert_eq!(state.halted_models, ["BAD"]);
        assert_eq!(state.released_stage, 1, "GOOD's canary succeeded");
        assert!(events.contains(&GateEvent::ModelHalted {
            model: "BAD".into(),
            failed: 1,
            total: 1
        }));
    }

    #[test]
    fn a_halt_survives_until_the_version_changes() {
        let phones = [phone(1, "BAD", 0, None)];
        let previous = RolloutStatus {
            firmware_version: "2.0".into(),
            released_stage: 0,
            halted_models: vec!["BAD".into()],
            ..RolloutStatus::default()
        };
        let (same, _) = evaluate("2.0", Some(&previous), phones.iter().copied(), policy());
        assert_eq!(same.halted_models, ["BAD"]);
        let (fixed, _) = evaluate("2.1", Some(&previous), phones.iter().copied(), policy());
        assert!(fixed.halted_models.is_empty());
        assert_eq!(fixed.firmware_version, "2.1");
    }

    #[test]
    fn paused_rollouts_release_nothing() {
        let phones = [phone(1, "A", 0, UP), phone(2, "A", 1, None)];
        let paused = GatePolicy {
            paused: true,
            ..policy()
        };
        let (state, events) = evaluate("2.0", None, phones.iter().copied(), paused);
        assert_eq!(state.released_stage, 0);
        assert!(events.is_empty());
    }

    #[test]
    fn no_phone_at_all_releases_nothing() {
        let (state, events) = evaluate("2.0", None, std::iter::empty(), policy());
        assert_eq!(state.released_stage, 0);
        assert!(events.is_empty());
    }

    #[test]
    fn the_last_stage_is_never_exceeded() {
        let phones = [
            phone(1, "A", 0, UP),
            phone(2, "A", 1, UP),
            phone(3, "A", 2, UP),
        ];
        let previous = RolloutStatus {
            firmware_version: "2.0".into(),
            released_stage: 2,
            halted_models: vec![],
            ..RolloutStatus::default()
        };
        let (state, events) = evaluate("2.0", Some(&previous), phones.iter().copied(), policy());
        assert_eq!(state.released_stage, 2);
        assert!(events.is_empty());
    }
}
