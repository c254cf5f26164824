//! Services: business rules exposed as DDP methods and publications through the [`Registry`].
//!
//! They return domain values and [`ServiceError`]s; only `session` turns them into DDP frames.

pub mod accounts;
pub mod args;
pub mod build;
pub mod builtin;
pub mod cached;
pub mod connections;
pub mod declarative;
pub mod error;
pub mod messages;
pub mod notify;
pub mod operator;
pub mod permissions;
pub mod presence;
pub mod publish;
pub mod rate_limit;
pub mod registry;
pub mod rooms;
pub mod settings;
pub mod streams;
pub mod teams;
pub mod testing;

pub use error::ServiceError;
pub use registry::{MethodContext, Publish, Registry, Subscription};
