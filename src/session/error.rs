//! The one place that decides what a failure means for the client: reply to the call,
//! reject the message, or close the connection.

use super::outbound::CloseReason;
use crate::engine::ServiceError;
use crate::model::MeteorError;
use crate::protocol::DecodeError;

/// What the session does about an error.
#[derive(Debug)]
pub enum Disposition<'a> {
    /// Answer the call (`result.error` or `nosub.error`) with this client-safe error.
    ReplyToCall(MeteorError),
    /// Answer with a DDP `error` message.
    RejectMessage {
        reason: &'static str,
        offending: Option<&'a serde_json::Value>,
    },
    /// End the connection.
    Close(CloseReason),
}

/// Maps a handler's failure to what the client may see; our own faults are logged here in
/// full and reach the client only as "Internal server error".
pub fn for_service_error(err: ServiceError, context: &str) -> Disposition<'static> {
    match err {
        ServiceError::Client(e) => {
            tracing::debug!(context, error = %e, "call answered with a client error");
            Disposition::ReplyToCall(e)
        }
        ServiceError::Internal(cause) => {
            tracing::error!(context, %cause, "internal error in handler");
            Disposition::ReplyToCall(MeteorError::internal())
        }
    }
}

/// A handler that panicked is our fault: logged, and reported as an internal error.
pub fn for_panic(context: &str) -> Disposition<'static> {
    tracing::error!(context, "handler panicked");
    Disposition::ReplyToCall(MeteorError::internal())
}

/// A frame that could not be decoded is the peer's fault: logged at debug, rejected.
pub fn for_decode_error(err: &DecodeError) -> Disposition<'_> {
    tracing::debug!(error = %err, "client frame rejected");
    let (reason, offending) = err.reply();
    Disposition::RejectMessage { reason, offending }
}

impl Disposition<'_> {
    /// The client-safe error of a `ReplyToCall`.
    pub fn into_reply(self) -> MeteorError {
        match self {
            Disposition::ReplyToCall(e) => e,
            _ => MeteorError::internal(),
        }
    }
}
