//! The web client's files as served: embedded in the binary, versioned
//! by their contents, and compressed (brotli and gzip, at their best
//! settings) once, on the first request for any of them.

use std::io::Write;
use std::sync::OnceLock;

use hyper::body::Bytes;

use super::ASSETS_PREFIX;

/// The placeholder in `index.html` replaced by `/assets/<version>`.
pub(super) const BASE_PLACEHOLDER: &str = "%ASSETS%";

/// The files, as (name, content type, contents).
pub(super) const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", JS, include_bytes!("assets/app.js")),
    ("api.js", JS, include_bytes!("assets/api.js")),
    ("connection.js", JS, include_bytes!("assets/connection.js")),
    ("state.js", JS, include_bytes!("assets/state.js")),
    ("dom.js", JS, include_bytes!("assets/dom.js")),
    ("sidebar.js", JS, include_bytes!("assets/sidebar.js")),
    ("chat.js", JS, include_bytes!("assets/chat.js")),
    ("block.js", JS, include_bytes!("assets/block.js")),
    ("tokens.js", JS, include_bytes!("assets/tokens.js")),
    ("account.js", JS, include_bytes!("assets/account.js")),
    ("uploads.js", JS, include_bytes!("assets/uploads.js")),
    ("files.js", JS, include_bytes!("assets/files.js")),
    ("tray.js", JS, include_bytes!("assets/tray.js")),
    ("style.css", CSS, include_bytes!("assets/style.css")),
    ("icon.svg", SVG, include_bytes!("assets/icon.svg")),
];

pub(super) const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
pub(super) const HTML: &str = "text/html; charset=utf-8";

/// One file ready to serve.
#[derive(Debug)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`.
    pub cache_control: &'static str,
    /// Its contents.
    pub body: Bytes,
    /// A strong validator of `body`, quoted as the header wants it.
    pub etag: String,
    /// The contents compressed, in the order preferred when the browser
    /// takes several equally; only encodings that make it smaller.
    pub encoded: Vec<Encoded>,
}

/// A compressed copy of an asset's contents.
#[derive(Debug)]
pub struct Encoded {
    /// How it is compressed.
    pub coding: Coding,
    /// The compressed bytes.
    pub body: Bytes,
    /// Its validator: the contents' with the encoding appended, since a
    /// cache must not take one encoding's bytes for another's.
    pub etag: String,
}

/// A `Content-Encoding` the server compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `br`: the smaller, in every browser over HTTPS (some send it over
    /// plain HTTP too).
    Brotli,
    /// `gzip`: taken by every browser.
    Gzip,
}

impl Coding {
    /// Its name in `Accept-Encoding` and `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    fn compress(self, body: &[u8]) -> Vec<u8> {
        match self {
            Coding::Brotli => {
                // A window just big enough for the file (the default is
                // 4 MiB): the same bytes out, in less memory and time.
                let bits = usize::BITS - body.len().leading_zeros();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 11,
                    lgwin: bits.clamp(16, 24) as i32,
                    ..Default::default()
                };
                let mut out = Vec::new();
                brotli::BrotliCompress(&mut &body[..], &mut out, &params)
                    .expect("brotli into memory");
                out
            }
            Coding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(body).expect("gzip into memory");
                gz.finish().expect("gzip into memory")
            }
        }
    }
}

/// The page and its assets, each ready to serve.
pub(super) struct Site {
    /// The page, naming the assets under their current version.
    pub(super) index: Asset,
    /// `/assets/<version>/`, the prefix of every current asset URL.
    pub(super) base: String,
    /// The assets by name.
    pub(super) files: Vec<(&'static str, Asset)>,
}

/// Every file, compressed; made on first use.
static SITE: OnceLock<Site> = OnceLock::new();

/// Whether the files are ready to serve without the work of compressing them.
pub fn is_ready() -> bool {
    SITE.get().is_some()
}

/// Compresses every file, if not done yet: about a second of CPU, for the
/// blocking pool rather than an async worker.
pub fn prepare() {
    site();
}

pub(super) fn site() -> &'static Site {
    SITE.get_or_init(|| {
        let version = format!(
            "{:016x}",
            FILES.iter().fold(FNV_OFFSET, |h, (name, _, body)| fnv1a(
                fnv1a(h, name.as_bytes()),
                body
            ))
        );
        let base = format!("{ASSETS_PREFIX}{version}/");
        let page = std::str::from_utf8(include_bytes!("assets/index.html"))
            .expect("index.html is UTF-8")
            .replace(BASE_PLACEHOLDER, base.trim_end_matches('/'));
        let files = FILES
            .iter()
            .map(|&(name, content_type, body)| {
                // Versioned URLs never change meaning: keep them a year.
                let cache = "public, max-age=31536000, immutable";
                (name, asset(content_type, cache, Bytes::from_static(body)))
            })
            .collect();
        Site {
            // The page is revalidated on every load, so a new version of
            // the server is picked up at once.
            index: asset(HTML, "no-cache", Bytes::from(page)),
            base,
            files,
        }
    })
}

fn asset(content_type: &'static str, cache_control: &'static str, body: Bytes) -> Asset {
    let hash = fnv1a(FNV_OFFSET, &body);
    let encoded = [Coding::Brotli, Coding::Gzip]
        .into_iter()
        .filter_map(|coding| {
            let compressed = coding.compress(&body);
            (compressed.len() < body.len()).then(|| Encoded {
                coding,
                body: Bytes::from(compressed),
                etag: format!("\"{hash:016x}.{}\"", coding.name()),
            })
        })
        .collect();
    Asset {
        content_type,
        cache_control,
        body,
        etag: format!("\"{hash:016x}\""),
        encoded,
    }
}

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across builds and platforms, which is all a cache
/// validator needs (this is not a defence against anyone).
pub(super) fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The file at `path`, if there is one: the page at `/`, an asset under
/// the current version. An asset of another version is not found: its
/// contents are gone, and serving today's under an old name would be
/// cached as if it were the old one.
pub fn find(path: &str) -> Option<&'static Asset> {
    let site = site();
    if path == "/" {
        return Some(&site.index);
    }
    let name = path.strip_prefix(site.base.as_str())?;
    site.files.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

/// The current URL of the asset called `name` (for tests and tools).
pub fn asset_url(name: &str) -> String {
    format!("{}{name}", site().base)
}
