//! Persistence and the change feed.
//!
//! Owns the [`ChangeEvent`] type every change source produces (the embedded store's change
//! log today; MongoDB change streams and the oplog next) and the embedded store itself. It
//! must not know about DDP, sessions or publications. See `protocol-spec/storage.md`.

pub mod embedded;
pub mod error;
pub mod normalize;

use crate::model::{Document, Value};
use std::sync::Arc;

pub use embedded::{EmbeddedStore, FindOptions, UpdateAck, WriteAck};
pub use error::StoreError;

/// What happened, in the vocabulary of MongoDB's change streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationType {
    Insert,
    Update,
    Replace,
    Delete,
    Drop,
    Rename,
    DropDatabase,
    Invalidate,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Insert => "insert",
            OperationType::Update => "update",
            OperationType::Replace => "replace",
            OperationType::Delete => "delete",
            OperationType::Drop => "drop",
            OperationType::Rename => "rename",
            OperationType::DropDatabase => "dropDatabase",
            OperationType::Invalidate => "invalidate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insert" => OperationType::Insert,
            "update" => OperationType::Update,
            "replace" => OperationType::Replace,
            "delete" => OperationType::Delete,
            "drop" => OperationType::Drop,
            "rename" => OperationType::Rename,
            "dropDatabase" => OperationType::DropDatabase,
            "invalidate" => OperationType::Invalidate,
            _ => return None,
        })
    }
}

/// `updateDescription` of an update event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateDescription {
    pub updated_fields: Document,
    pub removed_fields: Vec<String>,
}

/// One change, shaped like a MongoDB change-stream event.
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    /// The resume token: the change log's sequence number.
    pub seq: u64,
    pub operation: OperationType,
    pub collection: Arc<str>,
    /// `documentKey._id` (absent for collection-level events).
    pub id: Option<Value>,
    /// The document after the change, when there is one.
    pub full_document: Option<Arc<Document>>,
    pub update_description: Option<UpdateDescription>,
    /// For `rename`: the new collection name.
    pub rename_to: Option<Arc<str>>,
}

impl ChangeEvent {
    /// A document-level event (insert, update, replace, delete).
    pub fn for_document(
        seq: u64,
        operation: OperationType,
        collection: Arc<str>,
        id: Option<Value>,
        full_document: Option<Arc<Document>>,
        update_description: Option<UpdateDescription>,
    ) -> Self {
        Self {
            seq,
            operation,
            collection,
            id,
            full_document,
            update_description,
            rename_to: None,
        }
    }
}
