//! The DDP engine: what any Meteor server has, with no chat in it. Methods and publications
//! (the [`Registry`]), `check()`-style argument patterns, the [`bus`] for events that mirror no data, publications over live queries,
//! declarative publications and write rules, the streams hub, the connections list, the
//! write fence, the call limiter, Meteor's built-in handlers and the test handlers.
//!
//! It must not name a Rocket.Chat collection, permission or setting, nor import
//! [`crate::chat`]: the chat services are built on it, never the other way round. Handlers
//! return domain values and [`ServiceError`]s; only `session` turns them into DDP frames.

pub mod args;
pub mod build;
pub mod builtin;
pub mod bus;
pub mod cached;
pub mod connections;
pub mod declarative;
pub mod error;
pub mod feed;
pub mod fence;
pub mod nats;
pub mod publish;
pub mod rate_limit;
pub mod registry;
pub mod streams;
pub mod testing;

pub use error::ServiceError;
pub use fence::{NoFence, WriteRecorder};
pub use registry::{MethodContext, Publish, Registry, Subscription};
