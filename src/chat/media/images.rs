//! Uploaded images: their size, a tiny blurred preview, a thumbnail, and their metadata
//! removed (a photo's EXIF block carries where it was taken).
//!
//! Metadata comes off without touching the picture: JPEG's APP1 (EXIF, XMP), APP13 (IPTC)
//! and comment segments, PNG's `eXIf` and text chunks, WebP's `EXIF` and `XMP ` chunks are
//! dropped byte for byte. Only a JPEG whose EXIF turns it (orientation 2 to 8) is decoded
//! and written again upright, since the turn goes with the metadata.
//!
//! Decoding is bounded before it starts: the dimensions are read from the header and an
//! image over [`MAX_PIXELS`] is refused undecoded (a decompression bomb is a few KiB that
//! claims gigapixels), and the decoder's allocations are capped. The work is CPU-bound:
//! callers run it off the async threads, a few at a time. It must not know about storage,
//! records or HTTP.

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, ImageReader};
use std::io::Cursor;

/// The most pixels an image may claim to be decoded (40 MP, a large phone photo's double).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The longest side decoded.
const MAX_SIDE: u32 = 16_384;
/// The decoder's allocation cap.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// The preview's longest side.
const PREVIEW_SIDE: u32 = 32;

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image is {width}×{height} pixels, more than this server decodes")]
    TooLarge { width: u32, height: u32 },
    #[error("the image cannot be read: {0}")]
    Unreadable(String),
}

/// What to do with an image.
#[derive(Clone, Copy, Debug)]
pub struct ImageOptions {
    pub strip_metadata: bool,
    /// The thumbnail's box, when thumbnails are made.
    pub thumbnail: Option<(u32, u32)>,
}

/// A smaller copy of an image.
#[derive(Clone, Debug)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// An image after processing.
#[derive(Clone, Debug)]
pub struct Processed {
    /// The bytes to store (without metadata when asked).
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Rocket.Chat's `identify.format` (`png`, `jpeg`, `gif`, `webp`).
    pub format: &'static str,
    /// Base64 of a blurred JPEG at most 32 pixels wide.
    pub preview: Option<String>,
    pub thumbnail: Option<Thumbnail>,
}

/// The formats processed; anything else is stored as it came.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Gif => "gif",
        ImageFormat::WebP => "webp",
        _ => "unknown",
    }
}

fn reader(bytes: &[u8], format: ImageFormat) -> ImageReader<Cursor<&[u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader
}

/// The dimensions the header claims, refused when too many to decode.
pub fn checked_dimensions(bytes: &[u8], format: ImageFormat) -> Result<(u32, u32), ImageError> {
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ImageError::Unreadable(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok((width, height))
}

/// Processes `bytes` of the image type `format`.
pub fn process(
    bytes: Vec<u8>,
    format: ImageFormat,
    options: ImageOptions,
) -> Result<Processed, ImageError> {
    let (mut width, mut height) = checked_dimensions(&bytes, format)?;
    let decode = |bytes: &[u8]| {
        reader(bytes, format)
            .decode()
            .map_err(|e| ImageError::Unreadable(e.to_string()))
    };
    let orientation = if format == ImageFormat::Jpeg {
        jpeg_orientation(&bytes)
    } else {
        1
    };
    let mut decoded: Option<DynamicImage> = None;
    let stored = if options.strip_metadata && (2..=8).contains(&orientation) {
        let upright = apply_orientation(decode(&bytes)?, orientation);
        (width, height) = (upright.width(), upright.height());
        let encoded = encode(&upright, ImageFormat::Jpeg, 90)?;
        decoded = Some(upright);
        encoded
    } else if options.strip_metadata {
        strip_metadata(&bytes, format).unwrap_or(bytes)
    } else {
        bytes
    };
    let image = match decoded {
        Some(image) => image,
        None => decode(&stored)?,
    };
    let small = image.thumbnail(PREVIEW_SIDE, PREVIEW_SIDE).blur(1.0);
    let preview = encode(
        &DynamicImage::ImageRgb8(small.to_rgb8()),
        ImageFormat::Jpeg,
        50,
    )
    .ok()
    .map(|jpeg| base64::engine::general_purpose::STANDARD.encode(jpeg));
    let thumbnail = match options.thumbnail {
        Some((w, h)) if width > w || height > h => {
            let thumb = image.thumbnail(w, h);
            let (kind, content_type) = if thumb.color().has_alpha() {
                (ImageFormat::Png, "image/png")
            } else {
                (ImageFormat::Jpeg, "image/jpeg")
            };
            let thumb = if kind == ImageFormat::Jpeg {
                DynamicImage::ImageRgb8(thumb.to_rgb8())
            } else {
                thumb
            };
            Some(Thumbnail {
                bytes: encode(&thumb, kind, 80)?,
                content_type,
                width: thumb.width(),
                height: thumb.height(),
            })
        }
        _ => None,
    };
    Ok(Processed {
        bytes: stored,
        width,
        height,
        format: format_name(format),
        preview,
        thumbnail,
    })
}

fn encode(image: &DynamicImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let outcome = if format == ImageFormat::Jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        DynamicImage::ImageRgb8(image.to_rgb8()).write_with_encoder(encoder)
    } else {
        image.write_to(&mut Cursor::new(&mut out), format)
    };
    outcome.map_err(|e| ImageError::Unreadable(e.to_string()))?;
    Ok(out)
}

fn apply_orientation(image: DynamicImage, orientation: u16) -> DynamicImage {
    match orientation {
        2 => image.fliph(),
        3 => image.rotate180(),
        4 => image.flipv(),
        5 => image.rotate90().fliph(),
        6 => image.rotate90(),
        7 => image.rotate270().fliph(),
        8 => image.rotate270(),
        _ => image,
    }
}

/// The EXIF orientation of a JPEG (1, upright, when absent or unreadable).
pub fn jpeg_orientation(bytes: &[u8]) -> u16 {
    jpeg_segments(bytes)
        .into_iter()
        .flatten()
        .filter(|s| s.marker == 0xe1)
        .find_map(|s| exif_orientation(&bytes[s.body.clone()]))
        .unwrap_or(1)
}

fn exif_orientation(app1: &[u8]) -> Option<u16> {
    let tiff = app1.strip_prefix(b"Exif\0\0")?;
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at + 2)?;
        Some(if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries.min(512))
        .map(|i| ifd + 2 + i * 12)
        .find(|&at| u16_at(at) == Some(0x0112))
        .and_then(|at| u16_at(at + 8))
}

struct Segment {
    marker: u8,
    /// The whole segment, marker included.
    whole: std::ops::Range<usize>,
    /// Its payload.
    body: std::ops::Range<usize>,
}

/// A JPEG's segments up to the start of scan; `None` if the structure is broken.
fn jpeg_segments(b: &[u8]) -> Option<Vec<Segment>> {
    if !b.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 2;
    loop {
        // Fill bytes (0xff) may precede a marker.
        while b.get(at) == Some(&0xff) && b.get(at + 1) == Some(&0xff) {
            at += 1;
        }
        if b.get(at) != Some(&0xff) {
            return None;
        }
        let marker = *b.get(at + 1)?;
        if marker == 0xda || marker == 0xd9 {
            out.push(Segment {
                marker,
                whole: at..b.len(),
                body: at..b.len(),
            });
            return Some(out);
        }
        if (0xd0..=0xd7).contains(&marker) || marker == 0x01 {
            out.push(Segment {
                marker,
                whole: at..at + 2,
                body: at + 2..at + 2,
            });
            at += 2;
            continue;
        }
        let len = u16::from_be_bytes([*b.get(at + 2)?, *b.get(at + 3)?]) as usize;
        if len < 2 || at + 2 + len > b.len() {
            return None;
        }
        out.push(Segment {
            marker,
            whole: at..at + 2 + len,
            body: at + 4..at + 2 + len,
        });
        at += 2 + len;
    }
}

/// `bytes` without their metadata blocks; `None` when the structure is not understood
/// (the caller then keeps what it has, as when there is nothing to strip).
pub fn strip_metadata(bytes: &[u8], format: ImageFormat) -> Option<Vec<u8>> {
    match format {
        ImageFormat::Jpeg => {
            let segments = jpeg_segments(bytes)?;
            let mut out = Vec::with_capacity(bytes.len());
            out.extend_from_slice(&bytes[..2]);
            for s in segments {
                // APP1: EXIF and XMP; APP13: IPTC; COM: comments.
                if !matches!(s.marker, 0xe1 | 0xed | 0xfe) {
                    out.extend_from_slice(&bytes[s.whole]);
                }
            }
            Some(out)
        }
        ImageFormat::Png => {
            let mut out = Vec::with_capacity(bytes.len());
            out.extend_from_slice(bytes.get(..8)?);
            let mut at = 8;
            while at < bytes.len() {
                let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
                let end = at.checked_add(12)?.checked_add(len)?;
                let kind = bytes.get(at + 4..at + 8)?;
                let chunk = bytes.get(at..end)?;
                if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
                    out.extend_from_slice(chunk);
                }
                at = end;
            }
            Some(out)
        }
        ImageFormat::WebP => {
            if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WEBP" {
                return None;
            }
            let mut out = Vec::with_capacity(bytes.len());
            out.extend_from_slice(&bytes[..12]);
            let mut at = 12;
            while at < bytes.len() {
                let kind = bytes.get(at..at + 4)?;
                let len = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
                let end = (at + 8).checked_add(len + (len & 1))?.min(bytes.len());
                let chunk = bytes.get(at..end)?;
                match kind {
                    b"EXIF" | b"XMP " => {}
                    b"VP8X" => {
                        let start = out.len();
                        out.extend_from_slice(chunk);
                        // The flags say which metadata chunks follow: none now.
                        if let Some(flags) = out.get_mut(start + 8) {
                            *flags &= !0x0c;
                        }
                    }
                    _ => out.extend_from_slice(chunk),
                }
                at = end;
            }
            let riff_len = u32::try_from(out.len() - 8).ok()?;
            out[4..8].copy_from_slice(&riff_len.to_le_bytes());
            Some(out)
        }
        _ => Some(bytes.to_vec()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG of `w`×`h` with an EXIF block naming `orientation` and a GPS-like string.
    pub(crate) fn jpeg_with_exif(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, _| {
            image::Rgb([if x < w / 2 { 255 } else { 0 }, 0, 0])
        }));
        let plain = encode(&image, ImageFormat::Jpeg, 90).expect("encode");
        // Exif\0\0 + big-endian TIFF with one IFD entry (orientation), then a marker text.
        let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tiff.extend_from_slice(b"GPS 48.8584N 2.2945E");
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn exif_comes_off_a_jpeg_and_the_picture_stays_the_same_bytes() {
        let with = jpeg_with_exif(64, 48, 1);
        assert_eq!(jpeg_orientation(&with), 1);
        assert!(contains(&with, b"GPS 48.8584N"));
        let options = ImageOptions {
            strip_metadata: true,
            thumbnail: None,
        };
        let done = process(with.clone(), ImageFormat::Jpeg, options).expect("process");
        assert!(!contains(&done.bytes, b"GPS 48.8584N"));
        assert!(!contains(&done.bytes, b"Exif\0\0"));
        assert_eq!((done.width, done.height), (64, 48));
        // Only the segment went: the rest is the original, byte for byte.
        assert_eq!(
            done.bytes.len(),
            with.len() - (b"Exif\0\0".len() + 4 + 10 + 8 + 8 + 20)
        );
        assert!(done.preview.is_some());
        let kept = process(
            with.clone(),
            ImageFormat::Jpeg,
            ImageOptions {
                strip_metadata: false,
                thumbnail: None,
            },
        )
        .expect("process");
        assert_eq!(kept.bytes, with);
    }

    #[test]
    fn a_turned_jpeg_is_stored_upright_without_its_exif() {
        let turned = jpeg_with_exif(64, 48, 6);
        assert_eq!(jpeg_orientation(&turned), 6);
        let options = ImageOptions {
            strip_metadata: true,
            thumbnail: None,
        };
        let done = process(turned, ImageFormat::Jpeg, options).expect("process");
        assert_eq!((done.width, done.height), (48, 64));
        assert!(!contains(&done.bytes, b"GPS 48.8584N"));
        assert_eq!(jpeg_orientation(&done.bytes), 1);
    }

    #[test]
    fn png_and_webp_lose_their_metadata_chunks_and_still_decode() {
        let image = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            20,
            10,
            image::Rgba([1, 2, 3, 128]),
        ));
        let png = encode(&image, ImageFormat::Png, 0).expect("png");
        // An eXIf chunk before IEND (its CRC is not checked by the stripper).
        let iend = png.len() - 12;
        let mut with = png[..iend].to_vec();
        with.extend_from_slice(&5u32.to_be_bytes());
        with.extend_from_slice(b"eXIfSECRT\0\0\0\0");
        with.extend_from_slice(&png[iend..]);
        let stripped = strip_metadata(&with, ImageFormat::Png).expect("png");
        assert_eq!(stripped, png);

        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\x08\0\0\0\x13\0\0\x09\0\0".to_vec();
        webp.extend_from_slice(b"EXIF\x05\0\0\0SECRT\0");
        let len = (webp.len() - 8) as u32;
        webp[4..8].copy_from_slice(&len.to_le_bytes());
        let stripped = strip_metadata(&webp, ImageFormat::WebP).expect("webp");
        assert!(!contains(&stripped, b"SECRT"));
        assert_eq!(stripped[20] & 0x0c, 0);
        assert_eq!(
            u32::from_le_bytes(stripped[4..8].try_into().expect("4")) as usize,
            stripped.len() - 8
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_undecoded() {
        // A PNG header claiming 100,000 × 100,000 pixels, and nothing behind it.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        // One IDAT of a stored zlib block (a real bomb compresses gigabytes of zeros into
        // a few KiB; the header alone must refuse it) and the end.
        for (kind, data) in [
            (
                &b"IDAT"[..],
                &[
                    0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x01, 0x00, 0x01,
                ][..],
            ),
            (&b"IEND"[..], &[][..]),
        ] {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let crc = crc32(&png[start..]);
            png.extend_from_slice(&crc.to_be_bytes());
        }
        let refused = process(
            png,
            ImageFormat::Png,
            ImageOptions {
                strip_metadata: true,
                thumbnail: Some((480, 360)),
            },
        );
        assert_eq!(
            refused.err(),
            Some(ImageError::TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
    }

    #[test]
    fn a_large_image_gets_a_thumbnail_in_the_box_and_a_small_one_none() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            1200,
            600,
            image::Rgb([9, 9, 9]),
        ));
        let jpeg = encode(&image, ImageFormat::Jpeg, 80).expect("jpeg");
        let options = ImageOptions {
            strip_metadata: true,
            thumbnail: Some((480, 360)),
        };
        let done = process(jpeg, ImageFormat::Jpeg, options).expect("process");
        let thumb = done.thumbnail.expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (480, 240));
        assert_eq!(thumb.content_type, "image/jpeg");
        let small = encode(
            &DynamicImage::ImageRgb8(image::RgbImage::new(100, 50)),
            ImageFormat::Jpeg,
            80,
        )
        .expect("jpeg");
        assert!(process(small, ImageFormat::Jpeg, options)
            .expect("process")
            .thumbnail
            .is_none());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
