//! Documents shared between sessions: one copy of the fields and one serialized `added`
//! frame, however many sessions publish them.

use super::SharedDocument;
use std::sync::{Arc, Mutex, Weak};

/// A document addition whose wire frame is built once and shared by every session that
/// emits it while another still holds it.
#[derive(Debug)]
pub struct SharedAdded {
    pub collection: Arc<str>,
    /// The DDP wire id.
    pub id: Arc<str>,
    pub fields: SharedDocument,
    /// The serialized `added` frame for as long as some outbound queue holds it. Kept weakly:
    /// once every session has written it the text is freed, so a large result set is not
    /// held twice (as documents and as text) after it went out.
    frame: Mutex<Option<Weak<[u8]>>>,
}

/// The owner of a shared frame's bytes (lets `Bytes` point into an `Arc` kept weakly here).
struct FrameText(Arc<[u8]>);

impl AsRef<[u8]> for FrameText {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl SharedAdded {
    pub fn new(collection: Arc<str>, id: Arc<str>, fields: SharedDocument) -> Arc<Self> {
        Arc::new(Self {
            collection,
            id,
            fields,
            frame: Mutex::new(None),
        })
    }

    /// The `added` frame's bytes: the ones another session still holds, or new ones from
    /// `build`.
    pub fn frame(&self, build: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        let mut cached = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let text = match cached.as_ref().and_then(Weak::upgrade) {
            Some(text) => text,
            None => {
                let text: Arc<[u8]> = Arc::from(&build()[..]);
                *cached = Some(Arc::downgrade(&text));
                text
            }
        };
        drop(cached);
        bytes::Bytes::from_owner(FrameText(text))
    }
}

/// One event of a Rocket.Chat stream, sent to every listener: its frame is serialized by the
/// first session that sends it and shared by the rest.
#[derive(Debug)]
pub struct StreamEvent {
    /// `stream-<name>`.
    pub collection: Arc<str>,
    pub event: Arc<str>,
    /// The event's arguments; `None` for the `added` document a `useCollection` subscriber
    /// gets before `ready`.
    pub args: Option<Vec<super::Value>>,
    /// For `stream-user-presence`: the watched user, sent as the frame's id and its `uid`
    /// field (Rocket.Chat's presence frame) instead of the stream's usual id `"id"`.
    pub presence_of: Option<Arc<str>>,
    frame: std::sync::OnceLock<bytes::Bytes>,
}

impl StreamEvent {
    pub fn new(
        collection: Arc<str>,
        event: Arc<str>,
        args: Option<Vec<super::Value>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            collection,
            event,
            args,
            presence_of: None,
            frame: std::sync::OnceLock::new(),
        })
    }

    /// A status change of user `uid` for its presence watchers.
    pub fn presence(collection: Arc<str>, uid: Arc<str>, args: Vec<super::Value>) -> Arc<Self> {
        Arc::new(Self {
            collection,
            event: uid.clone(),
            args: Some(args),
            presence_of: Some(uid),
            frame: std::sync::OnceLock::new(),
        })
    }

    /// The frame's bytes, built by `build` the first time.
    pub fn frame(&self, build: impl FnOnce(&Self) -> bytes::Bytes) -> bytes::Bytes {
        self.frame.get_or_init(|| build(self)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_shared_while_held_and_freed_after() {
        let doc = SharedAdded::new("c".into(), "x".into(), Arc::default());
        let mut builds = 0;
        let first = doc.frame(|| {
            builds += 1;
            bytes::Bytes::from_static(b"frame")
        });
        let again = doc.frame(|| {
            builds += 1;
            bytes::Bytes::from_static(b"other")
        });
        assert_eq!(
            (builds, &again[..]),
            (1, &b"frame"[..]),
            "shared while held"
        );
        assert_eq!(first.as_ptr(), again.as_ptr());
        drop((first, again));
        let rebuilt = doc.frame(|| {
            builds += 1;
            bytes::Bytes::from_static(b"new")
        });
        assert_eq!(
            (builds, &rebuilt[..]),
            (2, &b"new"[..]),
            "freed once no one holds it"
        );
    }

    #[test]
    fn a_stream_event_is_serialized_once_for_every_receiver() {
        let event = StreamEvent::new("stream-x".into(), "e".into(), Some(vec![]));
        let mut builds = 0;
        let a = event.frame(|_| {
            builds += 1;
            bytes::Bytes::from_static(b"frame")
        });
        let b = event.frame(|_| {
            builds += 1;
            bytes::Bytes::from_static(b"other")
        });
        assert_eq!((builds, a.as_ptr()), (1, b.as_ptr()));
    }
}
