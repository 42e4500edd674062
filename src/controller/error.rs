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
    #[error("rendered-config ConfigMap {name} holds an unreadable decision: {source}")]
    BadDecision {
        name: String,
        #[source]
        source: crate::decision::DecisionError,
    },
    #[error("lost leadership: another replica holds the Lease")]
    LostLeadership,
}

/// The bounded class of a failed reconcile: the `reason` label of the error counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    CrdsMissing,
    Conflict,
    Forbidden,
    Invalid,
    ApiError,
    Transport,
    BadIndex,
    LostLeadership,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::CrdsMissing,
        ErrorClass::Conflict,
        ErrorClass::Forbidden,
        ErrorClass::Invalid,
        ErrorClass::ApiError,
        ErrorClass::Transport,
        ErrorClass::BadIndex,
        ErrorClass::LostLeadership,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::CrdsMissing => "CrdsMissing",
            ErrorClass::Conflict => "Conflict",
            ErrorClass::Forbidden => "Forbidden",
            ErrorClass::Invalid => "Invalid",
            ErrorClass::ApiError => "ApiError",
            ErrorClass::Transport => "Transport",
            ErrorClass::BadIndex => "BadIndex",
            ErrorClass::LostLeadership => "LostLeadership",
        }
    }
}

impl Error {
    /// The bounded class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::CrdsMissing(_) => ErrorClass::CrdsMissing,
            Error::Api { source, .. } => match source {
                kube::Error::Api(e) if e.code == 409 => ErrorClass::Conflict,
                kube::Error::Api(e) if e.code == 403 => ErrorClass::Forbidden,
                kube::Error::Api(e) if e.code == 422 => ErrorClass::Invalid,
                kube::Error::Api(_) => ErrorClass::ApiError,
                _ => ErrorClass::Transport,
            },
            Error::BadIndex { .. } | Error::BadDecision { .. } => ErrorClass::BadIndex,
            Error::LostLeadership => ErrorClass::LostLeadership,
        }
    }

    /// A bounded label value for this error.
    pub fn reason(&self) -> &'static str {
        self.class().as_str()
    }
}

/// Adds what was being done to a kube error.
pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}
