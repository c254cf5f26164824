//! Login tokens and password hashes, as Meteor and Rocket.Chat store them: a token is 43
//! random characters kept only as `base64(sha256(token))`; a password is bcrypt of the
//! lowercase hex SHA-256 of its UTF-8 text. bcrypt runs on a small pool of its own threads
//! (one per core, at a lower scheduling priority, with a bounded queue) so a burst of logins
//! never stalls a runtime worker, never spawns a thread per login, and yields the CPU to the
//! sessions' work whenever both want it.

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

pub use crate::model::secret::same_secret;

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

/// bcrypt jobs waiting beyond this many are refused rather than queued without end.
const HASH_QUEUE: usize = 4096;

type HashJob = Box<dyn FnOnce() + Send>;

/// The bcrypt threads' queue, started on first use.
fn hash_queue() -> &'static std::sync::mpsc::SyncSender<HashJob> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<HashJob>(HASH_QUEUE);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("comet-bcrypt-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    // Linux keeps the nice value per thread: only these threads yield.
                    #[cfg(target_os = "linux")]
                    if let Err(e) = rustix::process::nice(10) {
                        tracing::debug!(error = %e, "bcrypt thread keeps its priority");
                    }
                    loop {
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a bcrypt thread");
            }
        }
        sender
    })
}

/// Why a password could not be checked or hashed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashBusy(pub String);

impl std::fmt::Display for HashBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `work` on the bcrypt threads; `Err` when the queue is full or the pool is gone.
async fn on_hash_threads<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashBusy> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = reply.send(work());
    });
    hash_queue().try_send(job).map_err(|e| {
        HashBusy(match e {
            std::sync::mpsc::TrySendError::Full(_) => "too many password checks waiting".into(),
            std::sync::mpsc::TrySendError::Disconnected(_) => "no bcrypt threads".into(),
        })
    })?;
    answer
        .await
        .map_err(|_| HashBusy("bcrypt thread stopped".into()))
}

/// bcrypt of a digest, off the async workers.
pub async fn hash_password(digest: String, cost: u32) -> Result<String, HashBusy> {
    on_hash_threads(move || bcrypt::hash(digest.to_ascii_lowercase(), cost))
        .await?
        .map_err(|e| HashBusy(e.to_string()))
}

/// Whether `digest` is the password behind `hash` (any bcrypt variant Meteor or Rocket.Chat
/// wrote), off the async workers. A malformed hash never matches; `Err` only when the check
/// could not run (the caller must not count that as a wrong password).
pub async fn verify_password(digest: String, hash: String) -> Result<bool, HashBusy> {
    on_hash_threads(move || bcrypt::verify(digest.to_ascii_lowercase(), &hash).unwrap_or(false))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret("door-key", "door-key"));
        assert!(!same_secret("door-ke", "door-key"), "a prefix");
        assert!(!same_secret("door-key!", "door-key"), "longer");
        assert!(!same_secret("door-kez", "door-key"));
        assert!(!same_secret("", "door-key"));
        assert!(
            !same_secret("door-key\0", "door-key"),
            "a trailing zero byte"
        );
        assert!(same_secret("", ""));
    }

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
        assert_eq!(
            verify_password(digest.to_uppercase(), hash.clone()).await,
            Ok(true)
        );
        assert_eq!(
            verify_password(password_digest("other"), hash).await,
            Ok(false)
        );
        assert_eq!(
            verify_password(digest, "not a hash".into()).await,
            Ok(false)
        );
    }
}
