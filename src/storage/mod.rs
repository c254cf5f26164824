//! Persistence and the change feed.
//!
//! Owns the [`Store`] trait, the [`ChangeEvent`] type every change source produces (the
//! embedded store's change log, MongoDB change streams, the oplog) and both backends. It
//! must not know about DDP, sessions or publications. See `protocol-spec/storage.md`.

pub mod bson_value;
pub mod embedded;
pub mod error;
pub mod files;
pub mod index_key;
pub mod mongo;
pub mod normalize;

use crate::model::query::{Projection, Selector, Sort, Update};
use crate::model::{Document, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast;

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use mongo::{MongoOptions, MongoStore};

/// What `find` reads.
#[derive(Clone, Debug)]
pub struct FindOptions {
    pub selector: Selector,
    pub sort: Sort,
    pub skip: usize,
    pub limit: Option<usize>,
    pub projection: Projection,
}

impl Default for FindOptions {
    fn default() -> Self {
        Self {
            selector: Selector::everything(),
            sort: Sort::default(),
            skip: 0,
            limit: None,
            projection: Projection::all(),
        }
    }
}

/// An acknowledged insert.
#[derive(Clone, Debug)]
pub struct WriteAck {
    pub id: Value,
    /// Sequence number of the change: wait for it to be observed before `updated`.
    pub seq: u64,
}

/// An acknowledged update or remove.
#[derive(Clone, Debug, Default)]
pub struct UpdateAck {
    pub matched: u64,
    pub modified: u64,
    pub upserted_id: Option<Value>,
    /// Highest sequence number written (0 when nothing changed).
    pub seq: u64,
}

/// How an update applies: to the first match or all (`multi`), inserting when nothing
/// matched (`upsert`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    pub multi: bool,
    pub upsert: bool,
}

/// How a remove applies: to the first match or all (`multi`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    pub multi: bool,
}

/// One write of a [`Store::write_all`] batch.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Insert {
        collection: String,
        doc: Document,
    },
    Update {
        collection: String,
        selector: Selector,
        update: Update,
        options: UpdateOptions,
    },
    Remove {
        collection: String,
        selector: Selector,
        options: RemoveOptions,
    },
}

/// What one operation of a batch did.
#[derive(Clone, Debug)]
pub enum WriteOutcome {
    Inserted(WriteAck),
    Changed(UpdateAck),
}

impl WriteOutcome {
    /// The sequence number of the operation's last change (0 when it changed nothing).
    pub fn seq(&self) -> u64 {
        match self {
            WriteOutcome::Inserted(ack) => ack.seq,
            WriteOutcome::Changed(ack) => ack.seq,
        }
    }
}

/// What a store operation returns: boxed so that [`Store`] can be used as `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A document store with a change feed: what services write to and live queries read from.
///
/// Every acknowledged write reports the sequence number of its last change; the change feed
/// delivers every change in sequence order, whoever wrote it. A receiver that lags has lost
/// events and must re-read.
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `mongo`.
    fn kind(&self) -> &'static str;
    /// Inserts one document; a missing `_id` gets a fresh random id.
    fn insert(&self, collection: &str, doc: Document) -> StoreFuture<'_, WriteAck>;
    /// Updates what `selector` matches (the first only unless `multi`), inserting one when
    /// `upsert` and nothing matched.
    fn update(
        &self,
        collection: &str,
        selector: Selector,
        update: Update,
        options: UpdateOptions,
    ) -> StoreFuture<'_, UpdateAck>;
    /// Removes what `selector` matches (the first only unless `multi`).
    fn remove(
        &self,
        collection: &str,
        selector: Selector,
        options: RemoveOptions,
    ) -> StoreFuture<'_, UpdateAck>;
    /// Applies `ops` in order, stopping at the first that fails. The embedded store makes
    /// them one transaction (all or none, one commit); MongoDB applies them one after
    /// another, and those before a failure stay.
    fn write_all(&self, ops: Vec<WriteOp>) -> StoreFuture<'_, Vec<WriteOutcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(match op {
                    WriteOp::Insert { collection, doc } => {
                        WriteOutcome::Inserted(self.insert(&collection, doc).await?)
                    }
                    WriteOp::Update {
                        collection,
                        selector,
                        update,
                        options,
                    } => WriteOutcome::Changed(
                        self.update(&collection, selector, update, options).await?,
                    ),
                    WriteOp::Remove {
                        collection,
                        selector,
                        options,
                    } => WriteOutcome::Changed(self.remove(&collection, selector, options).await?),
                });
            }
            Ok(outcomes)
        })
    }
    /// Reads documents: selector, sort (ties by `_id`), skip, limit, projection.
    fn find(&self, collection: &str, options: FindOptions) -> StoreFuture<'_, Vec<Document>>;
    /// Declares an index (idempotent): queries that filter or sort on its fields use it.
    fn ensure_index(&self, collection: &str, keys: Sort) -> StoreFuture<'_, ()>;
    /// Every change from now on, in order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>>;
    /// The sequence number of the last change delivered to subscribers.
    fn last_seq(&self) -> u64;
    /// Tells the change source that live queries read `collection`, for sources that filter
    /// by namespace. The embedded store reports every collection anyway.
    fn follow_collection(&self, _collection: &str) {}

    /// The MongoDB database behind the store, for what keeps its own collections there
    /// (GridFS); none for the embedded store.
    fn mongo_database(&self) -> Option<mongodb::Database> {
        None
    }
    /// Whether the change feed follows its source right now (a server that went away, a
    /// stream that keeps failing: no). The embedded store's feed always does.
    fn is_following(&self) -> bool {
        true
    }
    /// Whether several change events may carry one sequence number (MongoDB's cluster time:
    /// a transaction's writes). Then an event at `n` does not mean every change up to `n`
    /// was seen; a `progress` event at `n` does. The embedded store numbers each change.
    fn events_share_positions(&self) -> bool {
        false
    }
}

/// Whether `name` can name a collection in every backend: 1 to 120 letters, digits, `_`,
/// `-` or `.`, not starting with `system.` or `$`.
pub fn valid_collection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 120
        && !name.starts_with('$')
        && !name.starts_with("system.")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Gives `doc` a fresh Meteor-style string `_id` (first) when it has none; returns its `_id`.
/// Both backends insert and upsert through it, so ids look alike whichever store holds them.
pub(crate) fn ensure_id(doc: &mut Document) -> Value {
    if let Some(id) = doc.get("_id") {
        return id.clone();
    }
    let id = Value::String(crate::model::random::random_id());
    doc.shift_insert(0, "_id".into(), id.clone());
    id
}

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
    /// Not a change: the source has seen everything up to the event's `seq` (a change
    /// stream's empty batch and its `postBatchResumeToken`), so writes up to there whose
    /// changes never came (filtered, or to collections nobody follows) are past.
    Progress,
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
            OperationType::Progress => "progress",
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
    /// When comet received or made the event: how far live queries lag is measured from it.
    pub received: std::time::Instant,
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
            received: std::time::Instant::now(),
        }
    }
}
