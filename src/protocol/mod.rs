//! The DDP wire layer: decoding client frames into [`ClientMessage`] and encoding server frames.
//!
//! Owns message shapes, validation of their members and version negotiation. It must not do
//! I/O or know about sessions. See `protocol-spec/behavior.md`.

pub mod client;
pub mod server;

pub use client::{decode_client_frame, ClientMessage, DecodeError};
pub use server::Frame;

/// DDP versions this server speaks, in order of preference.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["1", "pre2", "pre1"];

/// The version to use with a client that supports `client_support` (first one we also speak).
pub fn negotiate_version(client_support: &[String]) -> &'static str {
    client_support
        .iter()
        .find_map(|v| SUPPORTED_VERSIONS.iter().find(|s| **s == v.as_str()))
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0])
}
