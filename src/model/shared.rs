//! Documents shared between sessions: one copy of the fields and one serialized `added`
//! frame, however many sessions publish them.

use super::SharedDocument;
use std::sync::{Arc, OnceLock};

/// A document addition whose wire frame is built once and shared by every session that
/// emits it unchanged.
#[derive(Debug)]
pub struct SharedAdded {
    pub collection: Arc<str>,
    /// The DDP wire id.
    pub id: Arc<str>,
    pub fields: SharedDocument,
    /// The serialized `added` frame, built by the first session that needs it.
    pub frame: OnceLock<bytes::Bytes>,
}

impl SharedAdded {
    pub fn new(collection: Arc<str>, id: Arc<str>, fields: SharedDocument) -> Arc<Self> {
        Arc::new(Self {
            collection,
            id,
            fields,
            frame: OnceLock::new(),
        })
    }
}
