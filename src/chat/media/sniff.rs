//! What a file is, from its first bytes, and what it may be called.
//!
//! A client's claimed type is a hint only: the type stored and served is the one the bytes
//! show. The claim is taken only where it refines a container the bytes cannot tell apart
//! (a `.docx` is a ZIP, an Ogg may be audio or video). Names lose any path, control and
//! bidirectional-override characters. It must not know about storage or HTTP.

/// Bytes looked at to decide a type.
pub const SNIFF_BYTES: usize = 4096;

/// The type the bytes of a file show, refined by the client's `claimed` type where the
/// bytes are a container it may name.
pub fn content_type(head: &[u8], claimed: &str) -> String {
    let claimed = claimed
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let seen = from_bytes(head);
    let refines = |prefixes: &[&str]| prefixes.iter().any(|p| claimed.starts_with(p));
    let refined = match seen {
        "application/zip" => refines(&[
            "application/vnd.openxmlformats-officedocument.",
            "application/vnd.oasis.opendocument.",
            "application/java-archive",
            "application/vnd.android.package-archive",
            "application/epub+zip",
            "application/x-zip-compressed",
        ]),
        "audio/ogg" => refines(&["video/ogg", "application/ogg", "audio/opus"]),
        "video/webm" => refines(&["audio/webm", "video/x-matroska", "audio/x-matroska"]),
        "video/mp4" => refines(&["audio/mp4", "audio/x-m4a", "audio/aac", "video/3gpp"]),
        "application/x-cfb" => refines(&[
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint",
            "application/vnd.ms-outlook",
        ]),
        "text/plain" => refines(&[
            "text/csv",
            "text/markdown",
            "text/x-",
            "application/json",
            "application/x-yaml",
            "text/tab-separated-values",
            "text/calendar",
            "text/vcard",
        ]),
        _ => false,
    };
    if refined {
        claimed
    } else {
        seen.to_owned()
    }
}

fn from_bytes(b: &[u8]) -> &'static str {
    let at = |offset: usize, magic: &[u8]| {
        b.len() >= offset + magic.len() && &b[offset..offset + magic.len()] == magic
    };
    if at(0, &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        "image/png"
    } else if at(0, &[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "image/gif"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        "video/x-msvideo"
    } else if at(0, b"BM") && b.len() > 14 {
        "image/bmp"
    } else if at(0, &[0, 0, 1, 0]) && b.len() > 6 {
        "image/x-icon"
    } else if at(4, b"ftyp") {
        let brand = b.get(8..12).unwrap_or_default();
        match brand {
            b"heic" | b"heix" | b"mif1" | b"msf1" => "image/heic",
            b"avif" | b"avis" => "image/avif",
            b"M4A " | b"M4B " => "audio/mp4",
            b"qt  " => "video/quicktime",
            b"3gp4" | b"3gp5" | b"3gp6" | b"3g2a" => "video/3gpp",
            _ => "video/mp4",
        }
    } else if at(0, b"%PDF-") {
        "application/pdf"
    } else if at(0, b"PK\x03\x04") || at(0, b"PK\x05\x06") {
        "application/zip"
    } else if at(0, &[0x1f, 0x8b]) {
        "application/gzip"
    } else if at(0, b"7z\xbc\xaf\x27\x1c") {
        "application/x-7z-compressed"
    } else if at(0, b"Rar!\x1a\x07") {
        "application/vnd.rar"
    } else if at(0, b"OggS") {
        "audio/ogg"
    } else if at(0, b"fLaC") {
        "audio/flac"
    } else if at(0, b"ID3") || (b.len() > 2 && b[0] == 0xff && (b[1] & 0xe6) == 0xe2) {
        "audio/mpeg"
    } else if b.len() > 2 && b[0] == 0xff && (b[1] & 0xf6) == 0xf0 {
        "audio/aac"
    } else if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        "video/webm"
    } else if at(0, &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) {
        "application/x-cfb"
    } else if at(0, b"MZ") {
        "application/x-msdownload"
    } else if at(0, b"\x7fELF") {
        "application/x-executable"
    } else {
        textual(b)
    }
}

/// Text kinds a browser would render (HTML, SVG, XML) told apart from plain text; binary
/// data is `application/octet-stream`.
fn textual(b: &[u8]) -> &'static str {
    let text = match std::str::from_utf8(b) {
        Ok(t) => t,
        // The head may end inside a character.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return "application/octet-stream",
    };
    if b.is_empty() {
        return "application/octet-stream";
    }
    if text.contains('\0') {
        return "application/octet-stream";
    }
    let lower = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_lowercase();
    if lower.contains("<svg") {
        "image/svg+xml"
    } else if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || lower.contains("<script")
        || lower.contains("<body")
        || lower.contains("<iframe")
    {
        "text/html"
    } else if lower.starts_with("<?xml") {
        "application/xml"
    } else {
        "text/plain"
    }
}

/// Rocket.Chat's type group: the part before `/` (`image`, `audio`, `video`,
/// `application`, `text`).
pub fn type_group(content_type: &str) -> &str {
    content_type.split('/').next().unwrap_or("application")
}

/// Whether `content_type` passes a comma list of types as Rocket.Chat's settings write
/// them (`image/*`, `application/pdf`); an empty list passes nothing.
pub fn listed(content_type: &str, list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| match entry.strip_suffix("/*") {
            Some(group) => type_group(content_type).eq_ignore_ascii_case(group),
            None => entry.eq_ignore_ascii_case(content_type),
        })
}

/// The longest name kept, in characters.
const MAX_NAME_CHARS: usize = 200;

/// A file's name as shown and served: the last segment of any path, without control or
/// direction-override characters, without leading dots, at most [`MAX_NAME_CHARS`];
/// `file` when nothing is left.
pub fn clean_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let kept: String = last
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        })
        .take(MAX_NAME_CHARS)
        .collect();
    let trimmed = kept.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The extension of a cleaned name (`png` of `a.b.png`), lower case, letters and digits
/// only; empty when there is none.
pub fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, ext))
            if !ext.is_empty()
                && ext.len() <= 10
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            ext.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_decide_the_type_whatever_the_client_claims() {
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0];
        assert_eq!(content_type(&png, "application/pdf"), "image/png");
        assert_eq!(
            content_type(b"<html><script>alert(1)</script>", "image/png"),
            "text/html"
        );
        assert_eq!(
            content_type(
                b"<?xml version=\"1.0\"?>\n<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>",
                "image/png"
            ),
            "image/svg+xml"
        );
        assert_eq!(content_type(b"%PDF-1.7\n", "text/plain"), "application/pdf");
        assert_eq!(content_type(b"hello\n", "image/jpeg"), "text/plain");
        assert_eq!(
            content_type(&[0, 1, 2, 0xff, 0xfe, 3], ""),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(b"MZ\x90\0", "image/png"),
            "application/x-msdownload"
        );
    }

    #[test]
    fn a_claim_only_refines_a_container_the_bytes_cannot_tell_apart() {
        let zip = b"PK\x03\x04rest";
        assert_eq!(
            content_type(
                zip,
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            ),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        assert_eq!(content_type(zip, "text/html"), "application/zip");
        assert_eq!(content_type(b"a,b\n1,2\n", "text/csv"), "text/csv");
        assert_eq!(content_type(b"a,b\n1,2\n", "text/html"), "text/plain");
        assert_eq!(content_type(b"OggS\0\x02", "video/ogg"), "video/ogg");
        assert_eq!(
            content_type(b"\0\0\0\x20ftypM4A \0\0", "audio/x-m4a"),
            "audio/mp4"
        );
    }

    #[test]
    fn lists_match_whole_types_or_groups() {
        assert!(listed("image/svg+xml", "image/svg+xml"));
        assert!(listed("image/png", "image/*, application/pdf"));
        assert!(listed("application/pdf", "image/*,application/pdf"));
        assert!(!listed("application/zip", "image/*,application/pdf"));
        assert!(!listed("image/png", ""));
    }

    #[test]
    fn names_lose_paths_controls_and_direction_overrides() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\me\\photo.jpg"), "photo.jpg");
        assert_eq!(clean_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(clean_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
        assert_eq!(clean_name("..."), "file");
        assert_eq!(clean_name(""), "file");
        assert_eq!(clean_name(".hidden"), "hidden");
        assert_eq!(clean_name(&"x".repeat(500)).chars().count(), 200);
        assert_eq!(extension("a.b.PNG"), "png");
        assert_eq!(extension("noext"), "");
        assert_eq!(extension("weird.p n g"), "");
    }
}
