//! Errors a service hands back to whoever called it.

use crate::model::MeteorError;

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

    /// `400 "Match failed"`, what Meteor's `check()` answers for arguments of the wrong shape.
    pub fn match_failed() -> Self {
        ServiceError::Client(MeteorError::new(400, "Match failed"))
    }
}
