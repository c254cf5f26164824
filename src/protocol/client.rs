//! Client-to-server messages and their decoding.

use crate::model::{EjsonError, Value};

/// A message a client may send, validated.
#[derive(Debug)]
pub enum ClientMessage {
    /// `connect`; its members are checked during the handshake, where a bad one means `failed`.
    Connect {
        version: Option<String>,
        support: Option<Vec<String>>,
        session: Option<String>,
    },
    /// `ping`; a non-string `id` gives `IdKind::Invalid`.
    Ping {
        id: PingId,
    },
    Pong,
    Sub {
        id: String,
        name: String,
        params: Vec<Value>,
    },
    Unsub {
        id: Option<String>,
    },
    Method {
        id: String,
        method: String,
        params: Vec<Value>,
        random_seed: Option<String>,
    },
    /// The 3.5 line's graceful `disconnect`.
    Disconnect,
    /// A `msg` this server has no handler for.
    Unknown,
}

/// The `id` member of a ping.
#[derive(Debug, PartialEq, Eq)]
pub enum PingId {
    Absent,
    Text(String),
    /// Not a string: Meteor cannot echo it, so no pong is sent.
    Invalid,
}

/// Why a frame was not a usable message. Each variant says what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON that is not an object: `Bad request` without `offendingMessage`.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// An object without a string `msg`: `Bad request` with `offendingMessage`.
    #[error("frame has no msg")]
    NoMsg(serde_json::Value),
    /// EJSON that cannot be decoded: `Parse error`.
    #[error("EJSON decoding failed: {0}")]
    Ejson(#[from] EjsonError),
    #[error("malformed subscription")]
    MalformedSub(serde_json::Value),
    #[error("malformed method invocation")]
    MalformedMethod(serde_json::Value),
    /// A well-formed `method` or `sub` whose `params` are not valid EJSON: `Parse error`, as
    /// Meteor says, and then the call itself is answered by its id so it does not hang.
    #[error("EJSON decoding of {kind} {id} failed: {cause}")]
    BadParams {
        kind: CallKind,
        id: String,
        cause: EjsonError,
    },
}

/// What a frame with undecodable parameters asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Method,
    Sub,
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallKind::Method => "method",
            CallKind::Sub => "sub",
        })
    }
}

impl DecodeError {
    /// The `reason` of the DDP `error` message and, where Meteor includes it, the offending message.
    pub fn reply(&self) -> (&'static str, Option<&serde_json::Value>) {
        match self {
            DecodeError::NotAnObject => ("Bad request", None),
            DecodeError::NoMsg(v) => ("Bad request", Some(v)),
            DecodeError::Ejson(_) | DecodeError::BadParams { .. } => ("Parse error", None),
            DecodeError::MalformedSub(v) => ("Malformed subscription", Some(v)),
            DecodeError::MalformedMethod(v) => ("Malformed method invocation", Some(v)),
        }
    }
}

/// Decodes one client frame (a DDP JSON text).
pub fn decode_client_frame(text: &str) -> Result<(ClientMessage, serde_json::Value), DecodeError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|_| DecodeError::NotAnObject)?;
    decode_value(json)
}

/// Validates a parsed JSON frame. Returns the message and a copy of the frame's
/// non-payload members, enough for `offendingMessage`.
pub fn decode_value(
    mut json: serde_json::Value,
) -> Result<(ClientMessage, serde_json::Value), DecodeError> {
    let Some(obj) = json.as_object_mut() else {
        return Err(DecodeError::NotAnObject);
    };
    let msg = match obj.get("msg") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(DecodeError::NoMsg(json)),
    };
    let message = match msg.as_str() {
        "connect" => ClientMessage::Connect {
            version: obj
                .get("version")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            support: obj
                .get("support")
                .and_then(|v| v.as_array())
                .and_then(|items| {
                    items
                        .iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                }),
            session: obj
                .get("session")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        },
        "ping" => ClientMessage::Ping {
            id: match obj.get("id") {
                None => PingId::Absent,
                Some(serde_json::Value::String(s)) => PingId::Text(s.clone()),
                Some(_) => PingId::Invalid,
            },
        },
        "pong" => ClientMessage::Pong,
        "disconnect" => ClientMessage::Disconnect,
        "unsub" => ClientMessage::Unsub {
            id: obj.get("id").and_then(|v| v.as_str()).map(str::to_owned),
        },
        "sub" => {
            let well_formed = obj.get("id").is_some_and(|v| v.is_string())
                && obj.get("name").is_some_and(|v| v.is_string())
                && obj.get("params").is_none_or(|v| v.is_array());
            if !well_formed {
                return Err(DecodeError::MalformedSub(json));
            }
            let params = take_params(obj).map_err(|cause| DecodeError::BadParams {
                kind: CallKind::Sub,
                id: take_string(obj, "id"),
                cause,
            })?;
            ClientMessage::Sub {
                id: take_string(obj, "id"),
                name: take_string(obj, "name"),
                params,
            }
        }
        "method" => {
            let well_formed = obj.get("id").is_some_and(|v| v.is_string())
                && obj.get("method").is_some_and(|v| v.is_string())
                && obj.get("params").is_none_or(|v| v.is_array())
                && obj.get("randomSeed").is_none_or(|v| v.is_string());
            if !well_formed {
                return Err(DecodeError::MalformedMethod(json));
            }
            let params = take_params(obj).map_err(|cause| DecodeError::BadParams {
                kind: CallKind::Method,
                id: take_string(obj, "id"),
                cause,
            })?;
            let random_seed = obj
                .get("randomSeed")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            ClientMessage::Method {
                id: take_string(obj, "id"),
                method: take_string(obj, "method"),
                params,
                random_seed,
            }
        }
        _ => ClientMessage::Unknown,
    };
    Ok((message, json))
}

fn take_string(obj: &mut serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Decodes `params` as EJSON.
fn take_params(
    obj: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Value>, EjsonError> {
    // Taken, not copied: a message that decodes never needs its params again, and
    // "Parse error" carries no offendingMessage.
    match obj.remove("params") {
        Some(serde_json::Value::Array(items)) => Ok(items
            .into_iter()
            .map(Value::from_json)
            .collect::<Result<_, _>>()?),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_objects_are_bad_requests_without_offending_message() {
        for text in ["not json", "42", "\"x\"", "null", "[1]"] {
            let err = decode_client_frame(text).unwrap_err();
            assert_eq!(err.reply(), ("Bad request", None), "{text}");
        }
    }

    #[test]
    fn objects_without_msg_carry_offending_message() {
        let err = decode_client_frame(r#"{"foo":1}"#).unwrap_err();
        let (reason, offending) = err.reply();
        assert_eq!(reason, "Bad request");
        assert_eq!(offending, Some(&serde_json::json!({"foo": 1})));
    }

    #[test]
    fn malformed_method_and_sub_are_named() {
        for text in [
            r#"{"msg":"method","id":"1","method":"m","randomSeed":5}"#,
            r#"{"msg":"method","id":"1","method":"m","params":{}}"#,
            r#"{"msg":"method","id":1,"method":"m"}"#,
        ] {
            let err = decode_client_frame(text).unwrap_err();
            assert_eq!(err.reply().0, "Malformed method invocation", "{text}");
        }
        for text in [
            r#"{"msg":"sub","id":1,"name":"tasks"}"#,
            r#"{"msg":"sub","id":"s1","name":"tasks","params":null}"#,
        ] {
            let err = decode_client_frame(text).unwrap_err();
            assert_eq!(err.reply().0, "Malformed subscription", "{text}");
        }
    }

    #[test]
    fn unknown_ejson_type_is_a_parse_error() {
        let err = decode_client_frame(
            r#"{"msg":"method","id":"1","method":"echo","params":[{"$type":"nope","$value":1}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.reply(), ("Parse error", None));
        assert!(
            matches!(&err, DecodeError::BadParams { kind: CallKind::Method, id, .. } if id == "1"),
            "the call is named, so it can be answered: {err:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_client_frame(&text).is_err());
    }
}
