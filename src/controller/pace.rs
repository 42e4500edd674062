//! Paces the reconciles that progress (and the controller's own child writes) trigger.
//!
//! During a rollout the provisioning server writes progress continuously, and every write
//! would wake a full reconcile of the schedule (select, plan, encode, hash every phone). A
//! reconcile of a million phones takes about a second, so back-to-back reconciles would keep
//! the controller busy for the whole rollout. Instead, a child-triggered reconcile of a schedule
//! waits until `FACTOR` times its last reconcile's duration has passed since that reconcile
//! ended: the controller spends at most 1/(1+`FACTOR`) of its time on progress, and the events
//! in between are batched into one reconcile. A small fleet reconciles in milliseconds, so it
//! still reacts at once. Spec and site changes are never delayed (they do not pass here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;

use crate::api::PhoneSchedule;

/// How many times its last reconcile's duration a schedule waits before the next
/// child-triggered one.
pub const FACTOR: u32 = 4;
/// The longest a child-triggered reconcile waits, however slow the last one was.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// When each schedule's last reconcile ended and how long it took.
#[derive(Clone, Default)]
pub struct Pace {
    last: Arc<Mutex<HashMap<ObjectRef<PhoneSchedule>, Finished>>>,
}

/// When a reconcile ended, and how long it took.
type Finished = (Instant, Duration);

impl Pace {
    /// Records a finished reconcile.
    pub fn finished(&self, schedule: ObjectRef<PhoneSchedule>, ended: Instant, took: Duration) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(schedule, (ended, took));
    }

    /// When a child-triggered reconcile of `schedule` may run.
    fn due(&self, schedule: &ObjectRef<PhoneSchedule>) -> Option<Instant> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.get(schedule).map(|&(ended, took)| due(ended, took))
    }
}

/// The earliest start of the next child-triggered reconcile after one that ended at `ended`
/// and took `took`.
pub fn due(ended: Instant, took: Duration) -> Instant {
    ended + (took * FACTOR).min(MAX_WAIT)
}

/// Passes `triggers` on, holding back each schedule's until it is due (see the module
/// documentation); triggers of a schedule already held back are merged into the held one.
pub fn paced(
    triggers: impl Stream<Item = ObjectRef<PhoneSchedule>> + Send + 'static,
    pace: Pace,
) -> impl Stream<Item = ObjectRef<PhoneSchedule>> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut triggers = std::pin::pin!(triggers);
        let mut held: HashMap<ObjectRef<PhoneSchedule>, Instant> = HashMap::new();
        loop {
            let next = held.values().min().copied();
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                trigger = triggers.next() => {
                    let Some(schedule) = trigger else { break };
                    if held.contains_key(&schedule) {
                        continue;
                    }
                    match pace.due(&schedule) {
                        Some(at) if at > Instant::now() => {
                            held.insert(schedule, at);
                        }
                        _ => {
                            if tx.unbounded_send(schedule).is_err() {
                                break;
                            }
                        }
                    }
                }
                () = wake => {
                    let now = Instant::now();
                    let ready: Vec<_> = held
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(s, _)| s.clone())
                        .collect();
                    for schedule in ready {
                        held.remove(&schedule);
                        if tx.unbounded_send(schedule).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_reconcile_spaces_the_next_child_triggered_one() {
        let ended = Instant::now();
        assert_eq!(
            due(ended, Duration::from_millis(500)),
            ended + Duration::from_secs(2)
        );
        assert_eq!(due(ended, Duration::from_secs(60)), ended + MAX_WAIT);
        assert_eq!(due(ended, Duration::ZERO), ended);
    }

    #[tokio::test]
    async fn triggers_of_a_busy_schedule_are_merged_into_one() {
        let pace = Pace::default();
        let schedule = ObjectRef::<PhoneSchedule>::new("fw").within("voice");
        pace.finished(schedule.clone(), Instant::now(), Duration::from_millis(25));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = paced(rx, pace.clone());
        for _ in 0..100 {
            tx.unbounded_send(schedule.clone()).unwrap();
        }
        assert_eq!(out.next().await, Some(schedule), "one reconcile, when due");
        // A schedule that never reconciled passes at once, and is next: the 99 other
        // triggers were merged into the first.
        let other = ObjectRef::<PhoneSchedule>::new("other").within("voice");
        tx.unbounded_send(other.clone()).unwrap();
        assert_eq!(out.next().await, Some(other));
    }
}
