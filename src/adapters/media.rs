//! What an uploaded file is and how to show it: its type sniffed from its
//! first bytes (never trusted from the client), a file name safe to store
//! and echo, the `Content-Disposition` to serve it with, and thumbnails of
//! images decoded under limits. Pure functions; `thumbnail` reads the one
//! staged file it is given and blocks.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// How many leading bytes `sniff` looks at.
pub const SNIFF_BYTES: usize = 8 * 1024;
/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;
/// The widest or tallest image `thumbnail` decodes.
const MAX_SIDE: u32 = 16_384;
/// The most pixels `thumbnail` decodes: a 16384² image is 268 M pixels,
/// too many for the side limit alone to stop a bomb.
const MAX_PIXELS: u64 = 40_000_000;
/// The most memory a decoder may ask for.
const MAX_ALLOC: u64 = 512 * 1024 * 1024;
/// The longest stored file name, in bytes (what most file systems allow).
const MAX_NAME_BYTES: usize = 255;
/// An extension longer than this is not worth keeping over the stem.
const MAX_EXTENSION_BYTES: usize = 32;

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sniffed {
    /// The type to store and serve the file with.
    pub content_type: &'static str,
    /// Whether browsers may show it in place (the allowlist); else it is
    /// served as an attachment.
    pub inline: bool,
    /// Whether `thumbnail` can decode it.
    pub image: bool,
}

/// Sniffs from the first up-to-8 KiB. Allowlist shown inline: image/jpeg,
/// image/png, image/gif, image/webp, video/mp4, video/webm, audio/mpeg,
/// audio/ogg (any Ogg container), application/pdf. Everything else is not
/// inline; unknown binary is "application/octet-stream" and UTF-8 text
/// "text/plain", so that SVG and HTML, which can carry scripts, are never
/// served as what they are.
#[must_use]
pub fn sniff(head: &[u8]) -> Sniffed {
    let head = &head[..head.len().min(SNIFF_BYTES)];
    let kind = infer::get(head);
    if let Some(kind) = kind {
        // infer names Ogg Opus apart; browsers play any Ogg as audio/ogg.
        let content_type = match kind.mime_type() {
            "audio/opus" | "application/ogg" => "audio/ogg",
            t => t,
        };
        if shown_inline(content_type) {
            return Sniffed {
                content_type,
                inline: true,
                image: content_type.starts_with("image/"),
            };
        }
        // Markup and scripts fall through to the text rule below: their
        // real type would let a browser run them.
        if kind.matcher_type() != infer::MatcherType::Text {
            return Sniffed {
                content_type: kind.mime_type(),
                inline: false,
                image: false,
            };
        }
    }
    Sniffed {
        content_type: if is_text(head) {
            "text/plain"
        } else {
            "application/octet-stream"
        },
        inline: false,
        image: false,
    }
}

/// Whether `head` reads as UTF-8 text: valid (but for a character cut at
/// the end of the sniffed window) and free of the control bytes that only
/// binary formats use (WHATWG MIME Sniffing's "binary data byte").
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    valid
        && !head
            .iter()
            .any(|&b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F))
}

/// A file name safe to store and show: last path component only, no
/// control or bidi-override characters, Windows' reserved characters
/// replaced by '_', no leading dots, trimmed, at most 255 bytes (cut on a
/// char boundary, extension kept when possible); "file" if nothing is left.
#[must_use]
pub fn sanitize_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .collect();
    let last = cleaned
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let replaced: String = last
        .chars()
        .map(|c| {
            if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    // A leading dot hides the file (or names "." / ".."), whatever spaces
    // come around it.
    let name = replaced
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    if name.is_empty() {
        return "file".to_owned();
    }
    truncate_name(name)
}

/// Characters that reorder the text around them, which lets a name like
/// "invoice\u{202E}fdp.exe" show as "invoiceexe.pdf".
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// `name` cut to `MAX_NAME_BYTES`, keeping its extension when it is short.
fn truncate_name(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let extension = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES => &name[dot..],
        _ => "",
    };
    let stem = &name[..name.len() - extension.len()];
    let cut = floor_char_boundary(stem, MAX_NAME_BYTES - extension.len());
    format!("{}{extension}", stem[..cut].trim_end())
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Bytes RFC 5987's `attr-char` allows unencoded; everything else is
/// percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="ascii-fallback"; filename*=UTF-8''percent-encoded`
/// (or `inline; ...`), per RFC 6266: the fallback is for clients that do not
/// read `filename*`, with every byte that is not printable ASCII, and the
/// quote and backslash, replaced by '_'.
#[must_use]
pub fn content_disposition(name: &str, inline: bool) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

/// A small re-encoded copy of an image.
#[derive(Debug)]
pub struct Thumbnail {
    /// The original's width, after EXIF orientation.
    pub width: u32,
    /// The original's height, after EXIF orientation.
    pub height: u32,
    /// The thumbnail, encoded.
    pub bytes: Vec<u8>,
    /// "image/png" or "image/jpeg".
    pub content_type: &'static str,
}

/// Why an image has no thumbnail. Neither fails the upload.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Over the decoding limits: possibly a decompression bomb.
    #[error("image too large to decode")]
    TooLarge,
    /// Not readable as the image it claims to be.
    #[error("undecodable image: {0}")]
    Undecodable(String),
}

impl From<ImageError> for MediaError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Limits(_) => Self::TooLarge,
            other => Self::Undecodable(other.to_string()),
        }
    }
}

/// A thumbnail of the image at `path`: longest side 320 px (never
/// upscaled), EXIF orientation applied, re-encoded (PNG when it has alpha,
/// else JPEG q80) so no metadata survives. Decoding limits: max 16384 px
/// per side, max 40 000 000 pixels, max_alloc 512 MiB, checked from the
/// header before any pixel is decoded. Returns the original's oriented
/// width/height too. Blocking: call on the blocking pool.
///
/// # Errors
/// `TooLarge` over the limits, `Undecodable` for anything else that stops
/// decoding (including a `content_type` that is not a supported image).
pub fn thumbnail(path: &Path, content_type: &str) -> Result<Thumbnail, MediaError> {
    let format = match content_type {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        other => {
            return Err(MediaError::Undecodable(format!(
                "not an image type: {other}"
            )));
        }
    };
    let file = File::open(path).map_err(|e| MediaError::Undecodable(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::with_format(BufReader::new(file), format);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(MediaError::TooLarge);
    }
    // `ImageReader::decode` makes this check, `from_decoder` does not.
    limits.reserve(decoder.total_bytes())?;
    // Unreadable EXIF is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder)?;

    // Scaled before it is turned: the bounding box is square, so the
    // result is the same, and only the small copy is rotated.
    let mut small = if width > THUMBNAIL_SIDE || height > THUMBNAIL_SIDE {
        image.resize(THUMBNAIL_SIDE, THUMBNAIL_SIDE, FilterType::CatmullRom)
    } else {
        image
    };
    small.apply_orientation(orientation);
    let (width, height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };

    // Only the pixels are encoded: the encoders write no metadata unless
    // given some, so EXIF (GPS position included) is gone.
    let mut bytes = Vec::new();
    let content_type = if small.has_alpha() {
        small
            .to_rgba8()
            .write_with_encoder(PngEncoder::new(&mut bytes))?;
        "image/png"
    } else {
        small
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 80))?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        width,
        height,
        bytes,
        content_type,
    })
}

/// Whether `orientation` turns the image a quarter, swapping its sides.
fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

#[cfg(test)]
mod tests;

/// The types shown in place rather than downloaded: the allowlist
/// [`sniff`] marks inline.
pub const INLINE_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/ogg",
    "application/pdf",
];

/// Whether a file of a stored (sniffed) type may be shown in place.
#[must_use]
pub fn shown_inline(content_type: &str) -> bool {
    INLINE_TYPES.contains(&content_type)
}
