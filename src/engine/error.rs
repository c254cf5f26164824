//! Errors a service hands back to whoever called it.

use crate::model::MeteorError;
use crate::storage::StoreError;

/// A method's or publication's failure.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Meant for the client, sent as is.
    #[error("{0}")]
    Client(MeteorError),
    /// Our own fault: logged in full, the client sees only "Internal server error".
    #[error("internal: {0}")]
    Internal(String),
}

impl From<MeteorError> for ServiceError {
    fn from(e: MeteorError) -> Self {
        ServiceError::Client(e)
    }
}

impl ServiceError {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ServiceError::Internal(cause.to_string())
    }

    /// What a store's failure means to the caller: refused documents and queries are the
    /// client's (409 / 400), an unreachable database is 503 "Database unavailable" (its own
    /// words go to the log), anything else is ours. The one mapping every service uses.
    pub fn from_store(err: &StoreError) -> Self {
        match err {
            StoreError::InvalidDocument(m) | StoreError::DuplicateKey(m) => {
                ServiceError::Client(MeteorError::new(409, m.clone()))
            }
            StoreError::InvalidQuery(q) => ServiceError::Client(MeteorError::new(400, q.0.clone())),
            StoreError::Unavailable(detail) => {
                tracing::warn!(cause = %detail, "store unavailable");
                ServiceError::Client(MeteorError::new(503, "Database unavailable"))
            }
            other => ServiceError::internal(other),
        }
    }

    /// The error a client is shown for this one (ours become "Internal server error").
    pub fn client_view(&self) -> MeteorError {
        match self {
            ServiceError::Client(e) => e.clone(),
            ServiceError::Internal(_) => MeteorError::internal(),
        }
    }

    /// `400 "Match failed"`, what Meteor's `check()` answers for arguments of the wrong shape.
    pub fn match_failed() -> Self {
        ServiceError::Client(MeteorError::new(400, "Match failed"))
    }
}
