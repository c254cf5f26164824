//! Rocket.Chat's services on the DDP engine: accounts, settings, permissions, rooms,
//! messages, teams, presence, the notify streams and the operator's page.
//!
//! They own Rocket.Chat's rules and document shapes and register their methods,
//! publications and streams with the engine's [`Registry`](crate::engine::Registry). They
//! must not know about sessions, sockets or HTTP: `session` and `rest` call them, never the
//! other way round. Every collection they use is named in [`collections`]; every operation
//! takes a [`call::Call`] (who acts, the write fence, the address); documents are read as
//! the typed [`records`] where a service needs their fields.

pub mod accounts;
pub mod call;
pub mod collections;
pub mod commands;
pub mod emoji;
pub mod hooks;
pub mod leases;
pub mod media;
pub mod messages;
pub mod notify;
pub mod operator;
pub mod permissions;
pub mod plugins;
pub mod posting;
pub mod presence;
pub mod push;
pub mod records;
pub mod rooms;
pub mod settings;
pub mod teams;
pub mod upkeep;
pub mod uploads;
pub mod workspace;

use crate::engine::ServiceError;
use crate::model::{Document, MeteorError, Value};

/// A string field of a stored document.
pub(crate) fn text<'a>(doc: &'a Document, key: &str) -> Option<&'a str> {
    doc.get(key).and_then(Value::as_str)
}

/// A time as the `$date` form the services' JSON builders read.
pub(crate) fn date(ms: f64) -> serde_json::Value {
    serde_json::json!({"$date": ms})
}

/// The author of a message (`u._id`).
pub(crate) fn author_of(message: &Document) -> Option<&str> {
    message
        .get("u")
        .and_then(Value::as_object)
        .and_then(|u| text(u, "_id"))
}

/// A refusal a client may read: Rocket.Chat's `code` and `reason`.
pub(crate) fn client_error(code: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(code, reason))
}

/// Rocket.Chat's refusal of an action the caller may not take (`error-not-allowed`).
pub(crate) fn not_allowed() -> ServiceError {
    client_error("error-not-allowed", "Not allowed")
}

/// `text` as one URL path segment or RFC 5987 value: letters, digits and `-._~` as they
/// are, every other byte percent-encoded.
pub fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` as a regular expression that matches it literally (a search text a client typed
/// is never a pattern it controls).
pub fn literal_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod literal_tests {
    use super::*;

    #[test]
    fn a_search_text_matches_literally() {
        assert_eq!(literal_pattern("a.b*"), "a\\.b\\*");
        assert_eq!(literal_pattern("(x|y)"), "\\(x\\|y\\)");
        let re = regex::Regex::new(&literal_pattern("1+1=2?")).expect("a valid pattern");
        assert!(re.is_match("is 1+1=2?"));
        assert!(!re.is_match("11=2"));
    }
}
