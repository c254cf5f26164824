//! What comet knows of file formats, apart from any service: the type a file's bytes show
//! and the names it may have ([`sniff`]), images' sizes, previews, thumbnails and
//! metadata ([`images`]), images given inline as data URIs, and the one bounded fetch of
//! an image by URL ([`remote`]). Uploads, avatars and room avatars all read files through
//! here. It must not store anything, nor know any service.

pub mod images;
pub mod remote;
pub mod sniff;

use crate::engine::error::ServiceError;
use crate::model::MeteorError;
use base64::Engine as _;

fn refused(error: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(error, reason))
}

/// The image type of `bytes`, from their first bytes; `None` for anything else.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The bytes of a `data:<type>;base64,<data>` URI, bounded before decoding.
pub fn data_uri_bytes(uri: &str, max_bytes: usize) -> Result<Vec<u8>, ServiceError> {
    let invalid = || refused("error-invalid-image", "The image must be a base64 data URI");
    let rest = uri.strip_prefix("data:").ok_or_else(invalid)?;
    let (meta, data) = rest.split_once(',').ok_or_else(invalid)?;
    if !meta.ends_with(";base64") {
        return Err(invalid());
    }
    if data.len() > max_bytes.div_ceil(3) * 4 + 4 {
        return Err(refused("error-file-too-large", "The image is too large"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes_and_only_raster_images_pass() {
        assert_eq!(
            image_type(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0]),
            Some("image/png")
        );
        assert_eq!(image_type(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(image_type(b"GIF89a...."), Some("image/gif"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            image_type(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script/></svg>"),
            None
        );
        assert_eq!(image_type(b""), None);
    }

    #[test]
    fn a_data_uri_is_decoded_and_anything_else_refused() {
        assert_eq!(
            data_uri_bytes("data:image/png;base64,AAEC", 1024).ok(),
            Some(vec![0, 1, 2])
        );
        assert!(data_uri_bytes("https://example.com/a.png", 1024).is_err());
        assert!(data_uri_bytes("data:image/png,plain", 1024).is_err());
        assert!(data_uri_bytes("data:image/png;base64,!!!", 1024).is_err());
        let huge = format!("data:image/png;base64,{}", "A".repeat(4096));
        assert!(data_uri_bytes(&huge, 1024).is_err());
    }
}
