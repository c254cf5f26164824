//! Mentions in a message's text: `@username` (and `@all`, `@here`) and `#channel`, read as
//! Rocket.Chat reads them: a mark at the start or after a space or punctuation, followed by
//! a name of letters, digits, `.`, `_` and `-`. Names are looked up by the caller; nothing
//! here reads the store.

/// The names a text mentions, each once, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub users: Vec<String>,
    pub channels: Vec<String>,
}

/// Most mentions of each kind one message may carry (more are ignored).
const MAX_MENTIONS: usize = 100;

fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The mentions in `text` (none inside inline code or code blocks).
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut in_code = false;
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '`' {
            in_code = !in_code;
        }
        let starts = previous.is_none_or(|p| {
            p.is_whitespace()
                || matches!(
                    p,
                    '(' | '[' | ',' | ';' | ':' | '"' | '\'' | '>' | '*' | '_' | '~'
                )
        });
        if !in_code && starts && (c == '@' || c == '#') {
            let rest = &text[at + 1..];
            let len: usize = rest
                .chars()
                .take_while(|c| name_char(*c))
                .map(char::len_utf8)
                .sum();
            // A trailing `.` or `-` ends a sentence, not a name.
            let name = rest[..len].trim_end_matches(['.', '-']);
            if !name.is_empty() {
                let list = if c == '@' {
                    &mut out.users
                } else {
                    &mut out.channels
                };
                if list.len() < MAX_MENTIONS && !list.iter().any(|n| n == name) {
                    list.push(name.to_owned());
                }
                for _ in 0..name.chars().count() {
                    chars.next();
                }
                previous = name.chars().last();
                continue;
            }
        }
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_channels_and_the_whole_room() {
        let p = parse("hi @alice and @bob.smith, see #general. @all @here @alice");
        assert_eq!(p.users, vec!["alice", "bob.smith", "all", "here"]);
        assert_eq!(p.channels, vec!["general"]);
    }

    #[test]
    fn addresses_and_code_are_not_mentions() {
        let p = parse("mail me at joe@example.com or `@not_this` #");
        assert!(p.users.is_empty(), "{p:?}");
        assert!(p.channels.is_empty(), "{p:?}");
    }

    #[test]
    fn punctuation_around_names() {
        let p = parse("(@carol) @dave: thanks @erin.");
        assert_eq!(p.users, vec!["carol", "dave", "erin"]);
    }
}
