//! Storage errors: what callers act on, with MongoDB's wording where clients know it.

use crate::model::query::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A document MongoDB would refuse (field names, size, `_id`).
    #[error("{0}")]
    InvalidDocument(String),
    /// A unique key already taken (MongoDB's E11000).
    #[error("{0}")]
    DuplicateKey(String),
    /// A selector, sort, projection or update that cannot be used.
    #[error("{0}")]
    InvalidQuery(#[from] QueryError),
    /// A collection name that cannot be used.
    #[error("Invalid collection name: {0}")]
    InvalidCollection(String),
    /// The store cannot serve (read-only, disk full, corrupt): the write did not happen.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A resume token older than what the change log keeps: resync from a fresh query.
    #[error("change log no longer holds changes after {0}")]
    ResumeLost(u64),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
