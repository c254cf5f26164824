//! The wire between comet and a plugin's process: JSON-RPC 2.0, one message per line of
//! the child's stdin (comet to plugin) and stdout (plugin to comet), both sides calling.
//!
//! Owns the framing (lines of at most [`MAX_LINE`] bytes), the reading of a line into a
//! [`Frame`], and the [`Peer`]: comet's end of one process's wire, which numbers comet's
//! calls, matches their answers, and gives every call a deadline. A line that is not
//! JSON-RPC is a [`FrameError`]: the runner ends the process for it, since nothing after
//! it can be trusted. It must not know what the calls mean.

use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::{mpsc, oneshot};

/// Longest line either side may send (a message with its room, a ServeHTTP body).
pub const MAX_LINE: usize = 8 << 20;
/// Lines waiting for the child to read them; beyond it a notification is dropped and a
/// call fails at once (a plugin that does not read its stdin holds nothing up).
pub const OUTBOX: usize = 1024;

/// JSON-RPC's error codes comet uses.
pub mod codes {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const NO_METHOD: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// A refusal by the chat services: `data.error` holds Rocket.Chat's code.
    pub const REFUSED: i64 = -32000;
    /// Too many calls: `data.error` is `too-many-requests`.
    pub const LIMITED: i64 = -32001;
}

/// An error answer on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Json>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn to_json(&self) -> Json {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(data), Some(out)) = (&self.data, error.as_object_mut()) {
            out.insert("data".into(), data.clone());
        }
        error
    }
}

/// Why a call to the plugin got no answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin is not running")]
    Dead,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the plugin does not read its input")]
    Full,
    #[error("the plugin answered with error {}: {}", .0.code, .0.message)]
    Remote(RpcError),
}

/// A line that is not JSON-RPC.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("a line that is not JSON: {0}")]
    NotJson(String),
    #[error("a message that is not JSON-RPC 2.0: {0}")]
    NotRpc(&'static str),
    #[error("an answer to no call ({0})")]
    UnknownId(String),
    #[error("reading failed: {0}")]
    Io(String),
}

/// One message from the plugin.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A call into comet's API, to be answered with the same id.
    Request {
        id: Json,
        method: String,
        params: Json,
    },
    /// A call that wants no answer (`log`).
    Notification { method: String, params: Json },
    /// The answer to comet's call `id`.
    Response {
        id: u64,
        outcome: Result<Json, RpcError>,
    },
}

/// Reads one line into `line` (without its end); `Ok(false)` at the end of the stream.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    line.clear();
    loop {
        let available = reader
            .fill_buf()
            .await
            .map_err(|e| FrameError::Io(e.to_string()))?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let (taken, done) = match memchr_newline(available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let end = if done { taken - 1 } else { taken };
        if line.len() + end > MAX_LINE {
            return Err(FrameError::TooLong);
        }
        line.extend_from_slice(&available[..end]);
        reader.consume(taken);
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// Reads a line as a frame; `None` for a blank line.
pub fn parse(line: &[u8]) -> Result<Option<Frame>, FrameError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Json = serde_json::from_slice(line).map_err(|e| {
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into();
        FrameError::NotJson(format!("{e} in {shown:?}"))
    })?;
    let Json::Object(mut message) = value else {
        return Err(FrameError::NotRpc("not an object"));
    };
    if message.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
        return Err(FrameError::NotRpc("no \"jsonrpc\": \"2.0\""));
    }
    let params = message.remove("params").unwrap_or(Json::Null);
    match (message.remove("method"), message.remove("id")) {
        (Some(Json::String(method)), None | Some(Json::Null)) => {
            Ok(Some(Frame::Notification { method, params }))
        }
        (Some(Json::String(method)), Some(id @ (Json::String(_) | Json::Number(_)))) => {
            Ok(Some(Frame::Request { id, method, params }))
        }
        (Some(_), _) => Err(FrameError::NotRpc("a method that is not a string")),
        (None, Some(id)) => {
            let Some(number) = id.as_u64() else {
                return Err(FrameError::UnknownId(id.to_string()));
            };
            let outcome = match (message.remove("result"), message.remove("error")) {
                (Some(result), None) => Ok(result),
                (None, Some(Json::Object(error))) => Err(RpcError {
                    code: error.get("code").and_then(Json::as_i64).unwrap_or(0),
                    message: error
                        .get("message")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .chars()
                        .take(1000)
                        .collect(),
                    data: error.get("data").cloned(),
                }),
                _ => return Err(FrameError::NotRpc("an answer needs result or error")),
            };
            Ok(Some(Frame::Response {
                id: number,
                outcome,
            }))
        }
        (None, None) => Err(FrameError::NotRpc("neither a call nor an answer")),
    }
}

type Waiter = oneshot::Sender<Result<Json, CallError>>;

/// comet's end of one process's wire.
pub struct Peer {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Waiter>>,
    outbox: mpsc::Sender<String>,
}

impl Peer {
    /// A peer whose lines go to `outbox` (a writer task copies them to the child's stdin).
    pub fn new(outbox: mpsc::Sender<String>) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            outbox,
        }
    }

    /// Calls `method` and waits for the answer, at most `deadline`.
    pub async fn call(
        &self,
        method: &str,
        params: Json,
        deadline: Duration,
    ) -> Result<Json, CallError> {
        self.call_text(method, &params.to_string(), deadline).await
    }

    /// [`Peer::call`] with the parameters already written as JSON text (a message hook
    /// writes its documents straight as EJSON, building no JSON tree).
    pub async fn call_text(
        &self,
        method: &str,
        params: &str,
        deadline: Duration,
    ) -> Result<Json, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{},\"params\":{params}}}",
            Json::from(method)
        );
        if let Err(err) = self.outbox.try_send(line) {
            self.forget(id);
            return Err(match err {
                mpsc::error::TrySendError::Full(_) => CallError::Full,
                mpsc::error::TrySendError::Closed(_) => CallError::Dead,
            });
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CallError::Dead),
            Err(_) => {
                self.forget(id);
                Err(CallError::Timeout(deadline))
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Sends `method` without waiting for anything; `false` when it was dropped (the
    /// plugin is gone or does not read).
    pub fn notify(&self, method: &str, params: Json) -> bool {
        self.notify_text(method, &params.to_string())
    }

    /// [`Peer::notify`] with the parameters already written as JSON text.
    pub fn notify_text(&self, method: &str, params: &str) -> bool {
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":{},\"params\":{params}}}",
            Json::from(method)
        );
        self.outbox.try_send(line).is_ok()
    }

    /// Answers the plugin's call `id`.
    pub fn answer(&self, id: Json, outcome: Result<Json, RpcError>) -> bool {
        let line = match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()}),
        };
        self.outbox.try_send(line.to_string()).is_ok()
    }

    /// Hands an answer to the call waiting for it; an error when comet made no such call
    /// (or gave up on it: then it is dropped quietly).
    pub fn complete(&self, id: u64, outcome: Result<Json, RpcError>) -> Result<(), FrameError> {
        if id >= self.next_id.load(Ordering::Relaxed) {
            return Err(FrameError::UnknownId(id.to_string()));
        }
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome.map_err(CallError::Remote));
        }
        Ok(())
    }

    /// Fails every call still waiting: the process is gone.
    pub fn fail_all(&self) {
        let waiting: Vec<Waiter> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        for waiter in waiting {
            let _ = waiter.send(Err(CallError::Dead));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_and_bounded() {
        let text = b"{\"a\":1}\r\n\n{\"b\":2}".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(3, &text[..]);
        let mut line = Vec::new();
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"{\"a\":1}");
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert!(line.is_empty());
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"{\"b\":2}");
        assert!(!read_line(&mut reader, &mut line).await.unwrap());
        let long = vec![b'x'; MAX_LINE + 10];
        let mut reader = tokio::io::BufReader::new(&long[..]);
        assert_eq!(
            read_line(&mut reader, &mut line).await,
            Err(FrameError::TooLong)
        );
    }

    #[test]
    fn frames_are_calls_notifications_or_answers_and_nothing_else() {
        let frame = |t: &str| parse(t.as_bytes());
        assert!(matches!(
            frame(r#"{"jsonrpc":"2.0","id":"k","method":"kv.get","params":{"key":"a"}}"#),
            Ok(Some(Frame::Request { .. }))
        ));
        assert!(matches!(
            frame(r#"{"jsonrpc":"2.0","method":"log","params":{}}"#),
            Ok(Some(Frame::Notification { .. }))
        ));
        assert_eq!(
            frame(r#"{"jsonrpc":"2.0","id":3,"result":null}"#).unwrap(),
            Some(Frame::Response {
                id: 3,
                outcome: Ok(Json::Null)
            })
        );
        assert!(matches!(
            frame(r#"{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"no"}}"#),
            Ok(Some(Frame::Response {
                id: 4,
                outcome: Err(RpcError { code: -1, .. })
            }))
        ));
        assert_eq!(frame("   ").unwrap(), None);
        for garbage in [
            "hello",
            "[1,2]",
            r#"{"id":1,"result":1}"#,
            r#"{"jsonrpc":"2.0","id":"x","result":1}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","method":7}"#,
            r#"{"jsonrpc":"2.0"}"#,
        ] {
            assert!(frame(garbage).is_err(), "{garbage}");
        }
    }

    #[tokio::test]
    async fn a_call_gets_its_answer_its_deadline_or_news_of_a_dead_plugin() {
        let (tx, mut rx) = mpsc::channel(4);
        let peer = std::sync::Arc::new(Peer::new(tx));
        let caller = peer.clone();
        let call = tokio::spawn(async move {
            caller
                .call("Ping", Json::Null, Duration::from_secs(5))
                .await
        });
        let sent: Json = serde_json::from_str(&rx.recv().await.unwrap()).unwrap();
        let id = sent["id"].as_u64().unwrap();
        peer.complete(id, Ok(json!("pong"))).unwrap();
        assert_eq!(call.await.unwrap(), Ok(json!("pong")));
        // An answer to a call never made is the plugin's mistake.
        assert!(peer.complete(999, Ok(Json::Null)).is_err());
        // A deadline passes; the late answer is dropped quietly.
        let late = peer
            .call("Slow", Json::Null, Duration::from_millis(20))
            .await;
        assert_eq!(late, Err(CallError::Timeout(Duration::from_millis(20))));
        let sent: Json = serde_json::from_str(&rx.recv().await.unwrap()).unwrap();
        assert!(peer
            .complete(sent["id"].as_u64().unwrap(), Ok(Json::Null))
            .is_ok());
        // The process dies with a call waiting.
        let caller = peer.clone();
        let call = tokio::spawn(async move {
            caller
                .call("Ping", Json::Null, Duration::from_secs(5))
                .await
        });
        rx.recv().await.unwrap();
        peer.fail_all();
        assert_eq!(call.await.unwrap(), Err(CallError::Dead));
    }
}
