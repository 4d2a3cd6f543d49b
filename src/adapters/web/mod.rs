//! The web client's files, embedded in the binary, and how they are served:
//! `/` is the page, `/assets/<version>/<name>` its scripts, styles and icon.
//!
//! The page names its assets under a version taken from their contents, so
//! an asset URL never changes meaning and may be cached for good, while the
//! page itself is revalidated on every load (an ETag makes that a `304`).
//! The client speaks only the public contract (`docs/protocol.md`); nothing
//! here knows more about it than a file server would.
//!
//! Every file is text, compressed once (brotli and gzip, at their best
//! settings) on the first request for any of them, and sent in the
//! encoding the browser prefers by its `Accept-Encoding`; each encoding has
//! an ETag of its own. Once, not at start: brotli's best takes about a
//! second of CPU for the ~80 KB, which a server that serves no page (every
//! end-to-end test) need not spend.

use std::io::Write;
use std::sync::OnceLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::http::HttpResponse;

/// Where the versioned assets live.
pub const ASSETS_PREFIX: &str = "/assets/";

/// What the page may load and run: its own scripts only (nothing inline,
/// nothing evaluated), its own styles, and requests and WebSockets to its
/// own origin only ('self' covers `ws:`/`wss:` to the same host in CSP
/// Level 3, which every current browser implements).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    connect-src 'self'; style-src 'self'; img-src 'self' data:; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// The placeholder in `index.html` replaced by `/assets/<version>`.
const BASE_PLACEHOLDER: &str = "%ASSETS%";

/// The files, as (name, content type, contents).
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", JS, include_bytes!("assets/app.js")),
    ("api.js", JS, include_bytes!("assets/api.js")),
    ("connection.js", JS, include_bytes!("assets/connection.js")),
    ("state.js", JS, include_bytes!("assets/state.js")),
    ("dom.js", JS, include_bytes!("assets/dom.js")),
    ("sidebar.js", JS, include_bytes!("assets/sidebar.js")),
    ("chat.js", JS, include_bytes!("assets/chat.js")),
    ("block.js", JS, include_bytes!("assets/block.js")),
    ("style.css", CSS, include_bytes!("assets/style.css")),
    ("icon.svg", SVG, include_bytes!("assets/icon.svg")),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const HTML: &str = "text/html; charset=utf-8";

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

struct Site {
    index: Asset,
    /// `/assets/<version>/`, the prefix of every current asset URL.
    base: String,
    files: Vec<(&'static str, Asset)>,
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

fn site() -> &'static Site {
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across builds and platforms, which is all a cache
/// validator needs (this is not a defence against anyone).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Whether `path` belongs to the web client rather than the API.
pub fn is_web_path(path: &str) -> bool {
    path == "/" || path.starts_with(ASSETS_PREFIX)
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

/// Serves `asset` for a GET or HEAD, in the encoding `Accept-Encoding`
/// prefers: `304` when the client's copy of that encoding is current, the
/// contents otherwise (headers only for HEAD, with the length a GET would
/// have).
pub fn serve(asset: &Asset, method: &Method, headers: &HeaderMap) -> HttpResponse {
    let chosen = choose(asset, headers);
    let (full, etag) = chosen.map_or((&asset.body, &asset.etag), |e| (&e.body, &e.etag));
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, full.clone())
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::ETAG, value(etag));
    h.insert(header::CACHE_CONTROL, value(asset.cache_control));
    if !asset.encoded.is_empty() {
        // Caches keep one copy per encoding asked for.
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if status == StatusCode::OK {
        h.insert(header::CONTENT_TYPE, value(asset.content_type));
        h.insert(header::CONTENT_LENGTH, full.len().into());
        if let Some(e) = chosen {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(e.coding.name()),
            );
        }
    }
    security_headers(h);
    res
}

/// The compressed copy of `asset` to send, or `None` for the contents as
/// they are: the encoding with the highest `q` in `Accept-Encoding` (`*`
/// standing for any not named), the earlier in `asset.encoded` on a tie,
/// unless `identity` is preferred to all of them. No header, or nothing
/// acceptable that the server has, means the contents as they are.
fn choose<'a>(asset: &'a Asset, headers: &HeaderMap) -> Option<&'a Encoded> {
    let accepted: Vec<(String, f32)> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            if name.is_empty() {
                return None;
            }
            // A q we cannot read is taken as a refusal, not a welcome.
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            Some((name, q))
        })
        .collect();
    let q_of = |name: &str| {
        let named = accepted.iter().find(|(n, _)| n == name);
        let any = accepted.iter().find(|(n, _)| n == "*");
        named.or(any).map(|(_, q)| *q)
    };
    let mut best: Option<(&Encoded, f32)> = None;
    for e in &asset.encoded {
        let q = q_of(e.coding.name()).unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((e, q));
        }
    }
    let (e, q) = best?;
    let identity = accepted
        .iter()
        .find(|(n, _)| n == "identity")
        .map_or(0.0, |(_, q)| *q);
    (q >= identity).then_some(e)
}

/// Headers every web response carries.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("asset headers are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_script_and_style_under_the_current_version() {
        let page = std::str::from_utf8(&find("/").unwrap().body).unwrap();
        assert!(!page.contains(BASE_PLACEHOLDER), "{page}");
        for name in ["app.js", "style.css", "icon.svg"] {
            assert!(page.contains(&asset_url(name)), "{name} in {page}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(&find("/").unwrap().body).unwrap();
        for forbidden in ["<script>", "<style", " style=", " onclick=", "javascript:"] {
            assert!(!page.contains(forbidden), "{forbidden} in the page");
        }
        assert!(page.contains(r#"<script type="module" src=""#));
    }

    #[test]
    fn every_module_imported_by_a_script_is_served() {
        for (name, content_type, body) in FILES {
            if *content_type != JS {
                continue;
            }
            let text = std::str::from_utf8(body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit(['\'', '"']).nth(1).unwrap();
                let target = target.strip_prefix("./").expect("relative import");
                assert!(
                    find(&asset_url(target)).is_some(),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }

    #[test]
    fn scripts_never_put_text_into_the_page_as_html() {
        for (name, _, body) in FILES {
            let text = std::str::from_utf8(body).unwrap();
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(forbidden), "{forbidden} in {name}");
            }
        }
    }

    #[test]
    fn an_unknown_name_or_an_old_version_is_not_found() {
        assert!(find(&asset_url("nope.js")).is_none());
        assert!(find("/assets/0000000000000000/app.js").is_none());
        assert!(find("/assets/app.js").is_none());
        assert!(find(&asset_url("app.js")).is_some());
    }

    #[test]
    fn versions_and_etags_follow_the_contents() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_ne!(fnv1a(FNV_OFFSET, b"a"), fnv1a(FNV_OFFSET, b"b"));
        let (a, b) = (
            find(&asset_url("app.js")).unwrap(),
            find(&asset_url("api.js")).unwrap(),
        );
        assert_ne!(a.etag, b.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
    }

    #[test]
    fn get_sends_the_contents_with_type_caching_and_security_headers() {
        let asset = find(&asset_url("style.css")).unwrap();
        let res = serve(asset, &Method::GET, &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(
            h[header::CONTENT_LENGTH],
            asset.body.len().to_string().as_str()
        );
        assert_eq!(
            h[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(h[header::ETAG], asset.etag.as_str());
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        // WebSockets to the page's own origin only, not to any host.
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(!csp.contains(" ws:") && !csp.contains(" wss:"), "{csp}");
    }

    #[test]
    fn the_page_is_html_and_revalidated_on_every_load() {
        let res = serve(find("/").unwrap(), &Method::GET, &HeaderMap::new());
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
    }

    #[test]
    fn scripts_are_javascript_and_the_icon_svg() {
        let js = serve(
            find(&asset_url("app.js")).unwrap(),
            &Method::GET,
            &HeaderMap::new(),
        );
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let svg = serve(
            find(&asset_url("icon.svg")).unwrap(),
            &Method::GET,
            &HeaderMap::new(),
        );
        assert_eq!(svg.headers()[header::CONTENT_TYPE], "image/svg+xml");
    }

    #[test]
    fn head_sends_the_headers_of_a_get_without_the_contents() {
        let asset = find("/").unwrap();
        let res = serve(asset, &Method::HEAD, &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_LENGTH],
            asset.body.len().to_string().as_str()
        );
        assert_eq!(res.headers()[header::CONTENT_TYPE], HTML);
        assert_eq!(hyper::body::Body::size_hint(res.body()).exact(), Some(0));
    }

    #[test]
    fn a_matching_etag_is_answered_with_304_and_no_contents() {
        let asset = find("/").unwrap();
        for sent in [
            asset.etag.clone(),
            format!("\"x\", W/{}", asset.etag),
            "*".into(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, value(&sent));
            let res = serve(asset, &Method::GET, &headers);
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{sent}");
            assert_eq!(res.headers()[header::ETAG], asset.etag.as_str());
            assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
        }
        let mut stale = HeaderMap::new();
        stale.insert(header::IF_NONE_MATCH, value("\"0123\""));
        assert_eq!(serve(asset, &Method::GET, &stale).status(), StatusCode::OK);
    }

    fn accepting(encodings: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value(encodings));
        headers
    }

    fn body_of(res: HttpResponse) -> Bytes {
        use http_body_util::BodyExt;
        futures::executor::block_on(res.into_body().collect())
            .unwrap()
            .to_bytes()
    }

    /// The contents a browser gets back from `res` after undoing its encoding.
    fn decoded(res: HttpResponse) -> Vec<u8> {
        let coding = res
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = body_of(res);
        let mut out = Vec::new();
        match coding.as_deref() {
            None => out.extend_from_slice(&body),
            Some("gzip") => {
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                    .unwrap();
            }
            Some("br") => {
                brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap();
            }
            Some(other) => panic!("unexpected encoding {other}"),
        }
        out
    }

    fn every_asset() -> impl Iterator<Item = &'static Asset> {
        let site = site();
        std::iter::once(&site.index).chain(site.files.iter().map(|(_, a)| a))
    }

    #[test]
    fn every_file_is_kept_compressed_both_ways_and_smaller() {
        for asset in every_asset() {
            let codings: Vec<_> = asset.encoded.iter().map(|e| e.coding).collect();
            assert_eq!(codings, [Coding::Brotli, Coding::Gzip], "{}", asset.etag);
            for e in &asset.encoded {
                assert!(e.body.len() < asset.body.len());
            }
        }
    }

    #[test]
    fn each_encoding_asked_for_decodes_to_the_original_contents() {
        for asset in every_asset() {
            for (asked, sent) in [
                ("", None),
                ("gzip", Some("gzip")),
                ("br", Some("br")),
                ("gzip, deflate, br, zstd", Some("br")),
                ("deflate", None),
            ] {
                let headers = if asked.is_empty() {
                    HeaderMap::new()
                } else {
                    accepting(asked)
                };
                let res = serve(asset, &Method::GET, &headers);
                assert_eq!(res.status(), StatusCode::OK);
                let h = res.headers();
                assert_eq!(
                    h.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap()),
                    sent,
                    "{asked}"
                );
                assert_eq!(h[header::VARY], "Accept-Encoding", "{asked}");
                let length: usize = h[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
                let etag = h[header::ETAG].to_str().unwrap().to_owned();
                let body = decoded(res);
                assert_eq!(body, asset.body, "{asked}");
                if sent.is_none() {
                    assert_eq!(length, asset.body.len());
                    assert_eq!(etag, asset.etag);
                } else {
                    assert!(length < asset.body.len());
                    assert_ne!(etag, asset.etag);
                }
            }
        }
    }

    #[test]
    fn q_values_rank_the_encodings_and_zero_refuses_one() {
        let asset = find(&asset_url("app.js")).unwrap();
        for (asked, sent) in [
            ("br;q=0.5, gzip", Some(Coding::Gzip)),
            ("br;q=0, gzip;q=0.1", Some(Coding::Gzip)),
            ("GZIP;Q=0.8, br;q=0.9", Some(Coding::Brotli)),
            ("br;q=0, gzip;q=0", None),
            ("*", Some(Coding::Brotli)),
            ("br;q=0, *", Some(Coding::Gzip)),
            ("*;q=0", None),
            ("gzip;q=0.5, identity", None),
            ("gzip;q=nonsense", None),
            ("identity", None),
            (" , ;q=1", None),
        ] {
            let chosen = choose(asset, &accepting(asked)).map(|e| e.coding);
            assert_eq!(chosen, sent, "{asked}");
        }
    }

    #[test]
    fn each_encoding_has_its_own_etag_and_304_follows_the_one_sent() {
        let asset = find(&asset_url("style.css")).unwrap();
        let tags: Vec<String> = ["", "br", "gzip"]
            .into_iter()
            .map(|asked| {
                let res = serve(asset, &Method::GET, &accepting(asked));
                res.headers()[header::ETAG].to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(tags[0], asset.etag);
        assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);

        let mut headers = accepting("gzip");
        headers.insert(header::IF_NONE_MATCH, value(&tags[2]));
        let res = serve(asset, &Method::GET, &headers);
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()[header::ETAG], tags[2].as_str());
        assert_eq!(res.headers()[header::VARY], "Accept-Encoding");
        // The gzip copy's tag does not vouch for the brotli copy.
        headers.insert(header::ACCEPT_ENCODING, value("br"));
        let res = serve(asset, &Method::GET, &headers);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "br");
    }

    #[test]
    fn head_gives_the_length_of_the_encoding_a_get_would_send() {
        let asset = find("/").unwrap();
        let res = serve(asset, &Method::HEAD, &accepting("gzip"));
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
        let gzip = asset
            .encoded
            .iter()
            .find(|e| e.coding == Coding::Gzip)
            .unwrap();
        assert_eq!(
            res.headers()[header::CONTENT_LENGTH],
            gzip.body.len().to_string().as_str()
        );
        assert!(body_of(res).is_empty());
    }
}
