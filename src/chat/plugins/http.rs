//! A plugin's HTTP routes as values: the request `ServeHTTP` gets (credentials checked and
//! taken out) and the answer read back (no cookies on comet's origin, no framing headers,
//! `nosniff` always). It must not know about sockets or HTTP servers.

use serde_json::Value as Json;

/// An HTTP request for a plugin, as values: credentials already checked and taken out.
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The path after `/plugins/<id>` (at least `/`).
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The signed-in user, when the request carried valid credentials.
    pub user_id: Option<String>,
}

/// A plugin's answer to an HTTP request.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub(super) fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
        }
    }
}

/// Request headers a plugin never sees: credentials and cookies.
const HIDDEN_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "x-auth-token",
    "x-user-id",
    "proxy-authorization",
];
/// Answer headers a plugin cannot set: cookies on comet's origin, and framing.
const REFUSED_ANSWER_HEADERS: &[&str] = &[
    "set-cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
];

/// The headers of a request as a plugin sees them.
pub fn visible_headers(
    headers: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| !HIDDEN_REQUEST_HEADERS.contains(&k.as_str()))
        .collect()
}

/// Reads a plugin's `ServeHTTP` answer.
pub(super) fn read_http_answer(answer: &Json) -> Option<HttpAnswer> {
    use base64::Engine as _;
    let status = answer.get("status").and_then(Json::as_u64).unwrap_or(200);
    if !(100..=599).contains(&status) {
        return None;
    }
    let mut headers = Vec::new();
    if let Some(given) = answer.get("headers").and_then(Json::as_object) {
        for (name, value) in given {
            let name = name.to_ascii_lowercase();
            let Some(value) = value.as_str() else {
                continue;
            };
            if REFUSED_ANSWER_HEADERS.contains(&name.as_str())
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || value.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                continue;
            }
            headers.push((name, value.to_owned()));
        }
    }
    let body = match (answer.get("body"), answer.get("bodyBase64")) {
        (_, Some(Json::String(encoded))) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
        (Some(Json::String(text)), _) => text.as_bytes().to_vec(),
        (Some(Json::Null) | None, _) => Vec::new(),
        (Some(other), _) => other.to_string().into_bytes(),
    };
    if !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
    }
    headers.push(("x-content-type-options".into(), "nosniff".into()));
    Some(HttpAnswer {
        status: status as u16,
        headers,
        body,
    })
}
