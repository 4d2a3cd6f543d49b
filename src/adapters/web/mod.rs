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

mod site;
#[cfg(test)]
mod tests;

use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

pub use site::{Asset, Coding, Encoded, asset_url, find, is_ready, prepare};

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

/// [`CONTENT_SECURITY_POLICY`] letting images come from the origin of
/// `files_base_url` too, where signed file links point when files are
/// served from an origin of their own.
pub fn policy_with_images_from(files_base_url: &str) -> String {
    // scheme://host[:port], without any path.
    let origin = match files_base_url.find("://") {
        Some(i) => {
            let rest = &files_base_url[i + 3..];
            let end = rest.find('/').map_or(files_base_url.len(), |j| i + 3 + j);
            &files_base_url[..end]
        }
        None => files_base_url,
    };
    CONTENT_SECURITY_POLICY.replace(
        "img-src 'self' data:",
        &format!("img-src 'self' data: {origin}"),
    )
}

/// Whether `path` belongs to the web client rather than the API.
pub fn is_web_path(path: &str) -> bool {
    path == "/" || path.starts_with(ASSETS_PREFIX)
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
    let mut res = Response::new(super::http::full(body));
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
