//! The call context every chat operation takes: who acts (a user, or nobody: the server
//! itself or a caller not logged in), where the operation's writes are recorded (a DDP
//! method's write fence, or nowhere for REST and the server's own work), and the client's
//! address.
//!
//! Owns only the context; whether the actor may do something is for
//! [`Permissions`](crate::chat::permissions::Permissions) to say.

use crate::engine::fence::{NoFence, WriteRecorder};
use crate::engine::registry::MethodContext;
use crate::engine::ServiceError;
use std::net::IpAddr;

/// Who acts, where the writes are recorded, and from which address.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    user: Option<&'a str>,
    writes: &'a dyn WriteRecorder,
    address: Option<IpAddr>,
}

impl<'a> Call<'a> {
    /// `user` acting, with writes recorded in `writes`.
    pub fn new(user: Option<&'a str>, writes: &'a dyn WriteRecorder) -> Self {
        Self {
            user,
            writes,
            address: None,
        }
    }

    /// A DDP method call: its user, its write fence and its connection's address.
    pub fn method(ctx: &'a MethodContext) -> Self {
        Self {
            user: ctx.user_id.as_deref(),
            writes: ctx,
            address: ctx.client_address(),
        }
    }

    /// `user` acting where no write fence waits (REST, reactions of the server).
    pub fn unfenced(user: Option<&'a str>) -> Self {
        Self::new(user, &NoFence)
    }

    /// The server acting on its own (start-up, scheduled work): no user, no fence.
    pub fn server() -> Call<'static> {
        Call::new(None, &NoFence)
    }

    /// The same call from `address`.
    pub fn from_address(mut self, address: Option<IpAddr>) -> Self {
        self.address = address;
        self
    }

    /// The same fence and address with another actor (a reaction done for a user, such as
    /// joining the default channels when the user is created).
    pub fn as_user<'b>(&'b self, user: Option<&'b str>) -> Call<'b> {
        Call {
            user,
            writes: self.writes,
            address: self.address,
        }
    }

    /// The acting user's id, if a user acts.
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }

    /// The acting user's id; Rocket.Chat's `error-not-allowed` when nobody is logged in.
    pub fn require_user(&self) -> Result<&'a str, ServiceError> {
        self.user.ok_or_else(super::not_allowed)
    }

    /// Records a write of the operation, so a DDP method's `updated` waits for it.
    pub fn record_write(&self, seq: u64) {
        self.writes.record_write(seq);
    }

    /// The client's address, when the call came over a connection.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }
}

impl WriteRecorder for Call<'_> {
    fn record_write(&self, seq: u64) {
        self.writes.record_write(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Last(AtomicU64);
    impl WriteRecorder for Last {
        fn record_write(&self, seq: u64) {
            self.0.store(seq, Ordering::Relaxed);
        }
    }

    #[test]
    fn another_actor_keeps_the_fence_and_the_address() {
        let fence = Last(AtomicU64::new(0));
        let address = Some(IpAddr::from([10, 0, 0, 7]));
        let call = Call::new(Some("u1"), &fence).from_address(address);
        let reaction = call.as_user(Some("u2"));
        reaction.record_write(42);
        assert_eq!(fence.0.load(Ordering::Relaxed), 42);
        assert_eq!(reaction.user(), Some("u2"));
        assert_eq!(reaction.address(), address);
        assert!(Call::server().require_user().is_err());
        assert_eq!(call.require_user().ok(), Some("u1"));
    }
}
