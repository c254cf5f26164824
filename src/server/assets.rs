//! The pages comet serves itself: the web chat at `/` and the operator's page at `/admin`,
//! with their scripts and style under `/assets/`.
//!
//! Owns the embedded files (built into the binary from `web/`, so `cargo run --release`
//! serves them with no other step) and their headers: a strict Content-Security-Policy
//! (scripts and styles from this origin only, no inline script, connections to this origin
//! only), no sniffing, no referrer, no framing. It must not hold any secret or any state:
//! the pages learn everything through DDP and REST like any other client.

use super::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/admin",
        content_type: HTML,
        body: include_bytes!("../../web/admin.html"),
    },
    Asset {
        path: "/assets/ddp.js",
        content_type: JS,
        body: include_bytes!("../../web/ddp.js"),
    },
    Asset {
        path: "/assets/chat.js",
        content_type: JS,
        body: include_bytes!("../../web/chat.js"),
    },
    Asset {
        path: "/assets/admin.js",
        content_type: JS,
        body: include_bytes!("../../web/admin.js"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: CSS,
        body: include_bytes!("../../web/style.css"),
    },
];

/// What the pages may load and connect to: this origin only (`'self'` covers its own
/// `ws:`/`wss:` address in current browsers), nothing inline, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Each asset's entity tag: a quoted digest of its bytes, so a browser revalidating a
/// page it holds gets `304 Not Modified` until the binary serves other bytes.
fn entity_tag(index: usize) -> &'static str {
    use sha2::Digest as _;
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = sha2::Sha256::digest(asset.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    });
    &tags[index]
}

/// Whether an `If-None-Match` header names `tag` (or is `*`).
fn matches_tag(if_none_match: &str, tag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// The page or file at `path`, if comet serves one there; `304 Not Modified` when
/// `if_none_match` names the bytes it would send.
pub fn find(path: &str, if_none_match: Option<&str>) -> Option<Response<Body>> {
    let path = match path {
        "/index.html" => "/",
        "/admin/" | "/admin/index.html" => "/admin",
        other => other,
    };
    let index = ASSETS.iter().position(|a| a.path == path)?;
    let asset = &ASSETS[index];
    let tag = entity_tag(index);
    let unchanged = if_none_match.is_some_and(|given| matches_tag(given, tag));
    let body = if unchanged {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    };
    let mut resp = Response::new(
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = if unchanged {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(hyper::header::ETAG, value);
    }
    for (name, value) in [
        ("content-type", asset.content_type),
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-cache"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_served_with_a_strict_policy_and_unknown_paths_are_not() {
        for path in [
            "/",
            "/index.html",
            "/admin",
            "/admin/",
            "/assets/chat.js",
            "/assets/style.css",
        ] {
            let resp = find(path, None).unwrap_or_else(|| panic!("{path} not served"));
            let csp = resp.headers()["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{csp}"
            );
            assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        }
        for path in [
            "/assets/",
            "/assets/../Cargo.toml",
            "/admin/x",
            "/web/chat.js",
        ] {
            assert!(find(path, None).is_none(), "{path}");
        }
    }

    #[tokio::test]
    async fn a_page_the_browser_holds_is_not_sent_again() {
        let first = find("/assets/chat.js", None).unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 26,
            "{tag}"
        );
        assert_ne!(find("/assets/ddp.js", None).unwrap().headers()["etag"], tag);

        for held in [tag.clone(), format!("\"x\", W/{tag}"), "*".to_owned()] {
            let again = find("/assets/chat.js", Some(&held)).unwrap();
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{held}");
            assert_eq!(again.headers()["etag"], tag.as_str());
            let body = again.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty());
        }
        let other = find("/assets/chat.js", Some("\"0123\"")).unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        let body = other.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), include_bytes!("../../web/chat.js").len());
    }

    #[test]
    fn the_pages_carry_no_inline_script_and_stay_small() {
        let mut total = 0;
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            if asset.content_type == HTML {
                // Every <script> has a src: the policy allows no inline code.
                for tag in text.split("<script").skip(1) {
                    let head = &tag[..tag.find('>').unwrap()];
                    assert!(
                        head.contains("src=\"/assets/"),
                        "inline script in {}",
                        asset.path
                    );
                }
                // Nor an inline handler (` onclick=` and the like).
                for (at, _) in text.match_indices(" on") {
                    let name: String = text[at + 3..]
                        .chars()
                        .take_while(char::is_ascii_alphabetic)
                        .collect();
                    let after = text[at + 3 + name.len()..].chars().next();
                    assert!(
                        name.is_empty() || after != Some('='),
                        "inline handler in {}",
                        asset.path
                    );
                }
            }
            total += asset.body.len();
        }
        // The bound is 150 KB compressed; the files are well under it uncompressed.
        assert!(total < 150 * 1024, "{total} bytes");
    }
}
