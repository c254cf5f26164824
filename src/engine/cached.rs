//! A collection kept in memory by a service and current from the store's change events, so
//! that a change by any writer is seen and no hot path reads the store (settings,
//! permissions).

use super::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{ChangeEvent, OperationType};
use std::sync::Arc;

/// What a service does with its collection's changes.
pub trait CachedCollection: Send + Sync + 'static {
    /// The collection followed.
    fn collection(&self) -> &'static str;
    /// A document as it is now (inserted, updated or replaced).
    fn put(&self, doc: Document);
    /// A document removed.
    fn forget(&self, id: &str);
    /// A change event's document, with the event's position in the store's order; a
    /// service that also updates itself from its own writes uses it to skip older events.
    fn put_at(&self, doc: Document, _seq: u64) {
        self.put(doc);
    }
    /// A change event's removal, with its position.
    fn forget_at(&self, id: &str, _seq: u64) {
        self.forget(id);
    }
    /// Every event of the feed (of any collection) has been applied up to `seq`.
    fn saw(&self, _seq: u64) {}
    /// Reads the whole collection again (after lost events, or an event without its
    /// document).
    fn reload(&self) -> ReloadFuture<'_>;
}

/// What a reload's future is.
pub type ReloadFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ServiceError>> + Send + 'a>>;

/// Every document of `collection`, with only the `fields` given (all when empty): what a
/// cache reads when it starts or has lost changes.
pub async fn read_all(
    store: &dyn crate::storage::Store,
    collection: &str,
    fields: &[&str],
) -> Result<Vec<Document>, ServiceError> {
    let mut projection = crate::model::query::Projection::all();
    if !fields.is_empty() {
        let mut spec = Document::default();
        for f in fields {
            spec.insert((*f).into(), Value::Number(1.0));
        }
        projection = crate::model::query::Projection::parse(&spec)
            .map_err(|e| ServiceError::internal(e.0))?;
    }
    store
        .find(
            collection,
            crate::storage::FindOptions {
                projection,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ServiceError::from_store(&e))
}

/// Reads `service`'s whole collection again: every document is put, and those of `held`
/// (the ids the service holds now) no longer stored are forgotten, so a removal missed while
/// changes were lost does not linger. What a cache's `reload` calls.
pub async fn reread<T: CachedCollection>(
    service: &T,
    store: &dyn crate::storage::Store,
    held: Vec<String>,
) -> Result<(), ServiceError> {
    let docs = read_all(store, service.collection(), &[]).await?;
    let mut seen = std::collections::HashSet::with_capacity(docs.len());
    for doc in docs {
        if let Some(Value::String(id)) = doc.get("_id") {
            seen.insert(id.clone());
        }
        service.put(doc);
    }
    for id in held.iter().filter(|id| !seen.contains(*id)) {
        service.forget(id);
    }
    Ok(())
}

/// Keeps `service` current from the store's changes through `follower`: each change of its
/// collection applied, and the whole collection read again when changes may have been lost
/// (the feed lagged or lost its place, or an event came without its document).
pub fn watch<T: CachedCollection>(
    service: &Arc<T>,
    store: &dyn crate::storage::Store,
    follower: &super::feed::Follower,
) {
    store.follow_collection(service.collection());
    follower.add_service(service);
}

/// Reads `service`'s collection again, saying so when it cannot.
async fn reload_logged<T: CachedCollection>(service: &T) {
    let collection = service.collection();
    if let Err(err) = service.reload().await {
        tracing::warn!(%collection, error = %err, "collection could not be read again");
    }
}

/// A cached collection follows the store's changes of its own collection.
impl<T: CachedCollection> super::feed::FeedHandler for T {
    fn name(&self) -> &'static str {
        self.collection()
    }

    fn wants(&self, collection: &str) -> bool {
        self.collection() == collection
    }

    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> super::feed::FeedFuture<'a> {
        match (event.operation, &event.full_document, &event.id) {
            (OperationType::Delete, _, Some(Value::String(id))) => self.forget_at(id, event.seq),
            (_, Some(doc), _) => self.put_at((**doc).clone(), event.seq),
            _ => return self.resync(),
        }
        Box::pin(std::future::ready(()))
    }

    fn saw(&self, seq: u64) {
        CachedCollection::saw(self, seq);
    }

    fn resync(&self) -> super::feed::FeedFuture<'_> {
        Box::pin(reload_logged(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Ids(Mutex<Vec<String>>);

    impl CachedCollection for Ids {
        fn collection(&self) -> &'static str {
            "things"
        }
        fn put(&self, doc: Document) {
            if let Some(Value::String(id)) = doc.get("_id") {
                let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        fn forget(&self, id: &str) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|i| i != id);
        }
        fn reload(&self) -> ReloadFuture<'_> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_reread_forgets_what_was_removed_while_changes_were_lost() {
        let dir = std::env::temp_dir().join(format!(
            "comet-cached-{}",
            crate::model::random::random_id()
        ));
        let store = crate::storage::embedded::EmbeddedStore::open(&dir).expect("store opens");
        let doc = super::super::build::doc(serde_json::json!({"_id": "a"})).expect("a document");
        store.insert("things", doc).await.expect("inserted");
        let cache = Ids(Mutex::new(vec!["a".into(), "gone".into()]));
        let held = cache.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        reread(&cache, &*store, held).await.expect("read again");
        assert_eq!(
            *cache.0.lock().unwrap_or_else(|p| p.into_inner()),
            vec!["a".to_owned()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
