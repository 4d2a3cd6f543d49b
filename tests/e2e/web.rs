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
