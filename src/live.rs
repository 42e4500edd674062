//! Live views of one PhoneSchedule through a watch, not a GET every few hundred milliseconds:
//! the API server pushes each change of the object, so a quiet rollout costs no request.

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::PhoneSchedule;

/// Every version of the schedule `name`, the current one first, then one per change. Watch
/// errors are retried with backoff (as `kubectl get -w` does after a disconnect).
pub fn schedule_versions(
    api: Api<PhoneSchedule>,
    name: &str,
) -> impl Stream<Item = Result<PhoneSchedule, watcher::Error>> + Send + 'static {
    watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects()
}

/// Waits until `done` holds for a version of the schedule, or `timeout` passes (`Ok(None)`).
pub async fn until<T>(
    api: Api<PhoneSchedule>,
    name: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut(&PhoneSchedule) -> Option<T>,
) -> Result<Option<T>, watcher::Error> {
    let stream = schedule_versions(api, name);
    futures::pin_mut!(stream);
    let wait = async {
        while let Some(item) = stream.next().await {
            if let Some(found) = done(&item?) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => Ok(None),
    }
}
