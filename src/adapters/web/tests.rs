//! The web client's files: what the page names, and how each is served.

use super::site::{BASE_PLACEHOLDER, FILES, FNV_OFFSET, HTML, JS, fnv1a, site};
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
fn no_script_keeps_a_token_in_storage() {
    // The access token lives in memory and the refresh token in an
    // HttpOnly cookie; storage only ever holds the login screen's notice.
    for (name, _, body) in FILES {
        let text = std::str::from_utf8(body).unwrap();
        assert!(!text.contains("localStorage"), "localStorage in {name}");
        assert!(
            !text.contains("document.cookie"),
            "document.cookie in {name}"
        );
        for (at, _) in text.match_indices("sessionStorage.setItem(") {
            let rest = &text[at + "sessionStorage.setItem(".len()..];
            assert!(rest.starts_with("NOTICE_KEY,"), "{name} stores {rest:.40}");
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

#[test]
fn a_files_origin_of_its_own_may_serve_images() {
    let policy = super::policy_with_images_from("https://files.example.com/base/");
    assert!(
        policy.contains("img-src 'self' data: https://files.example.com;"),
        "{policy}"
    );
    // Nothing else is opened to it.
    assert_eq!(policy.matches("files.example.com").count(), 1);
}
