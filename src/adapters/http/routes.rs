//! The table of endpoints, and which handler serves a request.

use std::convert::Infallible;
use std::sync::Arc;

use governor::clock::Clock;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::error::{ApiError, error_response};
use super::{HttpResponse, HttpState, Listener, api, upgrade};
use crate::adapters::edge::Slot;
use crate::adapters::edge::forwarded::client_key;
use crate::adapters::web;

/// Every endpoint of the API and the one method it takes. The OpenAPI
/// document lists exactly these (a test compares the two), so neither can
/// gain or lose an endpoint alone.
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/register", "POST"),
    ("/api/v1/login", "POST"),
    ("/api/v1/me", "GET"),
    ("/api/v1/users", "GET"),
    ("/api/v1/openapi.json", "GET"),
    ("/healthz", "GET"),
    ("/metrics", "GET"),
    ("/ws", "GET"),
];

/// The OpenAPI 3.1 description of [`ROUTES`], served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Serves one HTTP request on the connection that holds `conn`, which
/// came in on listener `on`.
pub async fn handle(
    state: Arc<HttpState>,
    conn: Arc<Slot>,
    on: Listener,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    state.metrics().http_requests.inc();
    let web = web::is_web_path(req.uri().path());
    let result = match on {
        Listener::Main => route(&state, &conn, req).await,
        Listener::Metrics => metrics_only(&state, &req),
    };
    let mut res = result.unwrap_or_else(|e| {
        state.metrics().error(e.code);
        error_response(&e)
    });
    if !web && res.status() != StatusCode::SWITCHING_PROTOCOLS {
        api_headers(res.headers_mut());
    }
    Ok(res)
}

/// Headers of every answer but the web client's files (which have their
/// own): never taken for another type, never stored, as some hold tokens.
fn api_headers(h: &mut header::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The `metrics_addr` listener: `GET /metrics` and nothing else.
fn metrics_only<B>(state: &HttpState, req: &Request<B>) -> Result<HttpResponse, ApiError> {
    if req.uri().path() != "/metrics" {
        return Err(not_found());
    }
    if req.method() != Method::GET {
        return Ok(method_not_allowed("GET", "/metrics"));
    }
    Ok(metrics(state))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

fn metrics(state: &HttpState) -> HttpResponse {
    let mut res = Response::new(Full::new(Bytes::from(state.metrics().render())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// The main listener: the web client's files, else the API by [`ROUTES`].
async fn route(
    state: &Arc<HttpState>,
    conn: &Arc<Slot>,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path().to_owned();
    if web::is_web_path(&path) {
        if !web::is_ready() {
            // The first web request compresses every file: not on an
            // async worker, which would stall every session it serves.
            let _ = tokio::task::spawn_blocking(web::prepare).await;
        }
        return web_route(&req);
    }
    // /metrics may be served on a listener of its own (`metrics_addr`).
    let Some(&(_, allowed)) = ROUTES
        .iter()
        .find(|(p, _)| *p == path && (*p != "/metrics" || state.metrics_here))
    else {
        return Err(not_found());
    };
    if req.method().as_str() != allowed {
        return Ok(method_not_allowed(allowed, &path));
    }
    let checks_password = matches!(path.as_str(), "/api/v1/register" | "/api/v1/login");
    let client = state.trusted_proxies.client(conn.peer(), req.headers());
    if checks_password && let Err(not_until) = state.auth_limiter.check_key(&client_key(client)) {
        return Err(ApiError::rate_limited(
            "too many attempts from this address; try again shortly",
            not_until.wait_time_from(state.auth_limiter.clock().now()),
        ));
    }
    match path.as_str() {
        "/api/v1/register" => api::register(state, req).await,
        "/api/v1/login" => api::login(state, client, req).await,
        "/api/v1/me" => api::me(state, &req).await,
        "/api/v1/users" => api::users(state, &req).await,
        "/healthz" => Ok(api::health(state).await),
        "/metrics" => Ok(metrics(state)),
        "/api/v1/openapi.json" => {
            let mut res = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
        "/ws" => upgrade::upgrade(state, conn, req).await,
        _ => Err(not_found()),
    }
}

/// `405` with an `Allow` header naming the methods `path` takes.
fn method_not_allowed(allow: &str, path: &str) -> HttpResponse {
    let mut res = error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        format!("use {allow} for {path}"),
    ));
    res.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_str(allow).expect("method names"),
    );
    res
}

/// `/` and `/assets/...`: the web client's files, for GET and HEAD only.
pub(super) fn web_route<B>(req: &Request<B>) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(method_not_allowed("GET, HEAD", path));
    }
    let asset = web::find(path)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file"))?;
    Ok(web::serve(asset, req.method(), req.headers()))
}
