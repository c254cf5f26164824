//! Login tokens and password hashes, as Meteor and Rocket.Chat store them: a token is 43
//! random characters kept only as `base64(sha256(token))`; a password is bcrypt of the
//! lowercase hex SHA-256 of its UTF-8 text. bcrypt runs on the blocking pool so a login
//! never stalls a runtime worker.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A new login token (Meteor's `Random.secret()`).
pub fn new_token() -> String {
    crate::model::random::random_secret()
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.as_bytes()))
}

/// The SHA-256 hex digest a Meteor client sends instead of the password.
pub fn password_digest(plain: &str) -> String {
    Sha256::digest(plain.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `text` is a digest a client may send: 64 hexadecimal characters.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// bcrypt of a digest, off the async workers.
pub async fn hash_password(digest: String, cost: u32) -> Result<String, String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(digest.to_ascii_lowercase(), cost))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Whether `digest` is the password behind `hash` (any bcrypt variant Meteor or Rocket.Chat
/// wrote), off the async workers. A malformed hash never matches.
pub async fn verify_password(digest: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        bcrypt::verify(digest.to_ascii_lowercase(), &hash).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_meteor_secrets_and_hash_as_meteor_does() {
        let token = new_token();
        assert_eq!(token.len(), 43);
        // base64(sha256("abc")), as Meteor's Accounts._hashLoginToken gives it.
        assert_eq!(
            hash_token("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(
            password_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_digest(&password_digest("x")) && !is_digest("xyz"));
    }

    #[tokio::test]
    async fn a_hash_written_by_rocketchat_verifies() {
        // bcrypt (cost 4 here, to be quick) of sha256("secret"), `$2b$` as Node's bcrypt writes.
        let digest = password_digest("secret");
        let hash = hash_password(digest.clone(), 4).await.expect("hashes");
        assert!(hash.starts_with("$2b$04$"));
        assert!(verify_password(digest.to_uppercase(), hash.clone()).await);
        assert!(!verify_password(password_digest("other"), hash).await);
        assert!(!verify_password(digest, "not a hash".into()).await);
    }
}
