//! Device sessions over HTTP: signing in with a refresh token, refreshing,
//! listing and ending sessions, changing the password, deleting the
//! account. The web client keeps its refresh token in a cookie that page
//! scripts cannot read ("cookie mode", docs/security.md).

use std::future::Future;
use std::net::IpAddr;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};
use tracing::warn;

use super::body::{bearer, credentials_in, json_object, optional_string, string_field};
use super::error::{ApiError, json_response};
use super::{HttpResponse, HttpState};
use crate::adapters::failure::ChatError;
use crate::adapters::wire::{self, UserDto};
use crate::domain::device::{DeviceInfo, DeviceName};
use crate::domain::error::{AccountError, RefreshError};
use crate::domain::service::{Authenticated, SignedIn};
use crate::domain::{DeviceId, Password};

/// The cookie that holds the web client's refresh token.
pub(super) const REFRESH_COOKIE: &str = "confab_refresh";
/// The only path the browser sends the refresh cookie to.
const REFRESH_PATH: &str = "/api/v1/token";
/// The header that asks for cookie mode, and that a cookie refresh must
/// carry: a page on another site can make the browser send the cookie but
/// cannot set a custom header without a CORS preflight, which this server
/// never grants (the CSRF guard).
pub(super) const COOKIE_MODE_HEADER: &str = "x-confab-refresh";
/// Longest refresh token read; real ones are 43 characters.
const MAX_REFRESH_TOKEN: usize = 256;

/// How the refresh token travels: in the JSON body, or in a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// `refreshToken` in the body.
    Body,
    /// `Set-Cookie`, `Secure` when the client came over TLS.
    Cookie {
        /// Over TLS (through a trusted proxy that says so).
        secure: bool,
    },
}

impl Delivery {
    /// What the request asked for.
    pub(super) fn of(state: &HttpState, peer: IpAddr, headers: &HeaderMap) -> Self {
        if !cookie_mode(headers) {
            return Self::Body;
        }
        // Only a proxy we trust can say the client's leg was TLS.
        let secure = state.trusted_proxies.contains(peer)
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Self::Cookie { secure }
    }
}

fn cookie_mode(headers: &HeaderMap) -> bool {
    headers
        .get(COOKIE_MODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"))
}

/// A register or login request, read.
pub(super) struct SignInRequest {
    /// Where the refresh token goes.
    pub delivery: Delivery,
    /// `username`, as sent.
    pub username: String,
    /// `password`, as sent.
    pub password: String,
    /// The device signing in.
    pub device: DeviceInfo,
}

impl SignInRequest {
    /// Reads the body and headers of a register or login request from
    /// `client`, which came in through `peer`.
    pub(super) async fn read(
        state: &HttpState,
        peer: IpAddr,
        client: IpAddr,
        req: Request<Incoming>,
    ) -> Result<Self, ApiError> {
        let delivery = Delivery::of(state, peer, req.headers());
        let headers = req.headers().clone();
        let body = json_object(req, state.request_timeout).await?;
        let (username, password) = credentials_in(&body)?;
        let device = device_info(&body, &headers, client)?;
        Ok(Self {
            delivery,
            username,
            password,
            device,
        })
    }
}

/// The device a register or login body and its headers describe:
/// `deviceName` when given (400 when it breaks the rules), else a name
/// made from the User-Agent.
fn device_info(
    body: &Map<String, Value>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<DeviceInfo, ApiError> {
    let name = match optional_string(body, "deviceName")? {
        Some(raw) => DeviceName::parse(&raw).map_err(ChatError::bad_request)?,
        None => DeviceName::lenient(&agent_name(
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        )),
    };
    Ok(DeviceInfo {
        name,
        address: Some(client.to_string()),
    })
}

/// A readable name for the client behind `agent`: "Firefox on Linux",
/// "curl", or "Unknown device".
fn agent_name(agent: Option<&str>) -> String {
    let Some(agent) = agent.map(str::trim).filter(|a| !a.is_empty()) else {
        return "Unknown device".to_owned();
    };
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    match woothee::parser::Parser::new().parse(agent) {
        Some(r) if r.browser_type == "browser" && known(r.os) => format!("{} on {}", r.name, r.os),
        Some(r) if r.browser_type == "browser" => r.name.to_owned(),
        // A library or a tool: its product token ("curl/8.5" is curl).
        _ => agent
            .split(['/', ' '])
            .next()
            .filter(|p| !p.is_empty())
            .unwrap_or("Unknown device")
            .to_owned(),
    }
}

/// The answer to register, login and refresh: the tokens, the refresh
/// token in the body or in a cookie.
pub(super) fn signed_in(
    state: &HttpState,
    status: StatusCode,
    s: &SignedIn,
    delivery: Delivery,
) -> HttpResponse {
    let now = state.service().now();
    let in_body = (delivery == Delivery::Body).then_some(s.refresh.token.as_str());
    let mut res = json_response(
        status,
        &json!({
            "user": UserDto::from(&s.user),
            "token": s.token.token,
            "expiresAt": wire::rfc3339(s.token.expires_at),
            "sessionId": s.device.as_str(),
            "refreshToken": in_body,
            "refreshExpiresAt": wire::rfc3339(s.refresh.expires_at),
        }),
    );
    if let Delivery::Cookie { secure } = delivery {
        let max_age = (s.refresh.expires_at.millis() - now.millis()) / 1000;
        set_cookie(res.headers_mut(), &s.refresh.token, max_age.max(0), secure);
    }
    res
}

fn set_cookie(headers: &mut HeaderMap, token: &str, max_age_secs: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{REFRESH_COOKIE}={token}; Path={REFRESH_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// `204`, clearing the refresh cookie when the request was in cookie mode.
fn no_content(headers: &HeaderMap) -> HttpResponse {
    let mut res = HttpResponse::default();
    *res.status_mut() = StatusCode::NO_CONTENT;
    if cookie_mode(headers) {
        set_cookie(res.headers_mut(), "", 0, false);
    }
    res
}

/// The refresh cookie's value, if the request carries one.
fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == REFRESH_COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// `POST /token/refresh`: a refresh token, from the body or (with the
/// cookie-mode header only) the cookie, for a new pair.
pub(super) async fn refresh(
    state: &HttpState,
    peer: IpAddr,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let delivery = Delivery::of(state, peer, req.headers());
    let token = if delivery == Delivery::Body {
        if refresh_cookie(req.headers()).is_some()
            && req.headers().get(header::CONTENT_TYPE).is_none()
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the refresh cookie is accepted only with the header X-Confab-Refresh: cookie",
            ));
        }
        string_field(
            &json_object(req, state.request_timeout).await?,
            "refreshToken",
        )?
    } else {
        refresh_cookie(req.headers()).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no refresh cookie; sign in again",
            )
        })?
    };
    if token.len() > MAX_REFRESH_TOKEN {
        return Err(RefreshError::Invalid.into());
    }
    match state
        .service()
        .refresh(&token, Some(client.to_string()))
        .await
    {
        Ok(signed) => Ok(signed_in(state, StatusCode::OK, &signed, delivery)),
        Err(e) => {
            if let RefreshError::Reused { user, device } = &e {
                state.metrics().refresh_reuse.inc();
                warn!(%user, %device, "refresh token reused: device session ended (RFC 9700 4.14)");
            }
            Err(e.into())
        }
    }
}

/// The caller, from the bearer token.
async fn caller(state: &HttpState, req: &Request<Incoming>) -> Result<Authenticated, ApiError> {
    Ok(state.service().authenticate(bearer(req)).await?)
}

/// `GET /sessions`: the caller's device sessions, theirs marked.
pub(super) async fn list(
    state: &HttpState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, req).await?;
    let devices = state.service().devices(&auth.user.id).await?;
    let sessions: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id.as_str(),
                "name": d.name.as_str(),
                "createdAt": wire::rfc3339(d.created_at),
                "lastUsedAt": wire::rfc3339(d.last_used_at),
                "lastAddress": d.last_address,
                "current": d.id == auth.device,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "sessions": sessions }),
    ))
}

/// `DELETE /sessions/{id}`: ends one of the caller's sessions.
pub(super) async fn end(
    state: &HttpState,
    req: &Request<Incoming>,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, req).await?;
    let device = DeviceId::new(id);
    state.service().end_device(&auth.user.id, &device).await?;
    // The cookie is this device's: cleared only when it ended itself.
    if device == auth.device {
        Ok(no_content(req.headers()))
    } else {
        Ok(no_content(&HeaderMap::new()))
    }
}

/// `POST /logout`: ends the caller's own session.
pub(super) async fn logout(
    state: &HttpState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, req).await?;
    state
        .service()
        .end_device(&auth.user.id, &auth.device)
        .await?;
    Ok(no_content(req.headers()))
}

/// `POST /logout-all`: ends every session of the caller's, theirs too.
pub(super) async fn logout_all(
    state: &HttpState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, req).await?;
    state.service().end_all_devices(&auth.user.id).await?;
    Ok(no_content(req.headers()))
}

/// `POST /password`: a new password, given the current one; every other
/// session ends.
pub(super) async fn password(
    state: &HttpState,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, &req).await?;
    let body = json_object(req, state.request_timeout).await?;
    let current = string_field(&body, "currentPassword")?;
    let new = Password::parse(&string_field(&body, "newPassword")?)?;
    let change = state.service().change_password(&auth, &current, new);
    confirm_password(state, &auth, client, change).await?;
    // The caller's session stays, and so does its cookie.
    Ok(no_content(&HeaderMap::new()))
}

/// `DELETE /me`: deletes the caller's account, given its password.
pub(super) async fn delete_me(
    state: &HttpState,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = caller(state, &req).await?;
    let headers = req.headers().clone();
    let body = json_object(req, state.request_timeout).await?;
    let password = string_field(&body, "password")?;
    let delete = state.service().delete_account(&auth.user, &password);
    confirm_password(state, &auth, client, delete).await?;
    Ok(no_content(&headers))
}

/// Runs `check`, a use case that asks for the account's password, under
/// login's per-account throttle: a stolen token guessing the password from
/// new addresses is locked out as a login would be.
async fn confirm_password(
    state: &HttpState,
    auth: &Authenticated,
    client: IpAddr,
    check: impl Future<Output = Result<(), AccountError>>,
) -> Result<(), ApiError> {
    let wrong = |e: &AccountError| matches!(e, AccountError::WrongPassword);
    let locked = "too many wrong passwords for this account; try again later";
    per_account(
        state,
        auth.user.username.as_str(),
        client,
        locked,
        check,
        wrong,
    )
    .await
}

/// Runs `check`, which verifies a password of `username`'s, under the
/// per-account throttle of failed logins: refused with `locked` while the
/// account is locked to `client`; a failure that `wrong` calls a wrong
/// password counts toward the lock, a success makes `client` known.
pub(super) async fn per_account<T, E: Into<ApiError>>(
    state: &HttpState,
    username: &str,
    client: IpAddr,
    locked: &str,
    check: impl Future<Output = Result<T, E>>,
    wrong: impl Fn(&E) -> bool,
) -> Result<T, ApiError> {
    let attempt = state
        .login_throttle
        .begin(username, client, Instant::now())
        .map_err(|wait| {
            state.metrics().logins_throttled.inc();
            ApiError::rate_limited(locked, wait)
        })?;
    match check.await {
        Ok(value) => {
            attempt.succeeded(client, Instant::now());
            Ok(value)
        }
        Err(e) => {
            if wrong(&e) {
                attempt.failed(Instant::now());
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_named_after_its_browser_and_system() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(agent_name(Some(firefox)), "Firefox on Linux");
        assert_eq!(agent_name(Some("curl/8.5.0")), "curl");
        assert_eq!(agent_name(None), "Unknown device");
        assert_eq!(agent_name(Some("  ")), "Unknown device");
    }

    #[test]
    fn the_refresh_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; confab_refresh=xyz; b=2"),
        );
        assert_eq!(refresh_cookie(&h).as_deref(), Some("xyz"));
        assert_eq!(refresh_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_refresh_path() {
        let mut h = HeaderMap::new();
        set_cookie(&mut h, "tok", 60, true);
        let c = h[header::SET_COOKIE].to_str().unwrap();
        for part in [
            "confab_refresh=tok",
            "Path=/api/v1/token",
            "Max-Age=60",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
    }
}
