//! Publishing a live query to a subscription, with the initial documents paced by the
//! client's reading speed.
//!
//! A live query hands its current documents over at once; a session's outbound queue is
//! bounded (a client that stops reading is cut). So the initial documents wait here, in
//! the query's own shared copies, and go out as the session's backlog drains: a large
//! result set reaches a reading client whatever its size, while memory per subscriber
//! stays at one pointer per document not yet sent. Changes that arrive meanwhile update
//! what is waiting (a document not yet sent is sent as it is now) or go straight out (a
//! document already sent). It must not know how sessions queue or write frames.

use super::registry::{Publish, Subscription};
use crate::model::shared::SharedAdded;
use crate::observe::{Cursor, ObserveEvent, ObserveHub, ObserveSink};
use crate::storage::StoreError;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// While the session's backlog is below this (or a quarter of its limit, if less), initial
/// documents keep going out.
pub const INITIAL_BACKLOG_BYTES: usize = 256 * 1024;

fn high_water(sub: &Subscription) -> usize {
    INITIAL_BACKLOG_BYTES.min(sub.backlog_limit() / 4)
}

/// Observes `cursor` for `sub` until the subscription ends. Small result sets go out before
/// this returns (`Publish::Ready`); larger ones continue in a task that sends `ready` after
/// the last initial document (`Publish::Manual`).
pub async fn observe_into(
    observe: &Arc<ObserveHub>,
    cursor: Cursor,
    sub: Subscription,
) -> Result<Publish, StoreError> {
    let sink = Arc::new(SubscriptionSink::new(sub.clone()));
    let handle = observe.observe(cursor, sink.clone()).await?;
    if sink.deliver_some() {
        tokio::spawn(async move {
            sub.stopped().await;
            drop(handle);
        });
        return Ok(Publish::Ready);
    }
    tokio::spawn(async move {
        loop {
            sub.drained(high_water(&sub) / 2).await;
            if sub.is_stopped() {
                break;
            }
            if sink.deliver_some() {
                sub.ready();
                break;
            }
        }
        sub.stopped().await;
        drop(handle);
    });
    Ok(Publish::Manual)
}

/// Initial documents not yet sent, in the query's order.
#[derive(Default)]
struct Pending {
    /// True until every initial document is out.
    initial: bool,
    order: VecDeque<Arc<str>>,
    docs: HashMap<Arc<str>, Arc<SharedAdded>, foldhash::fast::RandomState>,
}

/// Forwards a live query's events to a subscription, holding back the initial documents.
pub(crate) struct SubscriptionSink {
    sub: Subscription,
    pending: Mutex<Pending>,
}

impl SubscriptionSink {
    pub(crate) fn new(sub: Subscription) -> Self {
        Self {
            sub,
            pending: Mutex::new(Pending {
                initial: true,
                ..Pending::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends waiting documents until the session's backlog is over the mark; true when
    /// none is left (and live events then go straight out).
    fn deliver_some(&self) -> bool {
        let mut pending = self.lock();
        let high_water = high_water(&self.sub);
        while self.sub.backlog() < high_water {
            if self.sub.is_stopped() {
                return true;
            }
            let Some(id) = pending.order.pop_front() else {
                pending.initial = false;
                return true;
            };
            // An id whose document was removed meanwhile (or sent already) has none.
            if let Some(doc) = pending.docs.remove(&id) {
                self.sub.added_shared(doc);
            }
        }
        false
    }

    fn forward(&self, event: &ObserveEvent) {
        match event {
            ObserveEvent::Added(doc) | ObserveEvent::AddedBefore { doc, .. } => {
                self.sub.added_shared(doc.clone())
            }
            // A publication is unordered, as Meteor's are: the client keeps no order.
            ObserveEvent::MovedBefore { .. } => {}
            ObserveEvent::Changed {
                fields,
                cleared,
                doc,
                ..
            } => self
                .sub
                .changed_shared(doc, fields.clone(), cleared.clone()),
            ObserveEvent::Removed { collection, id } => self.sub.removed_wire(collection, id),
        }
    }
}

impl ObserveSink for SubscriptionSink {
    fn failed(&self, error: &StoreError) {
        self.sub
            .error(super::error::ServiceError::from_store(error).client_view());
    }

    fn event(&self, event: &ObserveEvent) -> bool {
        if self.sub.is_stopped() {
            return false;
        }
        // Held while forwarding, so that a document leaves the waiting list and reaches
        // the session in one step with respect to the events that concern it.
        let mut pending = self.lock();
        if pending.initial {
            match event {
                ObserveEvent::Added(doc) | ObserveEvent::AddedBefore { doc, .. } => {
                    if pending.docs.insert(doc.id.clone(), doc.clone()).is_none() {
                        pending.order.push_back(doc.id.clone());
                    }
                    return true;
                }
                ObserveEvent::Changed { id, doc, .. } if pending.docs.contains_key(id) => {
                    pending.docs.insert(id.clone(), doc.clone());
                    return true;
                }
                ObserveEvent::Removed { id, .. } if pending.docs.contains_key(id) => {
                    pending.docs.remove(id);
                    return true;
                }
                _ => {}
            }
        }
        self.forward(event);
        drop(pending);
        true
    }
}
