//! `GET /ws`: the WebSocket handshake, authenticated before the upgrade,
//! and the session it starts.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use serde_json::json;
use tracing::warn;

use super::body::{bearer, query_param};
use super::error::{ApiError, error_response};
use super::{HttpResponse, HttpState};
use crate::adapters::edge::Slot;
use crate::adapters::wire::{self, UserDto};
use crate::adapters::ws::Mailbox;
use crate::adapters::ws::session::{self, PendingSession};
use crate::adapters::ws::socket;
use crate::domain::SessionId;
use crate::domain::service::Caller;

/// `GET /ws`: authenticate, reserve a session slot, queue the welcome, upgrade.
pub(super) async fn upgrade(
    state: &Arc<HttpState>,
    conn: &Arc<Slot>,
    mut req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req)
        .map(str::to_owned)
        .or_else(|| query_param(&req, "access_token"));
    let auth = state.service().authenticate(token.as_deref()).await?;
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
    state.service().open_session(&caller).await?;

    // The session keeps the connection's slot: it counts toward its
    // address's cap for as long as it lasts.
    conn.upgraded();
    let handle = Mailbox::new(
        caller.session.clone(),
        auth.device.clone(),
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
        expires_at: AtomicI64::new(auth.expires_at.millis()),
        handle,
    };
    let env = env.clone();
    state.tracker.spawn(session::run(env, websocket, pending));
    Ok(response.map(|_| super::HttpBody::default()))
}
