//! MongoDB's query language over EJSON documents: matcher, sorter, projector and update
//! operators, with MongoDB's semantics and error texts.
//!
//! Used by the embedded store, the observe engine and declarative publications, so that all
//! three agree on what a selector means. Pure functions: no I/O, no other layer.
//! See `protocol-spec/query.md`.

pub mod compare;
pub mod matcher;
pub mod path;
pub mod projection;
pub mod sort;
pub mod update;

pub use matcher::Selector;
pub use projection::Projection;
pub use sort::Sort;
pub use update::Update;

/// A query or update that MongoDB would refuse, with MongoDB's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl QueryError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
