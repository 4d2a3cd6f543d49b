use std::io::Cursor;
use std::path::PathBuf;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, RgbaImage};

use super::*;

/// `image` encoded as `format` by the image crate: real headers.
fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn rgb(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    }))
}

/// The left half transparent, the right half opaque green.
fn rgba(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([10, 200, 30, 255])
        }
    }))
}

/// `bytes` written to a file in a fresh folder (kept alive by the guard).
fn staged(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_inline(head: &[u8], content_type: &str, image: bool) {
    let sniffed = sniff(head);
    assert_eq!(
        (sniffed.content_type, sniffed.inline, sniffed.image),
        (content_type, true, image),
    );
}

#[test]
fn images_from_the_image_crate_are_inline_images() {
    let small = rgb(8, 4);
    assert_inline(&encode(&small, ImageFormat::Png), "image/png", true);
    assert_inline(&encode(&small, ImageFormat::Jpeg), "image/jpeg", true);
    assert_inline(&encode(&rgba(8, 4), ImageFormat::Gif), "image/gif", true);
    assert_inline(&encode(&rgba(8, 4), ImageFormat::WebP), "image/webp", true);
}

#[test]
fn allowlisted_media_and_pdf_are_inline_but_not_images() {
    assert_inline(
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        "application/pdf",
        false,
    );
    let mut mp4 = vec![0, 0, 0, 0x18];
    mp4.extend_from_slice(b"ftypmp42\0\0\0\0mp42isom");
    assert_inline(&mp4, "video/mp4", false);
    let webm = [
        0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81, 0x01, 0x42, 0xF2,
        0x81, 0x04, 0x42, 0xF3, 0x81, 0x08, 0x42, 0x82, 0x84, b'w', b'e', b'b', b'm', 0x42, 0x87,
        0x81, 0x04, 0x42, 0x85, 0x81, 0x02,
    ];
    assert_inline(&webm, "video/webm", false);
    assert_inline(b"ID3\x04\x00\x00\x00\x00\x00\x21TIT2", "audio/mpeg", false);
    assert_inline(&[0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0], "audio/mpeg", false);

    // An Ogg page carrying Vorbis, and one carrying Opus (which infer
    // names audio/opus): both are the Ogg container.
    let mut vorbis = b"OggS\0\x02".to_vec();
    vorbis.resize(28, 0);
    vorbis.extend_from_slice(b"\x01vorbis\0\0\0\0\x02\x44\xac\0\0");
    assert_inline(&vorbis, "audio/ogg", false);
    let mut opus = b"OggS\0\x02".to_vec();
    opus.resize(28, 0);
    opus.extend_from_slice(b"OpusHead\x01\x02\x38\x01");
    assert_inline(&opus, "audio/ogg", false);
}

#[test]
fn html_and_svg_are_never_inline_nor_their_own_type() {
    let cases: &[&[u8]] = &[
        b"<!doctype html><html><script>alert(1)</script></html>",
        b"<!DOCTYPE HTML>\n<title>x</title>",
        b"<html><body onload=alert(1)>",
        b"<HTML >",
        b" \n\t<html>",
        b"\xEF\xBB\xBF<html>",
        b"\xEF\xBB\xBF  \r\n<!doctype html>",
        b"<script>alert(1)</script>",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>",
        b"<svg>",
        b"  <svg ",
        b"\xEF\xBB\xBF<svg xmlns=\"http://www.w3.org/2000/svg\">",
        b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><script/></svg>",
        b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE svg><svg/>",
        b"<?xml version=\"1.0\"?><html xmlns=\"http://www.w3.org/1999/xhtml\"/>",
        // Binary bytes inside markup make it unknown binary, still not inline.
        b"<html>\0\x01\x02",
    ];
    for head in cases {
        let sniffed = sniff(head);
        assert!(!sniffed.inline, "{:?}", String::from_utf8_lossy(head));
        assert!(!sniffed.image, "{:?}", String::from_utf8_lossy(head));
        assert!(
            matches!(
                sniffed.content_type,
                "text/plain" | "application/octet-stream"
            ),
            "{:?} sniffed as {}",
            String::from_utf8_lossy(head),
            sniffed.content_type
        );
    }
}

#[test]
fn text_is_plain_and_unknown_binary_is_octet_stream() {
    let plain = Sniffed {
        content_type: "text/plain",
        inline: false,
        image: false,
    };
    assert_eq!(sniff("héllo, wörld\r\n\tmore\n".as_bytes()), plain);
    // A character cut at the end of the sniffed window is still text.
    let long = format!("a{}", "é".repeat(SNIFF_BYTES));
    assert!(std::str::from_utf8(&long.as_bytes()[..SNIFF_BYTES]).is_err());
    assert_eq!(sniff(long.as_bytes()), plain);
    // An invalid byte inside the window is not.
    let octets = Sniffed {
        content_type: "application/octet-stream",
        inline: false,
        image: false,
    };
    assert_eq!(sniff(b"caf\xE9 au lait"), octets);
    assert_eq!(sniff(&[0x00, 0xFF, 0x13, 0x37, 0x42, 0x99, 0x01]), octets);
    assert_eq!(sniff(b"plain words\0then a NUL"), octets);
}

#[test]
fn known_types_off_the_allowlist_keep_their_type_but_are_not_inline() {
    let zip = sniff(b"PK\x03\x04\x14\0\0\0\x08\0");
    assert_eq!(zip.content_type, "application/zip");
    assert!(!zip.inline && !zip.image);
    let bmp = sniff(b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00");
    assert!(!bmp.inline && !bmp.image, "{bmp:?}");
}

#[test]
fn names_keep_the_last_path_component_only() {
    assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
    assert_eq!(
        sanitize_name("..\\..\\Windows\\System32\\cmd.exe"),
        "cmd.exe"
    );
    assert_eq!(sanitize_name("C:\\Users\\me\\report.pdf"), "report.pdf");
    assert_eq!(sanitize_name("photos/2024/"), "2024");
    assert_eq!(sanitize_name("a/.."), "file");
    assert_eq!(sanitize_name("/"), "file");
}

#[test]
fn names_lose_control_and_bidi_characters_and_reserved_ones() {
    assert_eq!(sanitize_name("a\nb\r\0c\x7f\u{85}.txt"), "abc.txt");
    assert_eq!(sanitize_name("evil\r\nSet-Cookie: x"), "evilSet-Cookie_ x");
    // "invoice" U+202E "fdp.exe" shows as "invoiceexe.pdf": the override reverses the rest.
    assert_eq!(sanitize_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
    for bidi in [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ] {
        assert_eq!(
            sanitize_name(&format!("a{bidi}b.txt")),
            "ab.txt",
            "{bidi:?}"
        );
    }
    assert_eq!(sanitize_name("a<b>c:d\"e|f?g*h.txt"), "a_b_c_d_e_f_g_h.txt");
    assert_eq!(
        sanitize_name("Résumé 2024 (final).pdf"),
        "Résumé 2024 (final).pdf"
    );
    assert_eq!(sanitize_name("写真.jpg"), "写真.jpg");
}

#[test]
fn names_lose_leading_dots_and_surrounding_space_and_are_never_empty() {
    assert_eq!(sanitize_name(".bashrc"), "bashrc");
    assert_eq!(
        sanitize_name("  . .hidden.txt  "),
        ".hidden.txt".trim_start_matches('.')
    );
    assert_eq!(sanitize_name("  report.pdf \t"), "report.pdf");
    assert_eq!(sanitize_name(""), "file");
    assert_eq!(sanitize_name("   "), "file");
    assert_eq!(sanitize_name("..."), "file");
    assert_eq!(sanitize_name(".."), "file");
    assert_eq!(sanitize_name("\u{202E}\n"), "file");
}

#[test]
fn long_names_are_cut_to_255_bytes_keeping_the_extension() {
    let name = sanitize_name(&format!("{}.pdf", "a".repeat(300)));
    assert_eq!(name.len(), 255);
    assert!(name.ends_with(".pdf") && name.starts_with("aaa"));

    // Two-byte characters: the cut lands on a char boundary.
    let name = sanitize_name(&format!("{}.txt", "é".repeat(200)));
    assert!(name.len() <= 255 && name.len() >= 253, "{}", name.len());
    assert_eq!(name, format!("{}.txt", "é".repeat(125)));

    assert_eq!(sanitize_name(&"x".repeat(400)), "x".repeat(255));
    // An "extension" longer than a real one is not kept whole.
    let name = sanitize_name(&format!("a.{}", "b".repeat(300)));
    assert_eq!(name, format!("a.{}", "b".repeat(253)));
    // Four-byte characters with no extension.
    let name = sanitize_name(&"😀".repeat(100));
    assert_eq!(name, "😀".repeat(63));
}

#[test]
fn content_disposition_for_ascii_names() {
    assert_eq!(
        content_disposition("report.pdf", false),
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    );
    assert_eq!(
        content_disposition("my photo (1).png", true),
        "inline; filename=\"my photo (1).png\"; filename*=UTF-8''my%20photo%20%281%29.png"
    );
    assert_eq!(
        content_disposition("a\"b\\c.txt", false),
        "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%5Cc.txt"
    );
    // attr-char's punctuation is left as it is.
    assert_eq!(
        content_disposition("!#$&+-.^_`|~", false),
        "attachment; filename=\"!#$&+-.^_`|~\"; filename*=UTF-8''!#$&+-.^_`|~"
    );
}

#[test]
fn content_disposition_for_other_names() {
    assert_eq!(
        content_disposition("naïve résumé.pdf", false),
        "attachment; filename=\"na_ve r_sum_.pdf\"; \
         filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf"
    );
    assert_eq!(
        content_disposition("😀.png", true),
        "inline; filename=\"_.png\"; filename*=UTF-8''%F0%9F%98%80.png"
    );
    // Whatever it is given, no header can be smuggled in.
    let header = content_disposition("x\r\nSet-Cookie: a=b;\"", false);
    assert!(!header.contains(['\r', '\n']), "{header}");
    assert!(header.starts_with("attachment; filename=\"x__Set-Cookie: a=b;_\";"));
}

fn thumb_of(bytes: &[u8], content_type: &str) -> Result<Thumbnail, MediaError> {
    let (_dir, path) = staged(bytes);
    thumbnail(&path, content_type)
}

fn decoded(thumb: &Thumbnail) -> DynamicImage {
    let format = match thumb.content_type {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        other => panic!("thumbnail typed {other}"),
    };
    image::load_from_memory_with_format(&thumb.bytes, format).unwrap()
}

#[test]
fn a_large_image_is_scaled_to_fit_320_keeping_its_aspect() {
    let thumb = thumb_of(&encode(&rgb(1000, 500), ImageFormat::Png), "image/png").unwrap();
    assert_eq!((thumb.width, thumb.height), (1000, 500));
    assert_eq!(thumb.content_type, "image/jpeg", "no alpha: JPEG");
    let small = decoded(&thumb);
    assert_eq!((small.width(), small.height()), (320, 160));

    let thumb = thumb_of(&encode(&rgb(300, 900), ImageFormat::Jpeg), "image/jpeg").unwrap();
    assert_eq!((thumb.width, thumb.height), (300, 900));
    let small = decoded(&thumb);
    assert_eq!((small.width(), small.height()), (107, 320));
}

#[test]
fn a_small_image_is_not_upscaled() {
    let thumb = thumb_of(&encode(&rgb(100, 50), ImageFormat::Png), "image/png").unwrap();
    assert_eq!((thumb.width, thumb.height), (100, 50));
    let small = decoded(&thumb);
    assert_eq!((small.width(), small.height()), (100, 50));
}

#[test]
fn every_image_type_thumbnails_and_alpha_makes_a_png() {
    for (format, content_type) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let thumb = thumb_of(&encode(&rgba(640, 400), format), content_type).unwrap();
        assert_eq!((thumb.width, thumb.height), (640, 400), "{content_type}");
        assert_eq!(thumb.content_type, "image/png", "{content_type}");
        assert!(thumb.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let small = decoded(&thumb);
        assert_eq!(
            (small.width(), small.height()),
            (320, 200),
            "{content_type}"
        );
        let small = small.to_rgba8();
        assert_eq!(
            small.get_pixel(10, 10).0[3],
            0,
            "{content_type}: alpha kept"
        );
        assert_eq!(small.get_pixel(310, 10).0[3], 255, "{content_type}");
    }
    let thumb = thumb_of(&encode(&rgb(640, 400), ImageFormat::Jpeg), "image/jpeg").unwrap();
    assert_eq!(thumb.content_type, "image/jpeg");
    assert!(thumb.bytes.starts_with(&[0xFF, 0xD8]));
}

#[test]
fn what_is_not_an_image_is_undecodable() {
    let png = encode(&rgb(10, 10), ImageFormat::Png);
    assert!(matches!(
        thumb_of(&png, "application/pdf"),
        Err(MediaError::Undecodable(_))
    ));
    assert!(matches!(
        thumb_of(&png[..40], "image/png"),
        Err(MediaError::Undecodable(_))
    ));
    assert!(matches!(
        thumb_of(b"not a jpeg at all", "image/jpeg"),
        Err(MediaError::Undecodable(_))
    ));
    assert!(matches!(
        thumbnail(Path::new("/nonexistent/confab/staged"), "image/png"),
        Err(MediaError::Undecodable(_))
    ));
}

/// A valid PNG whose IHDR claims `width`×`height` but whose pixel data is
/// that of a 1×1 image: decoding it would allocate for the claim, then
/// fail on the missing data.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&rgb(1, 1), ImageFormat::Png);
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn a_png_bomb_is_too_large_before_any_pixel_is_decoded() {
    // Over the side limit.
    assert!(matches!(
        thumb_of(&png_claiming(100_000, 100_000), "image/png"),
        Err(MediaError::TooLarge)
    ));
    // Within the side limit but over the pixel count: 300 MB of RGB, under
    // max_alloc, so only the header check stops it. Decoding would have
    // ended in Undecodable (the data is missing), so TooLarge shows the
    // refusal came first.
    assert!(matches!(
        thumb_of(&png_claiming(10_000, 10_000), "image/png"),
        Err(MediaError::TooLarge)
    ));
    assert!(matches!(
        thumb_of(&png_claiming(16_384, 16_384), "image/png"),
        Err(MediaError::TooLarge)
    ));
    // The control: a claim within the limits is decoded, and fails so.
    assert!(matches!(
        thumb_of(&png_claiming(2_000, 2_000), "image/png"),
        Err(MediaError::Undecodable(_))
    ));
}

/// An APP1 Exif segment (big-endian TIFF) with IFD0 holding `orientation`
/// and, with `gps`, a GPS IFD whose processing method is `gps`.
fn exif_app1(orientation: Option<u16>, gps: Option<&[u8]>) -> Vec<u8> {
    let entry = |tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        let mut e = Vec::new();
        e.extend_from_slice(&tag.to_be_bytes());
        e.extend_from_slice(&kind.to_be_bytes());
        e.extend_from_slice(&count.to_be_bytes());
        e.extend_from_slice(&value);
        e
    };
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    const ASCII: u16 = 2;
    const UNDEFINED: u16 = 7;
    let ifd0_entries = u16::from(orientation.is_some()) + u16::from(gps.is_some());
    let gps_ifd = 8 + 2 + 12 * u32::from(ifd0_entries) + 4;

    let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&ifd0_entries.to_be_bytes());
    if let Some(o) = orientation {
        let [hi, lo] = o.to_be_bytes();
        tiff.extend(entry(0x0112, SHORT, 1, [hi, lo, 0, 0]));
    }
    if gps.is_some() {
        tiff.extend(entry(0x8825, LONG, 1, gps_ifd.to_be_bytes()));
    }
    tiff.extend_from_slice(&0u32.to_be_bytes());
    if let Some(method) = gps {
        assert_eq!(tiff.len() as u32, gps_ifd);
        let data = gps_ifd + 2 + 2 * 12 + 4;
        tiff.extend_from_slice(&2u16.to_be_bytes());
        tiff.extend(entry(0x0001, ASCII, 2, *b"N\0\0\0"));
        tiff.extend(entry(
            0x001B,
            UNDEFINED,
            method.len() as u32,
            data.to_be_bytes(),
        ));
        tiff.extend_from_slice(&0u32.to_be_bytes());
        tiff.extend_from_slice(method);
    }

    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&u16::try_from(2 + 6 + tiff.len()).unwrap().to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend(tiff);
    app1
}

/// `jpeg` with `app1` spliced in right after its SOI marker.
fn with_app1(jpeg: &[u8], app1: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    [&jpeg[..2], app1, &jpeg[2..]].concat()
}

/// 200×100: the left half red, the right half blue.
fn red_left_blue_right() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(200, 100, |x, _| {
        if x < 100 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    }))
}

fn is_red(p: Rgb<u8>) -> bool {
    p.0[0] > 200 && p.0[2] < 60
}

fn is_blue(p: Rgb<u8>) -> bool {
    p.0[2] > 200 && p.0[0] < 60
}

#[test]
fn exif_orientation_is_applied_and_stripped() {
    let jpeg = encode(&red_left_blue_right(), ImageFormat::Jpeg);
    let rotated = with_app1(&jpeg, &exif_app1(Some(6), None));
    let thumb = thumb_of(&rotated, "image/jpeg").unwrap();
    // Orientation 6: shown turned 90° clockwise.
    assert_eq!((thumb.width, thumb.height), (100, 200));
    let small = decoded(&thumb).to_rgb8();
    assert_eq!(small.dimensions(), (100, 200));
    // Clockwise, the left (red) half ends on top; counter-clockwise or a
    // mirror would put it below.
    assert!(
        is_red(*small.get_pixel(50, 20)),
        "{:?}",
        small.get_pixel(50, 20)
    );
    assert!(
        is_blue(*small.get_pixel(50, 180)),
        "{:?}",
        small.get_pixel(50, 180)
    );
    assert!(contains(&rotated, b"Exif"));
    assert!(!contains(&thumb.bytes, b"Exif"));

    // Without the segment nothing turns.
    let thumb = thumb_of(&jpeg, "image/jpeg").unwrap();
    assert_eq!((thumb.width, thumb.height), (200, 100));
}

#[test]
fn exif_orientation_also_turns_a_large_image_after_scaling() {
    let big = DynamicImage::ImageRgb8(RgbImage::from_fn(1000, 400, |x, _| {
        if x < 500 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    }));
    let rotated = with_app1(&encode(&big, ImageFormat::Jpeg), &exif_app1(Some(8), None));
    let thumb = thumb_of(&rotated, "image/jpeg").unwrap();
    assert_eq!((thumb.width, thumb.height), (400, 1000));
    let small = decoded(&thumb).to_rgb8();
    assert_eq!(small.dimensions(), (128, 320));
    // Orientation 8: turned 90° counter-clockwise, so the left half is
    // now at the bottom.
    assert!(is_blue(*small.get_pixel(64, 20)));
    assert!(is_red(*small.get_pixel(64, 300)));
}

#[test]
fn a_gps_position_does_not_survive_in_the_thumbnail() {
    const MARKER: &[u8] = b"ASCII\0\0\0CONFAB-GPS-MARKER";
    let jpeg = encode(&rgb(400, 300), ImageFormat::Jpeg);
    let located = with_app1(&jpeg, &exif_app1(None, Some(MARKER)));
    assert!(contains(&located, b"CONFAB-GPS-MARKER"));
    let thumb = thumb_of(&located, "image/jpeg").unwrap();
    assert_eq!((thumb.width, thumb.height), (400, 300));
    assert!(!contains(&thumb.bytes, b"Exif"));
    assert!(!contains(&thumb.bytes, b"CONFAB-GPS-MARKER"));

    // The same when the image is small enough to keep its size.
    let small = with_app1(
        &encode(&rgb(50, 40), ImageFormat::Jpeg),
        &exif_app1(Some(1), Some(MARKER)),
    );
    let thumb = thumb_of(&small, "image/jpeg").unwrap();
    assert_eq!((thumb.width, thumb.height), (50, 40));
    assert!(!contains(&thumb.bytes, b"Exif"));
    assert!(!contains(&thumb.bytes, b"CONFAB-GPS-MARKER"));
}
