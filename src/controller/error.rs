//! The controller's errors, each with a reason from a fixed set (for metrics labels and logs).

/// A failed reconcile or start-up step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the phonefleet CRDs are not installed in this cluster ({0}); install them with `phonefleet crd | kubectl apply -f -` or the Helm chart"
    )]
    CrdsMissing(String),
    #[error("Kubernetes API request failed while {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("rendered-config ConfigMap {name} has an unreadable index: {source}")]
    BadIndex {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("lost leadership: another replica holds the Lease")]
    LostLeadership,
}

impl Error {
    /// A bounded label value for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::CrdsMissing(_) => "CrdsMissing",
            Error::Api { source, .. } => match source {
                kube::Error::Api(e) if e.code == 409 => "Conflict",
                kube::Error::Api(e) if e.code == 403 => "Forbidden",
                kube::Error::Api(e) if e.code == 422 => "Invalid",
                kube::Error::Api(_) => "ApiError",
                _ => "Transport",
            },
            Error::BadIndex { .. } => "BadIndex",
            Error::LostLeadership => "LostLeadership",
        }
    }
}

/// Adds what was being done to a kube error.
pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}
