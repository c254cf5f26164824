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
}

/// The follower: subscribed when made, so nothing written after that is missed; handlers
/// are added as the services start; [`Follower::start`] runs it.
pub struct Follower {
    feed: Mutex<Option<broadcast::Receiver<Arc<ChangeEvent>>>>,
    handlers: Mutex<Handlers>,
}

/// The services followed (weakly: a service dropped gets nothing more), and those the
/// follower itself keeps alive (nothing else holds them).
#[derive(Default, Clone)]
struct Handlers {
    followed: Vec<Weak<dyn FeedHandler>>,
    kept: Vec<Arc<dyn FeedHandler>>,
}

impl Follower {
    /// A follower of `store`'s feed from now on.
    pub fn new(store: &dyn Store) -> Arc<Self> {
        Arc::new(Self {
            feed: Mutex::new(Some(store.subscribe())),
            handlers: Mutex::new(Handlers::default()),
        })
    }

    /// Adds `service` after those added before, held weakly: once it is dropped it gets
    /// nothing more.
    pub fn add_service<T: FeedHandler>(&self, service: &Arc<T>) {
        let weak: Weak<dyn FeedHandler> = Arc::downgrade(service) as Weak<dyn FeedHandler>;
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .followed
            .push(weak);
    }

    /// Adds `service` and keeps it alive for as long as the store's feed runs (a service
    /// nothing else holds).
    pub fn add_kept<T: FeedHandler>(&self, service: Arc<T>) {
        self.add_service(&service);
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept
            .push(service);
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
async fn follow(handlers: Handlers, mut feed: broadcast::Receiver<Arc<ChangeEvent>>) {
    // The services alive for this change, upgraded once per change (the buffer is reused).
    let mut live: Vec<Arc<dyn FeedHandler>> = Vec::with_capacity(handlers.followed.len());
    loop {
        let event = feed.recv().await;
        live.clear();
        live.extend(handlers.followed.iter().filter_map(Weak::upgrade));
        if live.is_empty() {
            return;
        }
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
                resync(&live).await;
            }
            Ok(event) => {
                for handler in &live {
                    if handler.wants(&event.collection) {
                        handler.apply(&event).await;
                    }
                }
                for handler in &live {
                    handler.saw(event.seq);
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                tracing::warn!(
                    lost,
                    "the change feed lagged: every service reads its state again"
                );
                resync(&live).await;
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

    #[tokio::test]
    async fn a_lagging_feed_makes_every_service_read_again_and_then_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        let recorder = Arc::new(Recorder::default());
        let handlers = Handlers {
            followed: vec![Arc::downgrade(&recorder) as Weak<dyn FeedHandler>],
            kept: Vec::new(),
        };
        let event = |id: &str| {
            Arc::new(ChangeEvent::for_document(
                1,
                OperationType::Insert,
                "wanted".into(),
                Some(Value::from(id)),
                Some(Arc::new(doc(id))),
                None,
            ))
        };
        // Four changes into a feed that holds two: the first two are lost.
        for id in ["lost1", "lost2", "kept1", "kept2"] {
            tx.send(event(id)).expect("a receiver");
        }
        let task = tokio::spawn(follow(handlers, rx));
        drop(tx);
        task.await.expect("the follower ends with the feed");
        assert_eq!(
            *recorder.log.lock().unwrap_or_else(|p| p.into_inner()),
            vec![
                "resync".to_owned(),
                "wanted:kept1".to_owned(),
                "wanted:kept2".to_owned()
            ]
        );
    }
}
