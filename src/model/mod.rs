//! The document model: EJSON values, document ids, Meteor's random ids and client-safe errors.
//!
//! Everything here is pure data and functions: no tokio, no I/O, no other layer.

pub mod id;
pub mod meteor_error;
pub mod query;
pub mod random;
pub mod secret;
pub mod shared;
pub mod value;

pub use id::{id_from_wire, id_to_wire};
pub use meteor_error::{ErrorCode, MeteorError};
pub use value::{Document, EjsonError, ObjectId, SharedDocument, Value};
