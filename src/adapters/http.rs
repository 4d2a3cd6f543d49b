//! The HTTP adapter: the REST endpoints, health, metrics, the WebSocket
//! handshake (authenticated before the upgrade), and the web client's files.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use super::edge::forwarded::client_key;
use super::edge::{LogLimiter, LoginThrottle, Slot, TrustedProxies};
use super::failure::ChatError;
use super::metrics::Metrics;
use super::web;
use super::wire::{self, ErrorDto, UserDto};
use super::ws::Mailbox;
use super::ws::session::{self, PendingSession, SessionEnv};
use super::ws::socket;
use crate::domain::error::LoginError;
use crate::domain::service::{Caller, SignedIn, UseCases};
use crate::domain::{PageLimit, Password, SessionId, Username};

/// Largest HTTP request body and WebSocket frame, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The response type of every endpoint.
pub type HttpResponse = Response<Full<Bytes>>;

/// What the HTTP adapter needs.
pub struct HttpState {
    /// Session plumbing, shared with every WebSocket session.
    pub sessions: Arc<SessionEnv>,
    /// Tracks session tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// WebSocket limits for the upgrade.
    pub ws_config: hyper_tungstenite::tungstenite::protocol::WebSocketConfig,
    /// Register and login attempts per client address.
    pub auth_limiter: AuthLimiter,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Failed logins per account.
    pub login_throttle: LoginThrottle,
    /// Longest wait for a request's body.
    pub request_timeout: Duration,
    /// Whether `/metrics` is served here (not on a listener of its own).
    pub metrics_here: bool,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API, the WebSocket and the web client.
    Main,
    /// `metrics_addr`: `/metrics` only.
    Metrics,
}

/// A rate limit per client IP address, for the endpoints that check passwords.
pub type AuthLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

impl HttpState {
    fn service(&self) -> &dyn UseCases {
        &*self.sessions.service
    }

    fn metrics(&self) -> &Metrics {
        &self.sessions.metrics
    }
}

/// An HTTP error reply: status and the contract's `{error: {code, message}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds to send as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `429 rate_limited`, to be retried after `wait`.
    fn rate_limited(message: &str, wait: Duration) -> Self {
        // Whole seconds, rounded up, so that a retry on time is let in.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is larger than 64 KiB",
        )
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        if let ChatError::Internal(cause) = &e {
            error!(error = ?cause, "request failed");
        }
        let (code, message) = wire::error_code(&e);
        let status = match code {
            "bad_request" => StatusCode::BAD_REQUEST,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" => StatusCode::CONFLICT,
            "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
            "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, code, message)
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("response DTOs serialize");
    let mut res = Response::new(Full::new(Bytes::from(bytes)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error_response(e: &ApiError) -> HttpResponse {
    let body = json!({ "error": ErrorDto { code: e.code, message: &e.message } });
    let mut res = json_response(e.status, &body);
    if let Some(secs) = e.retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    res
}

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
        "/api/v1/register" => {
            let (username, password) = credentials(req, state.request_timeout).await?;
            let username = Username::parse(&username).map_err(ChatError::from)?;
            let password = Password::parse(&password).map_err(ChatError::from)?;
            let service = state.service();
            let signed = service.register(username, password).await;
            let signed = signed.map_err(ChatError::from)?;
            Ok(signed_in(StatusCode::CREATED, &signed))
        }
        "/api/v1/login" => login(state, client, req).await,
        "/api/v1/me" => {
            let auth = state.service().authenticate(bearer(&req)).await;
            let auth = auth.map_err(ChatError::from)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "user": UserDto::from(&auth.user) }),
            ))
        }
        "/api/v1/users" => users(state, &req).await,
        "/healthz" => Ok(if state.service().healthy().await {
            json_response(StatusCode::OK, &json!({ "status": "ok" }))
        } else {
            error_response(&ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is not answering",
            ))
        }),
        "/metrics" => Ok(metrics(state)),
        "/api/v1/openapi.json" => {
            let mut res = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
        "/ws" => upgrade(state, conn, req).await,
        _ => Err(not_found()),
    }
}

/// `POST /login` under the per-account throttle: an account locked by
/// failed logins answers 429 before its password is checked, the same for
/// a name that exists and one that does not.
async fn login(
    state: &HttpState,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (username, password) = credentials(req, state.request_timeout).await?;
    let attempt = match state
        .login_throttle
        .begin(&username, client, Instant::now())
    {
        Ok(attempt) => attempt,
        Err(wait) => {
            state.metrics().logins_throttled.inc();
            return Err(ApiError::rate_limited(
                "too many failed logins to this account; try again later",
                wait,
            ));
        }
    };
    match state.service().login(&username, &password).await {
        Ok(signed) => {
            attempt.succeeded(client, Instant::now());
            Ok(signed_in(StatusCode::OK, &signed))
        }
        Err(e) => {
            if matches!(e, LoginError::InvalidCredentials) {
                attempt.failed(Instant::now());
            }
            Err(ChatError::from(e).into())
        }
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
fn web_route<B>(req: &Request<B>) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(method_not_allowed("GET, HEAD", path));
    }
    let asset = web::find(path)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file"))?;
    Ok(web::serve(asset, req.method(), req.headers()))
}

fn signed_in(status: StatusCode, s: &SignedIn) -> HttpResponse {
    json_response(
        status,
        &json!({
            "user": UserDto::from(&s.user),
            "token": s.token.token,
            "expiresAt": wire::rfc3339(s.token.expires_at),
        }),
    )
}

/// The bearer token of the `Authorization` header.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a JSON object body: 413 over 64 KiB, 400 for anything malformed,
/// 408 when it takes longer than `timeout` to arrive.
async fn json_object(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Map<String, Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let read = read_body(body, timeout);
    if let Err(refused) = json_headers(&parts.headers) {
        // Read what the client is still sending before answering.
        let _ = read.await;
        return Err(refused);
    }
    json_body(&read.await?)
}

/// Most bytes of a refused body that are read and thrown away before the
/// answer: a client still writing its body then reads the `413` (or
/// `400`), where an answer sent at once would meet a broken pipe on its
/// side. Past this much the connection is cut short.
const DRAIN_BYTES: usize = 1 << 20;

/// A body of at most [`MAX_BODY_BYTES`]: `413` for a longer one (read on,
/// and thrown away, up to [`DRAIN_BYTES`]), `408` when it takes longer
/// than `timeout`.
async fn read_body(mut body: Incoming, timeout: Duration) -> Result<Bytes, ApiError> {
    let read = async {
        let mut kept = Vec::new();
        let mut seen = 0;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen <= MAX_BODY_BYTES {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN_BYTES {
                break;
            }
        }
        if seen > MAX_BODY_BYTES {
            return Err(ApiError::too_large());
        }
        Ok(Bytes::from(kept))
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            "the request body did not arrive in time",
        )
    })?
}

/// What a JSON body's headers must say before it is read: 413 when they
/// declare more than 64 KiB, 400 without `Content-Type: application/json`.
fn json_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::bad_request(
            "expected a JSON body (Content-Type: application/json)",
        ));
    }
    Ok(())
}

/// A body read within the limit, as a JSON object: 400 for anything else.
fn json_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(_) => Err(ApiError::bad_request("the body is not valid JSON")),
    }
}

async fn credentials(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<(String, String), ApiError> {
    credentials_in(&json_object(req, timeout).await?)
}

/// The `username` and `password` strings of a register or login body.
fn credentials_in(body: &Map<String, Value>) -> Result<(String, String), ApiError> {
    let field = |name: &str| match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::bad_request(format!(
            "{name} is required and must be a string"
        ))),
    };
    Ok((field("username")?, field("password")?))
}

async fn users(state: &HttpState, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let auth = state.service().authenticate(bearer(req)).await;
    let auth = auth.map_err(ChatError::from)?;
    let prefix = query_param(req, "prefix").unwrap_or_default();
    let limit = match query_param(req, "limit") {
        None => None,
        Some(raw) => Some(
            decimal(&raw)
                .ok_or_else(|| ApiError::bad_request("limit must be a positive integer"))?,
        ),
    };
    let limit = PageLimit::parse(limit).map_err(ChatError::bad_request)?;
    let found = state
        .service()
        .find_users(&auth.user.id, &prefix, limit)
        .await
        .map_err(ChatError::from)?;
    let users: Vec<Value> = found
        .iter()
        .map(|(u, online)| json!({ "id": u.id.as_str(), "username": u.username.as_str(), "online": online }))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "users": users })))
}

/// A non-negative decimal integer, saturating: a limit past `u64::MAX` is
/// as far above the largest page as any other, not malformed.
fn decimal(raw: &str) -> Option<u64> {
    raw.parse().ok().or_else(|| {
        (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit())).then_some(u64::MAX)
    })
}

/// `GET /ws`: authenticate, reserve a session slot, queue the welcome, upgrade.
async fn upgrade(
    state: &Arc<HttpState>,
    conn: &Arc<Slot>,
    mut req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req)
        .map(str::to_owned)
        .or_else(|| query_param(&req, "access_token"));
    let auth = state.service().authenticate(token.as_deref()).await;
    let auth = auth.map_err(ChatError::from)?;
    if !hyper_tungstenite::is_upgrade_request(&req) {
        let mut res = error_response(&ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "WebSocket upgrade required",
        ));
        res.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(res);
    }
    let env = &state.sessions;
    if env.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        ));
    }
    let caller = Caller {
        user: auth.user,
        // 64 random bits as 16 hex digits: unique enough among one user's
        // sessions (all that a session id tells apart, also across a
        // cluster), and held in 32 bytes where a UUID's 36 characters took 64.
        session: SessionId::new(format!("{:016x}", rand::random::<u64>())),
    };
    let (response, websocket) = socket::upgrade(&mut req, state.ws_config)
        .map_err(|_| ApiError::bad_request("invalid WebSocket handshake"))?;
    let opened = state.service().open_session(&caller).await;
    opened.map_err(ChatError::from)?;

    // The session keeps the connection's slot: it counts toward its
    // address's cap for as long as it lasts.
    conn.upgraded();
    let handle = Mailbox::new(
        caller.session.clone(),
        env.settings.outbound.clone(),
        Some(conn.clone()),
    );
    // The welcome goes in first, so it precedes every event on this session.
    let welcome = wire::event_frame(
        "welcome",
        json!({
            "user": UserDto::from(&caller.user),
            "sessionId": caller.session.as_str(),
            "serverTime": wire::rfc3339(state.service().now()),
            "heartbeatSeconds": env.settings.heartbeat.as_secs(),
        }),
    );
    handle.push(hyper_tungstenite::tungstenite::Message::Text(welcome));
    if let Err(e) = env.attach.attach(&caller.user.id, handle.clone()).await {
        warn!(error = %e, "cannot attach a session");
        let _ = state.service().close_session(&caller).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server cannot take sessions right now; try again",
        ));
    }
    let pending = PendingSession {
        caller,
        expires_at: auth.expires_at,
        handle,
    };
    let env = env.clone();
    state.tracker.spawn(session::run(env, websocket, pending));
    Ok(response)
}

/// Connection errors, logged at most so often: clients cause them at will.
static CONNECTION_ERRORS: LogLimiter = LogLimiter::new("HTTP connection errors", 10);

/// Logs a failure to serve a connection, which is the client's doing far
/// more often than ours. A connection closed mid-request or for taking too
/// long is routine and not logged.
pub fn connection_error(e: &hyper::Error) {
    if !e.is_incomplete_message() && !e.is_timeout() && CONNECTION_ERRORS.allow() {
        warn!(error = %e, "HTTP connection error");
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

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
}
