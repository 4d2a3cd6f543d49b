//! The REST endpoints: register, login, who am I, find users, health.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::body::{bearer, query_param};
use super::error::{ApiError, error_response, json_response};
use super::sessions::{SignInRequest, per_account, signed_in};
use super::{HttpResponse, HttpState};
use crate::adapters::failure::ChatError;
use crate::adapters::wire::UserDto;
use crate::domain::error::LoginError;
use crate::domain::{PageLimit, Password, Username};

/// `POST /register`: a new account, signed in on a new device session.
pub(super) async fn register(
    state: &HttpState,
    peer: IpAddr,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let sign_in = SignInRequest::read(state, peer, client, req).await?;
    let username = Username::parse(&sign_in.username)?;
    let password = Password::parse(&sign_in.password)?;
    let signed = state
        .service()
        .register(username, password, sign_in.device)
        .await?;
    Ok(signed_in(
        state,
        StatusCode::CREATED,
        &signed,
        sign_in.delivery,
    ))
}

/// `POST /login` under the per-account throttle: an account locked by
/// failed logins answers 429 before its password is checked, the same for
/// a name that exists and one that does not.
pub(super) async fn login(
    state: &HttpState,
    peer: IpAddr,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let sign_in = SignInRequest::read(state, peer, client, req).await?;
    let login = state
        .service()
        .login(&sign_in.username, &sign_in.password, sign_in.device);
    let wrong = |e: &LoginError| matches!(e, LoginError::InvalidCredentials);
    let locked = "too many failed logins to this account; try again later";
    let signed = per_account(state, &sign_in.username, client, locked, login, wrong).await?;
    Ok(signed_in(state, StatusCode::OK, &signed, sign_in.delivery))
}

/// `GET /me`: the account the token is for.
pub(super) async fn me(
    state: &HttpState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = state.service().authenticate(bearer(req)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "user": UserDto::from(&auth.user) }),
    ))
}

/// `GET /healthz`: whether the store answers.
pub(super) async fn health(state: &HttpState) -> HttpResponse {
    if state.service().healthy().await {
        json_response(StatusCode::OK, &json!({ "status": "ok" }))
    } else {
        error_response(&ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store is not answering",
        ))
    }
}

/// `GET /users`: accounts whose name starts with `prefix`, and whether
/// each is online.
pub(super) async fn users(
    state: &HttpState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = state.service().authenticate(bearer(req)).await?;
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
        .await?;
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
