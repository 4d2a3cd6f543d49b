//! The table of endpoints, and which handler serves a request.

use std::convert::Infallible;
use std::sync::Arc;

use governor::clock::Clock;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::error::{ApiError, error_response};
use super::{HttpResponse, HttpState, Listener, api, files, sessions, tus, upgrade};
use crate::adapters::edge::Slot;
use crate::adapters::edge::forwarded::client_key;
use crate::adapters::files::Variant;
use crate::adapters::web;

/// Every endpoint of the API and the methods it takes, a row each. The
/// OpenAPI document lists exactly these (a test compares the two), so
/// neither can gain or lose an endpoint alone. A path with `{id}` matches
/// any one segment there.
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/register", "POST"),
    ("/api/v1/login", "POST"),
    ("/api/v1/token/refresh", "POST"),
    ("/api/v1/me", "GET"),
    ("/api/v1/me", "DELETE"),
    ("/api/v1/sessions", "GET"),
    (SESSION_PATH, "DELETE"),
    ("/api/v1/logout", "POST"),
    ("/api/v1/logout-all", "POST"),
    ("/api/v1/password", "POST"),
    ("/api/v1/users", "GET"),
    ("/api/v1/files", "POST"),
    (FILE_PATH, "GET"),
    (THUMBNAIL_PATH, "GET"),
    (UPLOADS_PATH, "POST"),
    (UPLOADS_PATH, "OPTIONS"),
    (UPLOAD_PATH, "HEAD"),
    (UPLOAD_PATH, "PATCH"),
    (UPLOAD_PATH, "DELETE"),
    (UPLOAD_PATH, "OPTIONS"),
    (SIGNED_FILE_PATH, "GET"),
    (SIGNED_FILE_PATH, "HEAD"),
    (SIGNED_THUMBNAIL_PATH, "GET"),
    (SIGNED_THUMBNAIL_PATH, "HEAD"),
    ("/api/v1/openapi.json", "GET"),
    ("/healthz", "GET"),
    ("/metrics", "GET"),
    ("/ws", "GET"),
];

/// One device session, as the OpenAPI document spells its path.
const SESSION_PATH: &str = "/api/v1/sessions/{id}";
/// A file's signed link, for who may read it.
const FILE_PATH: &str = "/api/v1/files/{id}";
/// Its thumbnail's signed link.
const THUMBNAIL_PATH: &str = "/api/v1/files/{id}/thumbnail";
/// Where resumable (tus) uploads are created.
const UPLOADS_PATH: &str = "/api/v1/uploads";
/// One resumable upload.
const UPLOAD_PATH: &str = "/api/v1/uploads/{id}";
/// A file's bytes, behind a signed link.
const SIGNED_FILE_PATH: &str = "/files/{id}";
/// A thumbnail's bytes, behind a signed link.
const SIGNED_THUMBNAIL_PATH: &str = "/files/{id}/thumbnail";

/// The paths that check a password or a refresh token: throttled per
/// client address, like login.
const CREDENTIAL_PATHS: &[&str] = &[
    "/api/v1/register",
    "/api/v1/login",
    "/api/v1/token/refresh",
    "/api/v1/password",
];

/// The route `path` takes: its row's path in [`ROUTES`], and the segment
/// its `{id}` matched, if it has one.
fn route_of(path: &str) -> (&str, Option<&str>) {
    for (pattern, _) in ROUTES {
        let Some((before, after)) = pattern.split_once("{id}") else {
            continue;
        };
        let id = path
            .strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after));
        if let Some(id) = id
            && !id.is_empty()
            && !id.contains('/')
        {
            return (pattern, Some(id));
        }
    }
    (path, None)
}

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
/// own): never taken for another type, never stored, as some hold tokens
/// (unless the answer says otherwise: a file's bytes may be kept a while).
fn api_headers(h: &mut header::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
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
    let mut res = Response::new(super::full(Bytes::from(state.metrics().render())));
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
        let mut res = web_route(&req)?;
        let files = &state.files.settings.base_url;
        if !files.is_empty()
            && let Ok(policy) = HeaderValue::from_str(&web::policy_with_images_from(files))
        {
            res.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        return Ok(res);
    }
    let (route, id) = route_of(&path);
    // /metrics may be served on a listener of its own (`metrics_addr`).
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(p, _)| *p == route && (*p != "/metrics" || state.metrics_here))
        .map(|(_, m)| *m)
        .collect();
    if methods.is_empty() {
        return Err(not_found());
    }
    let mut method = req.method().as_str().to_owned();
    // tus's core protocol: a client that cannot send PATCH or DELETE
    // POSTs and names the method in a header, which then rules.
    if (route == UPLOADS_PATH || route == UPLOAD_PATH)
        && let Some(overridden) = tus::method_override(req.headers())
    {
        method = overridden;
    }
    if !methods.contains(&method.as_str()) {
        return Ok(method_not_allowed(&methods.join(", "), &path));
    }
    let checks_password =
        CREDENTIAL_PATHS.contains(&route) || (route == "/api/v1/me" && method == "DELETE");
    let peer = conn.peer();
    let client = state.trusted_proxies.client(peer, req.headers());
    if checks_password && let Err(not_until) = state.auth_limiter.check_key(&client_key(client)) {
        return Err(ApiError::rate_limited(
            "too many attempts from this address; try again shortly",
            not_until.wait_time_from(state.auth_limiter.clock().now()),
        ));
    }
    match (route, method.as_str()) {
        ("/api/v1/register", _) => api::register(state, peer, client, req).await,
        ("/api/v1/login", _) => api::login(state, peer, client, req).await,
        ("/api/v1/token/refresh", _) => sessions::refresh(state, peer, client, req).await,
        ("/api/v1/me", "DELETE") => sessions::delete_me(state, client, req).await,
        ("/api/v1/sessions", _) => sessions::list(state, &req).await,
        (SESSION_PATH, _) => sessions::end(state, &req, id.unwrap_or_default()).await,
        ("/api/v1/logout", _) => sessions::logout(state, &req).await,
        ("/api/v1/logout-all", _) => sessions::logout_all(state, &req).await,
        ("/api/v1/password", _) => sessions::password(state, client, req).await,
        ("/api/v1/me", _) => api::me(state, &req).await,
        ("/api/v1/files", _) => files::upload(state, req).await,
        (FILE_PATH, _) => files::link(state, &req, id.unwrap_or_default(), Variant::Original).await,
        (THUMBNAIL_PATH, _) => {
            files::link(state, &req, id.unwrap_or_default(), Variant::Thumbnail).await
        }
        (SIGNED_FILE_PATH, _) => {
            files::serve(state, &req, id.unwrap_or_default(), Variant::Original).await
        }
        (SIGNED_THUMBNAIL_PATH, _) => {
            files::serve(state, &req, id.unwrap_or_default(), Variant::Thumbnail).await
        }
        (UPLOADS_PATH | UPLOAD_PATH, _) => Ok(tus::serve(state, req, &method, id).await),
        ("/api/v1/users", _) => api::users(state, &req).await,
        ("/healthz", _) => Ok(api::health(state).await),
        ("/metrics", _) => Ok(metrics(state)),
        ("/api/v1/openapi.json", _) => {
            let mut res = Response::new(super::full(Bytes::from_static(OPENAPI.as_bytes())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
        ("/ws", _) => upgrade::upgrade(state, conn, req).await,
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
