//! Operator requests: what `kubectl phonefleet retry|unhalt|promote` ask of the controller.
//!
//! A request is an annotation on the PhoneSchedule (metadata, not spec: it does not bump the
//! generation, and a GitOps tool that does not know the annotation leaves it alone), holding a
//! small JSON object with a unique `id` and the firmware `version` it is about. The controller
//! carries out a request once: it records it in `status.rollout.requests` and ignores the same
//! id afterwards. A request about another version than `spec.firmware.version` is stale and
//! ignored (a new version starts a new rollout anyway).
//!
//! - retry: phones that failed (of one model, or one MAC) up to the moment the request is
//!   carried out count as not yet upgraded again, so they are planned again; a new failure
//!   counts again.
//! - unhalt: the model's halt is lifted for the same version and its failures up to now are
//!   forgiven (otherwise the same failures would halt it again at once).
//! - promote: the named stage is released now, without waiting for the success threshold.
//!
//! Everything here is pure: the decision in [`super::desired`] calls it with `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{HandledRequest, RequestKind, RolloutStatus};
use crate::core::Mac;

/// Annotation carrying a retry request.
pub const ANNOTATION_RETRY: &str = "phonefleet.io/retry";
/// Annotation carrying an unhalt request.
pub const ANNOTATION_UNHALT: &str = "phonefleet.io/unhalt";
/// Annotation carrying a promote request.
pub const ANNOTATION_PROMOTE: &str = "phonefleet.io/promote";
/// Handled requests kept in status (the CRD allows no more).
pub const MAX_RECORDED: usize = 20;

/// Event reasons of carried-out requests.
pub mod reason {
    pub const RETRIED: &str = "RetryRequested";
    pub const UNHALTED: &str = "ModelUnhalted";
    pub const PROMOTED: &str = "StagePromoted";
}

/// The annotation of each kind of request.
pub fn annotation(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Retry => ANNOTATION_RETRY,
        RequestKind::Unhalt => ANNOTATION_UNHALT,
        RequestKind::Promote => ANNOTATION_PROMOTE,
    }
}

/// The value of a request annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Unique per request (the plugin uses the instant it was made).
    pub id: String,
    /// The firmware version the request is about.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Stage index (from 0) to release, for a promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// The requests of a reconcile: those carried out before (for this version) and the new ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Every request carried out for this version, the new ones last.
    pub handled: Vec<HandledRequest>,
    /// How many of `handled` (at the end) are new in this reconcile.
    pub new: usize,
}

const KINDS: [RequestKind; 3] = [
    RequestKind::Retry,
    RequestKind::Unhalt,
    RequestKind::Promote,
];

/// Reads the request annotations: the ones already carried out for `version` (from the previous
/// status) and the new ones, carried out at `now`. Unreadable annotations, requests about
/// another version and unknown MACs are ignored.
pub fn take(
    annotations: &BTreeMap<String, String>,
    version: &str,
    previous: Option<&RolloutStatus>,
    now: DateTime<Utc>,
) -> Requests {
    let mut handled: Vec<HandledRequest> = previous
        .filter(|p| p.firmware_version == version)
        .map(|p| p.requests.clone())
        .unwrap_or_default();
    let before = handled.len();
    for kind in KINDS {
        let Some(request) = annotations
            .get(annotation(kind))
            .and_then(|v| serde_json::from_str::<Request>(v).ok())
        else {
            continue;
        };
        let seen = handled.iter().any(|h| h.kind == kind && h.id == request.id);
        if seen || request.version != version || request.id.is_empty() || request.id.len() > 64 {
            continue;
        }
        let mac = match request.mac.as_deref().map(str::parse::<Mac>) {
            None => None,
            Some(Ok(mac)) => Some(mac.to_string()),
            Some(Err(_)) => continue,
        };
        let usable = match kind {
            RequestKind::Retry => true,
            RequestKind::Unhalt => request.model.is_some(),
            RequestKind::Promote => request.stage.is_some(),
        };
        if !usable {
            continue;
        }
        handled.push(HandledRequest {
            kind,
            id: request.id,
            at: now,
            model: request.model,
            mac,
            stage: request.stage.filter(|_| kind == RequestKind::Promote),
        });
    }
    let new = handled.len() - before;
    // Keep the newest: the forgiveness of a dropped old request is covered by any later retry
    // only if it was as broad, so the bound is generous for what operators do by hand.
    if handled.len() > MAX_RECORDED {
        handled.drain(..handled.len() - MAX_RECORDED);
    }
    Requests {
        new: new.min(handled.len()),
        handled,
    }
}

impl Requests {
    /// The requests carried out in this reconcile.
    pub fn new_ones(&self) -> &[HandledRequest] {
        &self.handled[self.handled.len() - self.new..]
    }

    /// Whether a failure of phone `mac` (of `model`) recorded at `since` is forgiven by a retry
    /// or unhalt carried out at or after it.
    pub fn forgives(&self, mac: Mac, model: &str, since: DateTime<Utc>) -> bool {
        self.handled.iter().any(|r| {
            matches!(r.kind, RequestKind::Retry | RequestKind::Unhalt)
                && since <= r.at
                && r.model.as_deref().is_none_or(|m| m == model)
                && r.mac
                    .as_deref()
                    .is_none_or(|m| m.parse::<Mac>().is_ok_and(|m| m == mac))
        })
    }

    /// The previous gate state with the halts lifted by new unhalt requests.
    pub fn unhalted(&self, previous: Option<&RolloutStatus>) -> Option<RolloutStatus> {
        let mut state = previous.cloned()?;
        for r in self.new_ones() {
            if r.kind == RequestKind::Unhalt {
                state
                    .halted_models
                    .retain(|m| Some(m.as_str()) != r.model.as_deref());
            }
        }
        Some(state)
    }

    /// Carries out new promotions on the evaluated gate state (never beyond the last stage),
    /// and records every handled request in it. Returns the events to publish.
    pub fn finish(
        &self,
        state: &mut RolloutStatus,
        stage_names: &[String],
        was_halted: &[String],
    ) -> Vec<(&'static str, String)> {
        let mut events = Vec::new();
        let last = (stage_names.len() as u32).saturating_sub(1);
        for r in self.new_ones() {
            match r.kind {
                RequestKind::Retry => events.push((
                    reason::RETRIED,
                    format!(
                        "retry requested (id {}): failed phones{}{} are planned again",
                        r.id,
                        r.model
                            .as_deref()
                            .map(|m| format!(" of model {m}"))
                            .unwrap_or_default(),
                        r.mac
                            .as_deref()
                            .map(|m| format!(" with MAC {m}"))
                            .unwrap_or_default(),
                    ),
                )),
                RequestKind::Unhalt => {
                    let model = r.model.as_deref().unwrap_or_default();
                    let note = if was_halted.iter().any(|m| m == model) {
                        format!(
                            "unhalted model {model} for firmware {} (id {}); its failures so far are forgiven",
                            state.firmware_version, r.id
                        )
                    } else {
                        format!(
                            "unhalt of model {model} requested (id {}), but it was not halted; its failures so far are forgiven",
                            r.id
                        )
                    };
                    events.push((reason::UNHALTED, note));
                }
                RequestKind::Promote => {
                    let stage = r.stage.unwrap_or_default().min(last);
                    if stage > state.released_stage {
                        state.released_stage = stage;
                        events.push((
                            reason::PROMOTED,
                            format!(
                                "released stage {} ({}) on request (id {}), before its gate",
                                stage + 1,
                                stage_names.get(stage as usize).map_or("", String::as_str),
                                r.id
                            ),
                        ));
                    }
                }
            }
        }
        state.requests = self.handled.clone();
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + min * 60, 0).expect("valid")
    }

    fn ann(kind: RequestKind, request: &Request) -> BTreeMap<String, String> {
        BTreeMap::from([(
            annotation(kind).to_owned(),
            serde_json::to_string(request).expect("json"),
        )])
    }

    fn previous(requests: Vec<HandledRequest>) -> RolloutStatus {
        RolloutStatus {
            firmware_version: "2.0".into(),
            released_stage: 0,
            halted_models: vec!["BAD".into()],
            requests,
        }
    }

    fn mac(n: u64) -> Mac {
        Mac::from_u64(n).expect("mac")
    }

    #[test]
    fn a_request_is_carried_out_once() {
        let request = Request {
            id: "r1".into(),
            version: "2.0".into(),
            ..Request::default()
        };
        let annotations = ann(RequestKind::Retry, &request);
        let first = take(&annotations, "2.0", Some(&previous(vec![])), t(10));
        assert_eq!(first.new, 1);
        assert_eq!(first.handled[0].at, t(10));
        let again = take(&annotations, "2.0", Some(&previous(first.handled)), t(20));
        assert_eq!(again.new, 0);
        assert_eq!(again.handled.len(), 1);
        assert_eq!(again.handled[0].at, t(10), "the first handling time stays");
    }

    #[test]
    fn requests_about_another_version_or_unreadable_are_ignored() {
        let stale = Request {
            id: "r1".into(),
            version: "1.0".into(),
            ..Request::default()
        };
        assert_eq!(
            take(&ann(RequestKind::Retry, &stale), "2.0", None, t(0)).new,
            0
        );
        let garbage = BTreeMap::from([(ANNOTATION_RETRY.to_owned(), "{not json".to_owned())]);
        assert_eq!(take(&garbage, "2.0", None, t(0)).new, 0);
        let bad_mac = Request {
            id: "r2".into(),
            version: "2.0".into(),
            mac: Some("zz".into()),
            ..Request::default()
        };
        assert_eq!(
            take(&ann(RequestKind::Retry, &bad_mac), "2.0", None, t(0)).new,
            0
        );
    }

    #[test]
    fn a_retry_forgives_matching_failures_recorded_before_it_only() {
        let request = Request {
            id: "r1".into(),
            version: "2.0".into(),
            model: Some("A".into()),
            ..Request::default()
        };
        let r = take(&ann(RequestKind::Retry, &request), "2.0", None, t(10));
        assert!(r.forgives(mac(1), "A", t(5)));
        assert!(r.forgives(mac(1), "A", t(10)));
        assert!(!r.forgives(mac(1), "A", t(11)), "a new failure counts");
        assert!(
            !r.forgives(mac(1), "B", t(5)),
            "another model is not retried"
        );
    }

    #[test]
    fn a_retry_by_mac_forgives_that_phone_only() {
        let request = Request {
            id: "r1".into(),
            version: "2.0".into(),
            mac: Some("00-00-00-00-00-01".into()),
            ..Request::default()
        };
        let r = take(&ann(RequestKind::Retry, &request), "2.0", None, t(10));
        assert!(r.forgives(mac(1), "A", t(5)));
        assert!(!r.forgives(mac(2), "A", t(5)));
    }

    #[test]
    fn an_unhalt_lifts_the_halt_and_records_an_event() {
        let request = Request {
            id: "u1".into(),
            version: "2.0".into(),
            model: Some("BAD".into()),
            ..Request::default()
        };
        let prev = previous(vec![]);
        let r = take(
            &ann(RequestKind::Unhalt, &request),
            "2.0",
            Some(&prev),
            t(10),
        );
        let mut state = r.unhalted(Some(&prev)).expect("state");
        assert!(state.halted_models.is_empty());
        let events = r.finish(&mut state, &["a".into(), "b".into()], &prev.halted_models);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, reason::UNHALTED);
        assert!(
            events[0].1.contains("unhalted model BAD"),
            "{}",
            events[0].1
        );
        assert_eq!(state.requests.len(), 1);
        assert!(r.forgives(mac(1), "BAD", t(9)));
    }

    #[test]
    fn a_promotion_releases_the_stage_once_and_never_past_the_last() {
        let request = Request {
            id: "p1".into(),
            version: "2.0".into(),
            stage: Some(7),
            ..Request::default()
        };
        let prev = previous(vec![]);
        let r = take(
            &ann(RequestKind::Promote, &request),
            "2.0",
            Some(&prev),
            t(10),
        );
        let mut state = prev.clone();
        let events = r.finish(&mut state, &["a".into(), "b".into(), "c".into()], &[]);
        assert_eq!(state.released_stage, 2);
        assert_eq!(events[0].0, reason::PROMOTED);
        // Carried out: the next reconcile does nothing more.
        let again = take(
            &ann(RequestKind::Promote, &request),
            "2.0",
            Some(&state),
            t(20),
        );
        assert_eq!(again.new, 0);
    }

    #[test]
    fn at_most_twenty_requests_are_kept() {
        let many: Vec<HandledRequest> = (0..MAX_RECORDED)
            .map(|i| HandledRequest {
                kind: RequestKind::Retry,
                id: format!("old{i}"),
                at: t(0),
                model: None,
                mac: None,
                stage: None,
            })
            .collect();
        let request = Request {
            id: "new".into(),
            version: "2.0".into(),
            ..Request::default()
        };
        let r = take(
            &ann(RequestKind::Retry, &request),
            "2.0",
            Some(&previous(many)),
            t(10),
        );
        assert_eq!(r.handled.len(), MAX_RECORDED);
        assert_eq!(r.new_ones().len(), 1);
        assert_eq!(r.new_ones()[0].id, "new");
    }
}
