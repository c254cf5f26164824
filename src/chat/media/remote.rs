//! Fetching an image a user names by URL (an avatar from elsewhere), bounded in size and
//! time and never from a private address.
//!
//! A URL is the client's value, and the server fetching it must not become the client's
//! way into the server's own network: only `http` and `https`, only hosts whose every
//! address is public (the lookup is made here and the connection goes to what it gave, so
//! a name cannot resolve to a public address when checked and a private one when used),
//! redirects re-checked the same way, at most [`MAX_REDIRECTS`], the body cut at the
//! caller's limit and the whole within [`FETCH_TIME`]. It must not store anything.

use crate::chat::client_error;
use crate::engine::ServiceError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The longest a fetch takes, connection to last byte.
pub const FETCH_TIME: Duration = Duration::from_secs(10);
/// Redirects followed.
const MAX_REDIRECTS: usize = 3;

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// shared, reserved, documentation, multicast, or a v6 form of one of them).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries a v4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_unspecified()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

/// A resolver that answers only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn refused(reason: &str) -> ServiceError {
    client_error("error-avatar-invalid-url", reason)
}

/// Whether a URL may be fetched before any lookup: its scheme and, for an address
/// written in it, that the address is public.
fn checked(url: &reqwest::Url) -> Result<(), ServiceError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("Only http and https URLs are fetched"));
    }
    match url.host() {
        None => Err(refused("The URL names no host")),
        Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
            Err(refused("The URL names a private address"))
        }
        Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
            Err(refused("The URL names a private address"))
        }
        Some(_) => Ok(()),
    }
}

/// The body at `url`, at most `max_bytes`.
pub async fn fetch(url: &str, max_bytes: usize) -> Result<Vec<u8>, ServiceError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| refused("The URL cannot be read"))?;
    checked(&parsed)?;
    let client = reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(PublicOnly))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if checked(attempt.url()).is_err() {
                attempt.error("a redirect to a private address")
            } else {
                attempt.follow()
            }
        }))
        .timeout(FETCH_TIME)
        .connect_timeout(Duration::from_secs(5))
        .user_agent("comet (avatar fetcher)")
        .build()
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let unreachable = |e: reqwest::Error| {
        tracing::debug!(err = %e, "a URL could not be fetched");
        refused("The URL could not be fetched")
    };
    let mut resp = client.get(parsed).send().await.map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(refused("The URL did not answer with an image"));
    }
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(client_error(
            "error-file-too-large",
            "The image is too large",
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        body.extend_from_slice(&chunk);
        if body.len() > max_bytes {
            return Err(client_error(
                "error-file-too-large",
                "The image is too large",
            ));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{private}"
            );
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                is_public(public.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{public}"
            );
        }
    }

    #[tokio::test]
    async fn private_schemes_hosts_and_names_are_refused_before_any_connection() {
        for url in [
            "file:///etc/passwd",
            "gopher://example.com/",
            "http://127.0.0.1:9/a.png",
            "http://[::1]:9/a.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:9/a.png",
            "not a url",
        ] {
            let err = fetch(url, 1024)
                .await
                .err()
                .map(|e| e.client_view().error.to_string());
            assert_eq!(err.as_deref(), Some("error-avatar-invalid-url"), "{url}");
        }
    }
}
