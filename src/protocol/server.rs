//! Server-to-client frames, serialized once into shareable bytes.

use crate::model::value::{write_ejson, write_object, write_plain_json, write_str};
use crate::model::{Document, MeteorError, Value};
use bytes::Bytes;

/// One serialized DDP message (UTF-8 JSON text). Cloning shares the bytes.
#[derive(Clone, Debug)]
pub struct Frame(Bytes, Option<Revocation>);

/// A flag that, once set, withdraws every queued frame carrying it (a stream event to a
/// reader who lost the right to it while the event waited in its queue).
pub type Revocation = std::sync::Arc<std::sync::atomic::AtomicBool>;

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Frame {}

impl Frame {
    fn from_string(text: String) -> Self {
        Frame(Bytes::from(text), None)
    }

    /// Wraps bytes serialized earlier by this module (shared between sessions).
    pub fn from_shared(bytes: Bytes) -> Self {
        Frame(bytes, None)
    }

    /// The frame, withdrawn from its queue once `revocation` is set.
    pub fn revocable(mut self, revocation: Revocation) -> Self {
        self.1 = Some(revocation);
        self
    }

    /// Whether the frame was withdrawn before it was written.
    pub fn is_revoked(&self) -> bool {
        self.1
            .as_ref()
            .is_some_and(|r| r.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The frame's bytes (always valid UTF-8).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Built from a `String` only, so this never fails; an empty string stands in if it did.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this is a `ping` or `pong` (which never count towards resumption, and never
    /// wait behind data).
    pub fn is_heartbeat(&self) -> bool {
        self.0.starts_with(b"{\"msg\":\"p")
    }
}

fn start(msg: &str) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"msg\":\"");
    out.push_str(msg);
    out.push('"');
    out
}

fn finish(mut out: String) -> Frame {
    out.push('}');
    Frame::from_string(out)
}

pub fn connected(session: &str) -> Frame {
    let mut out = start("connected");
    out.push_str(",\"session\":");
    write_str(session, &mut out);
    finish(out)
}

pub fn failed(version: &str) -> Frame {
    let mut out = start("failed");
    out.push_str(",\"version\":");
    write_str(version, &mut out);
    finish(out)
}

pub fn ping() -> Frame {
    Frame(Bytes::from_static(b"{\"msg\":\"ping\"}"), None)
}

pub fn pong(id: Option<&str>) -> Frame {
    match id {
        None => Frame(Bytes::from_static(b"{\"msg\":\"pong\"}"), None),
        Some(id) => {
            let mut out = start("pong");
            out.push_str(",\"id\":");
            write_str(id, &mut out);
            finish(out)
        }
    }
}

/// `{"msg":"error","reason":...}`, with the offending message as plain JSON when given.
pub fn error(reason: &str, offending: Option<&serde_json::Value>) -> Frame {
    let mut out = start("error");
    out.push_str(",\"reason\":");
    write_str(reason, &mut out);
    if let Some(offending) = offending {
        out.push_str(",\"offendingMessage\":");
        write_plain_json(offending, &mut out);
    }
    finish(out)
}

/// `added`; the `fields` key is left out when there are none (as Meteor does).
pub fn added(collection: &str, id: &str, fields: &Document) -> Frame {
    added_iter(collection, id, fields.iter())
}

/// `added` from any sequence of fields (lets the mergebox write without building a map).
pub fn added_iter<'a>(
    collection: &str,
    id: &str,
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Frame {
    let mut out = start("added");
    write_target(collection, id, &mut out);
    write_fields(fields, &mut out);
    finish(out)
}

/// `changed`: `fields` and `cleared` each present only when non-empty.
pub fn changed<'a>(
    collection: &str,
    id: &str,
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    cleared: &[&str],
) -> Frame {
    let mut out = start("changed");
    write_target(collection, id, &mut out);
    write_fields(fields, &mut out);
    if !cleared.is_empty() {
        out.push_str(",\"cleared\":[");
        for (i, name) in cleared.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(name, &mut out);
        }
        out.push(']');
    }
    finish(out)
}

/// One event of a Rocket.Chat stream: `changed` on `collection` (`stream-<name>`), id
/// `"id"`, fields `{eventName, args}`.
pub fn stream_event(collection: &str, event: &str, args: &[Value]) -> Frame {
    let mut out = start("changed");
    write_target(collection, "id", &mut out);
    out.push_str(",\"fields\":{\"eventName\":");
    write_str(event, &mut out);
    write_args(args, &mut out);
    out.push('}');
    finish(out)
}

/// `,"args":[...]`.
fn write_args(args: &[Value], out: &mut String) {
    out.push_str(",\"args\":[");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_ejson(arg, out);
    }
    out.push(']');
}

/// Rocket.Chat's `stream-user-presence` frame: the watched user's id is the document id,
/// the `uid` field and the event name.
pub fn presence_event(collection: &str, uid: &str, args: &[Value]) -> Frame {
    let mut out = start("changed");
    write_target(collection, uid, &mut out);
    out.push_str(",\"fields\":{\"uid\":");
    write_str(uid, &mut out);
    write_args(args, &mut out);
    out.push_str(",\"eventName\":");
    write_str(uid, &mut out);
    out.push('}');
    finish(out)
}

/// What a stream subscriber asking `useCollection: true` gets before `ready`: the stream's
/// one document, holding the event name.
pub fn stream_added(collection: &str, event: &str) -> Frame {
    let mut out = start("added");
    write_target(collection, "id", &mut out);
    out.push_str(",\"fields\":{\"eventName\":");
    write_str(event, &mut out);
    out.push('}');
    finish(out)
}

pub fn removed(collection: &str, id: &str) -> Frame {
    let mut out = start("removed");
    write_target(collection, id, &mut out);
    finish(out)
}

pub fn ready(subs: &[&str]) -> Frame {
    let mut out = start("ready");
    out.push_str(",\"subs\":[");
    for (i, id) in subs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(id, &mut out);
    }
    out.push(']');
    finish(out)
}

/// `nosub`, optionally with an error; a missing `id` (an `unsub` without one) is left out.
pub fn nosub(id: Option<&str>, err: Option<&MeteorError>) -> Frame {
    let mut out = start("nosub");
    if let Some(id) = id {
        out.push_str(",\"id\":");
        write_str(id, &mut out);
    }
    if let Some(err) = err {
        out.push_str(",\"error\":");
        err.write_json(&mut out);
    }
    finish(out)
}

/// What a method produced.
pub enum MethodOutcome<'a> {
    /// Returned `undefined`: no `result` key.
    Nothing,
    Value(&'a Value),
    Error(&'a MeteorError),
}

pub fn result(id: &str, outcome: MethodOutcome<'_>) -> Frame {
    let mut out = start("result");
    out.push_str(",\"id\":");
    write_str(id, &mut out);
    match outcome {
        MethodOutcome::Nothing => {}
        MethodOutcome::Value(v) => {
            out.push_str(",\"result\":");
            write_ejson(v, &mut out);
        }
        MethodOutcome::Error(e) => {
            out.push_str(",\"error\":");
            e.write_json(&mut out);
        }
    }
    finish(out)
}

pub fn updated(method_id: &str) -> Frame {
    let mut out = start("updated");
    out.push_str(",\"methods\":[");
    write_str(method_id, &mut out);
    out.push(']');
    finish(out)
}

fn write_target(collection: &str, id: &str, out: &mut String) {
    out.push_str(",\"collection\":");
    write_str(collection, out);
    out.push_str(",\"id\":");
    write_str(id, out);
}

fn write_fields<'a>(mut fields: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut String) {
    let mut first = true;
    for (k, v) in fields.by_ref() {
        if k == "_id" {
            continue;
        }
        out.push_str(if first { ",\"fields\":{" } else { "," });
        first = false;
        write_str(k, out);
        out.push(':');
        write_ejson(v, out);
    }
    if !first {
        out.push('}');
    }
}

/// Writes a whole document (used by tests and tools).
pub fn document_json(doc: &Document) -> String {
    let mut out = String::new();
    write_object(doc, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_are_rocketchats() {
        assert_eq!(
            stream_event(
                "stream-notify-all",
                "public-settings-changed",
                &[Value::from("updated"), Value::Bool(true)]
            )
            .as_str(),
            r#"{"msg":"changed","collection":"stream-notify-all","id":"id","fields":{"eventName":"public-settings-changed","args":["updated",true]}}"#
        );
        assert_eq!(
            stream_added("stream-roles", "roles").as_str(),
            r#"{"msg":"added","collection":"stream-roles","id":"id","fields":{"eventName":"roles"}}"#
        );
        let status = Value::Array(vec![
            Value::from("ana"),
            Value::Number(2.0),
            Value::from(""),
        ]);
        assert_eq!(
            presence_event("stream-user-presence", "u1", &[status]).as_str(),
            r#"{"msg":"changed","collection":"stream-user-presence","id":"u1","fields":{"uid":"u1","args":[["ana",2,""]],"eventName":"u1"}}"#
        );
    }

    #[test]
    fn data_frames_leave_out_empty_members() {
        assert_eq!(
            added("c", "x", &Document::default()).as_str(),
            r#"{"msg":"added","collection":"c","id":"x"}"#
        );
        assert_eq!(
            changed("c", "x", std::iter::empty(), &["f"]).as_str(),
            r#"{"msg":"changed","collection":"c","id":"x","cleared":["f"]}"#
        );
        let mut doc = Document::default();
        doc.insert("_id".into(), Value::from("x"));
        doc.insert("a".into(), Value::Date(0.0));
        assert_eq!(
            added("c", "x", &doc).as_str(),
            r#"{"msg":"added","collection":"c","id":"x","fields":{"a":{"$date":0}}}"#
        );
    }

    #[test]
    fn result_omits_undefined_and_keeps_null() {
        assert_eq!(
            result("1", MethodOutcome::Nothing).as_str(),
            r#"{"msg":"result","id":"1"}"#
        );
        assert_eq!(
            result("1", MethodOutcome::Value(&Value::Null)).as_str(),
            r#"{"msg":"result","id":"1","result":null}"#
        );
    }

    #[test]
    fn heartbeat_frames_are_recognised() {
        assert!(ping().is_heartbeat());
        assert!(pong(Some("x")).is_heartbeat());
        assert!(!ready(&["a"]).is_heartbeat());
    }
}
