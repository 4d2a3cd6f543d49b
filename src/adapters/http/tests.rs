//! Unit tests of the routes table and the web client's routes.

use http_body_util::BodyExt;
use hyper::header;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use super::error::error_response;
use super::routes::web_route;
use super::*;
use crate::adapters::web;

fn web(method: Method, path: &str) -> HttpResponse {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    web_route(&req).unwrap_or_else(|e| error_response(&e))
}

fn body_json(res: HttpResponse) -> Value {
    let bytes = futures::executor::block_on(res.into_body().collect())
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.to_ascii_uppercase()))
        })
        .collect();
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(path, method)| (path.to_string(), method.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
}

#[test]
fn the_page_and_its_assets_are_served_to_get_and_head() {
    for method in [Method::GET, Method::HEAD] {
        for path in ["/".to_owned(), web::asset_url("app.js")] {
            let res = web(method.clone(), &path);
            assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
            assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
    }
}

#[test]
fn an_unknown_asset_is_a_404_json_error() {
    let res = web(Method::GET, &web::asset_url("nope.js"));
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(body_json(res)["error"]["code"], "not_found");
}

#[test]
fn other_methods_on_the_web_client_are_405_allowing_get_and_head() {
    for path in ["/".to_owned(), web::asset_url("app.js")] {
        let res = web(Method::POST, &path);
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(body_json(res)["error"]["code"], "bad_request");
    }
}
