//! The web client's files, embedded in the binary, and how they are served:
//! `/` is the page, `/assets/<version>/<name>` its scripts, styles and icon.
//!
//! The page names its assets under a version taken from their contents, so
//! an asset URL never changes meaning and may be cached for good, while the
//! page itself is revalidated on every load (an ETag makes that a `304`).
//! The client speaks only the public contract (`docs/protocol.md`); nothing
//! here knows more about it than a file server would.

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
}

struct Site {
    index: Asset,
    /// `/assets/<version>/`, the prefix of every current asset URL.
    base: String,
    files: Vec<(&'static str, Asset)>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
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
    let etag = format!("\"{:016x}\"", fnv1a(FNV_OFFSET, &body));
    Asset {
        content_type,
        cache_control,
        body,
        etag,
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

/// Serves `asset` for a GET or HEAD: `304` when the client's copy is
/// current, the contents otherwise (headers only for HEAD, with the length
/// a GET would have).
pub fn serve(asset: &Asset, method: &Method, headers: &HeaderMap) -> HttpResponse {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == asset.etag || tag == "*");
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, asset.body.clone())
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::ETAG, value(&asset.etag));
    h.insert(header::CACHE_CONTROL, value(asset.cache_control));
    if status == StatusCode::OK {
        h.insert(header::CONTENT_TYPE, value(asset.content_type));
        h.insert(header::CONTENT_LENGTH, asset.body.len().into());
    }
    security_headers(h);
    res
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
}
