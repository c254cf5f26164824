//! Secrets as values: a text that never reaches a log, and a comparison whose time does not
//! depend on where two secrets differ. Pure data, used by every layer that holds one (the
//! administrator's password, the metrics token, login tokens).

/// A secret that must never reach a log: `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whether two secrets are equal, in a time that does not depend on where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut differ = u8::from(a.len() != b.len());
    for (i, byte) in b.iter().enumerate() {
        differ |= byte ^ a.get(i).copied().unwrap_or(0);
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_equal_only_to_itself_and_never_printed() {
        assert!(same_secret("abc", "abc"));
        assert!(
            !same_secret("abd", "abc") && !same_secret("ab", "abc") && !same_secret("abcd", "abc")
        );
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "[redacted]");
    }
}
