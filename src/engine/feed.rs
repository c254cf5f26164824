//! The one follower of the store's change feed for the services: every change, in the
//! store's order, handed to each service that reads its collection (caches first, then what
//! turns changes into stream events, in the order the services were added), and one policy
//! for a feed that lagged or lost its place: every service reads its state again, nothing
//! is silently dropped.
//!
//! Owns the [`FeedHandler`] seam and the [`Follower`] task. It must not know what a change
//! means to any service, and it never writes.

use crate::storage::{ChangeEvent, OperationType, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

/// What a handler's future is.
pub type FeedFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A service that follows the store's changes.
pub trait FeedHandler: Send + Sync + 'static {
    /// For the log.
    fn name(&self) -> &'static str;
    /// Whether changes of `collection` concern it.
    fn wants(&self, collection: &str) -> bool;
    /// One change of a collection it wants, in the store's order.
    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> FeedFuture<'a>;
    /// Every change up to `seq` (of any collection) has been handed out.
    fn saw(&self, _seq: u64) {}
    /// Changes may have been lost (the feed lagged, or the source lost its place): read
    /// the state again, and tell clients what they may have missed.
    fn resync(&self) -> FeedFuture<'_>;
    /// Whether the service is still there (a follower of none stops).
    fn alive(&self) -> bool {
        true
    }
}

/// A service followed without being kept alive by the follower.
pub struct Weakly<T>(pub Weak<T>);

impl<T: FeedHandler> FeedHandler for Weakly<T> {
    fn name(&self) -> &'static str {
        self.0.upgrade().map_or("gone", |h| h.name())
    }
    fn wants(&self, collection: &str) -> bool {
        self.0.upgrade().is_some_and(|h| h.wants(collection))
    }
    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> FeedFuture<'a> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            if let Some(inner) = inner {
                inner.apply(event).await;
            }
        })
    }
    fn saw(&self, seq: u64) {
        if let Some(inner) = self.0.upgrade() {
            inner.saw(seq);
        }
    }
    fn resync(&self) -> FeedFuture<'_> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            if let Some(inner) = inner {
                inner.resync().await;
            }
        })
    }
    fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The follower: subscribed when made, so nothing written after that is missed; handlers
/// are added as the services start; [`Follower::start`] runs it.
pub struct Follower {
    feed: Mutex<Option<broadcast::Receiver<Arc<ChangeEvent>>>>,
    handlers: Mutex<Vec<Arc<dyn FeedHandler>>>,
}

impl Follower {
    /// A follower of `store`'s feed from now on.
    pub fn new(store: &dyn Store) -> Arc<Self> {
        Arc::new(Self {
            feed: Mutex::new(Some(store.subscribe())),
            handlers: Mutex::new(Vec::new()),
        })
    }

    /// Adds `handler` after those added before.
    pub fn add(&self, handler: Arc<dyn FeedHandler>) {
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handler);
    }

    /// Adds `service`, held weakly: once it is dropped it gets nothing more.
    pub fn add_service<T: FeedHandler>(&self, service: &Arc<T>) {
        self.add(Arc::new(Weakly(Arc::downgrade(service))));
    }

    /// Starts handing out changes to the handlers added so far (changes written since
    /// [`Follower::new`] come first). A second call does nothing.
    pub fn start(&self) {
        let Some(feed) = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let handlers = self
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio::spawn(follow(handlers, feed));
    }
}

/// Hands out changes until the feed closes or every handler is gone.
async fn follow(
    handlers: Vec<Arc<dyn FeedHandler>>,
    mut feed: broadcast::Receiver<Arc<ChangeEvent>>,
) {
    loop {
        let event = feed.recv().await;
        if !handlers.iter().any(|h| h.alive()) {
            return;
        }
        let live = &handlers;
        match event {
            Ok(event)
                if matches!(
                    event.operation,
                    OperationType::Invalidate | OperationType::DropDatabase
                ) =>
            {
                tracing::warn!(
                    "the change feed lost its place: every service reads its state again"
                );
                resync(live).await;
            }
            Ok(event) => {
                for handler in live {
                    if handler.wants(&event.collection) {
                        handler.apply(&event).await;
                    }
                }
                for handler in live {
                    handler.saw(event.seq);
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                tracing::warn!(
                    lost,
                    "the change feed lagged: every service reads its state again"
                );
                resync(live).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn resync(handlers: &[Arc<dyn FeedHandler>]) {
    for handler in handlers {
        tracing::debug!(service = handler.name(), "reading state again");
        handler.resync().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Document, Value};
    use crate::storage::EmbeddedStore;

    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
    }

    impl FeedHandler for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn wants(&self, collection: &str) -> bool {
            collection == "wanted"
        }
        fn apply<'a>(&'a self, event: &'a ChangeEvent) -> FeedFuture<'a> {
            let id = match &event.id {
                Some(Value::String(id)) => id.clone(),
                _ => String::new(),
            };
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{}:{id}", event.collection));
            Box::pin(std::future::ready(()))
        }
        fn resync(&self) -> FeedFuture<'_> {
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("resync".into());
            Box::pin(std::future::ready(()))
        }
    }

    fn doc(id: &str) -> Document {
        let mut d = Document::default();
        d.insert("_id".into(), Value::from(id));
        d
    }

    #[tokio::test]
    async fn changes_written_before_the_start_arrive_in_order_and_only_where_wanted() {
        let dir =
            std::env::temp_dir().join(format!("comet-feed-{}", crate::model::random::random_id()));
        let store = EmbeddedStore::open(&dir).expect("store opens");
        let follower = Follower::new(&*store);
        let recorder = Arc::new(Recorder::default());
        follower.add_service(&recorder);
        store.insert("wanted", doc("a")).await.expect("insert");
        store.insert("other", doc("b")).await.expect("insert");
        follower.start();
        store.insert("wanted", doc("c")).await.expect("insert");
        for _ in 0..100 {
            if recorder.log.lock().unwrap_or_else(|p| p.into_inner()).len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            *recorder.log.lock().unwrap_or_else(|p| p.into_inner()),
            vec!["wanted:a".to_owned(), "wanted:c".to_owned()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
