//! Meteor's client-safe error (`Meteor.Error`): the value a handler returns to tell a client
//! what went wrong. It must not decide how the error travels; `session` does.

use super::value::write_str;
use std::fmt;

/// The `error` member: Meteor allows a number (HTTP-like codes) or a string.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorCode {
    Number(i64),
    Text(String),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Number(n) => write!(f, "{n}"),
            ErrorCode::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for ErrorCode {
    fn from(n: i64) -> Self {
        ErrorCode::Number(n)
    }
}
impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        ErrorCode::Text(s.to_owned())
    }
}

/// An error that may be shown to the client.
#[derive(Clone, Debug, PartialEq)]
pub struct MeteorError {
    pub error: ErrorCode,
    pub reason: Option<String>,
    /// Plain JSON, not EJSON, as Meteor sends it.
    pub details: Option<serde_json::Value>,
}

impl MeteorError {
    pub fn new(error: impl Into<ErrorCode>, reason: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            reason: Some(reason.into()),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The generic error that stands in for our own faults.
    pub fn internal() -> Self {
        Self::new(500, "Internal server error")
    }

    /// `message` as `Meteor.Error` builds it: `"<reason> [<error>]"` or `"[<error>]"`.
    pub fn message(&self) -> String {
        match &self.reason {
            Some(reason) => format!("{reason} [{}]", self.error),
            None => format!("[{}]", self.error),
        }
    }

    /// Writes the wire object.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"isClientSafe\":true,\"error\":");
        match &self.error {
            ErrorCode::Number(n) => out.push_str(&n.to_string()),
            ErrorCode::Text(s) => write_str(s, out),
        }
        if let Some(reason) = &self.reason {
            out.push_str(",\"reason\":");
            write_str(reason, out);
        }
        if let Some(details) = &self.details {
            out.push_str(",\"details\":");
            super::value::write_plain_json(details, out);
        }
        out.push_str(",\"message\":");
        write_str(&self.message(), out);
        out.push_str(",\"errorType\":\"Meteor.Error\"}");
    }
}

impl fmt::Display for MeteorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_object_matches_meteor() {
        let mut out = String::new();
        MeteorError::new("e", "r")
            .with_details(serde_json::json!({"d": 1}))
            .write_json(&mut out);
        assert_eq!(
            out,
            r#"{"isClientSafe":true,"error":"e","reason":"r","details":{"d":1},"message":"r [e]","errorType":"Meteor.Error"}"#
        );
        let bare = MeteorError {
            error: "You are not logged in.".into(),
            reason: None,
            details: None,
        };
        assert_eq!(bare.message(), "[You are not logged in.]");
    }
}
