//! The web client's files as a browser gets them from the real server: the
//! page at `/`, its versioned assets, caching and security headers, and
//! HEAD answered by hyper without a body but with the length.

use crate::helpers::TestServer;

/// The URL path of `name` as the page names it.
fn asset_in(page: &str, name: &str) -> String {
    let end = page
        .find(&format!("/{name}\""))
        .expect("the page names the asset")
        + name.len()
        + 1;
    let start = page[..end].rfind("\"/assets/").expect("under /assets/") + 1;
    page[start..end].to_owned()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_types_caching_and_a_policy() {
    let s = TestServer::start().await;
    let res = s.http().get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let etag = h["etag"].clone();
    let page = res.text().await.unwrap();
    assert!(page.contains("<script type=\"module\""), "{page}");

    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let path = asset_in(&page, name);
        let res = s.http().get(s.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(!res.bytes().await.unwrap().is_empty());
    }

    // A browser's revalidation of the page costs no body.
    let res = s
        .http()
        .get(s.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn head_gets_the_headers_and_length_of_a_get_without_the_body() {
    let s = TestServer::start().await;
    let get = s.http().get(s.url("/")).send().await.unwrap();
    let length = get.bytes().await.unwrap().len();
    let res = s.http().head(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["content-length"], length.to_string().as_str());
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_assets_are_404_and_other_methods_405_as_json() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/assets/0/app.js", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let res = s.http().post(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    // The API keeps its own answers.
    assert_eq!(s.get("/nope", None).await.0, 404);
    assert_eq!(s.get("/api/v1/me", None).await.0, 401);
}

#[tokio::test]
async fn assets_come_compressed_as_asked_and_decode_to_the_same_bytes() {
    let s = TestServer::start().await;
    let page = s.http().get(s.url("/")).send().await.unwrap();
    assert!(page.headers().get("content-encoding").is_none());
    let page = page.text().await.unwrap();
    for path in [
        "/".to_owned(),
        asset_in(&page, "app.js"),
        asset_in(&page, "style.css"),
    ] {
        let plain = s.http().get(s.url(&path)).send().await.unwrap();
        assert_eq!(plain.headers()["vary"], "Accept-Encoding", "{path}");
        let plain = plain.bytes().await.unwrap();
        for (asked, coding) in [("gzip", "gzip"), ("br", "br"), ("gzip, deflate, br", "br")] {
            let res = s
                .http()
                .get(s.url(&path))
                .header("accept-encoding", asked)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let h = res.headers().clone();
            assert_eq!(h["content-encoding"], coding, "{path} {asked}");
            assert_eq!(h["vary"], "Accept-Encoding");
            let sent = res.bytes().await.unwrap();
            assert_eq!(h["content-length"], sent.len().to_string().as_str());
            assert!(sent.len() < plain.len(), "{path} {asked}: not smaller");
            let mut decoded = Vec::new();
            if coding == "gzip" {
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&sent[..]),
                    &mut decoded,
                )
                .unwrap();
            } else {
                brotli::BrotliDecompress(&mut &sent[..], &mut decoded).unwrap();
            }
            assert_eq!(decoded, plain, "{path} {asked}");

            // Its own ETag revalidates it.
            let res = s
                .http()
                .get(s.url(&path))
                .header("accept-encoding", asked)
                .header("if-none-match", h["etag"].clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 304, "{path} {asked}");
        }
    }
}
