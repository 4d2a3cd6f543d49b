//! Device sessions (docs/protocol.md, "Device sessions"): refresh tokens
//! that rotate and catch reuse, sessions a user can list and end, logout,
//! logout everywhere, password change, account deletion, `reauth` and the
//! close code 4003, each over the real server.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Client, TestServer, on_each_backend};

const PASSWORD: &str = "stapled-battery-9";

async fn refresh(s: &TestServer, token: &str) -> (u16, Value) {
    s.post("/api/v1/token/refresh", json!({ "refreshToken": token }))
        .await
}

/// `method path` with a bearer token and an optional JSON body.
async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s.http().request(method, s.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn me_status(s: &TestServer, token: &str) -> u16 {
    s.get("/api/v1/me", Some(token)).await.0
}

async fn sessions(s: &TestServer, token: &str) -> Vec<Value> {
    let (status, body) = s.get("/api/v1/sessions", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

fn close_within() -> Duration {
    Duration::from_secs(1)
}

#[tokio::test]
async fn register_and_login_open_a_device_session_with_a_refresh_token() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            "/api/v1/register",
            json!({"username": "dana", "password": PASSWORD, "deviceName": " Dana's laptop "}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for field in [
        "token",
        "expiresAt",
        "sessionId",
        "refreshToken",
        "refreshExpiresAt",
    ] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert_eq!(body["refreshToken"].as_str().unwrap().len(), 43);
    let token = body["token"].as_str().unwrap();
    let listed = sessions(&s, token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], body["sessionId"]);
    assert_eq!(listed[0]["name"], "Dana's laptop");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["lastAddress"], "127.0.0.1");

    // Without a name, the User-Agent names it; a bad name is refused.
    let res = s
        .http()
        .post(s.url("/api/v1/login"))
        .header("user-agent", "curl/8.5.0")
        .json(&json!({"username": "dana", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let names: Vec<String> = sessions(&s, token)
        .await
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"curl".to_owned()), "{names:?}");
    let (status, body) = s
        .post(
            "/api/v1/login",
            json!({"username": "dana", "password": PASSWORD, "deviceName": "x".repeat(65)}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn a_refresh_token_rotates_and_one_spent_moments_ago_is_a_conflict() {
    let s = TestServer::start().await;
    let a = s.register("rita").await;
    let (status, first) = refresh(&s, &a.refresh).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["sessionId"], a.session.as_str());
    let next = first["refreshToken"].as_str().unwrap();
    assert_ne!(next, a.refresh);
    assert_eq!(me_status(&s, first["token"].as_str().unwrap()).await, 200);

    // The spent one again, within the grace window: 409, nothing ended.
    let (status, body) = refresh(&s, &a.refresh).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, second) = refresh(&s, next).await;
    assert_eq!(status, 200, "{second}");

    // Nonsense and missing tokens.
    assert_eq!(refresh(&s, "not-a-token").await.0, 401);
    let (status, _) = s.post("/api/v1/token/refresh", json!({})).await;
    assert_eq!(status, 400);
}

async fn concurrent_refreshes_with_one_token_have_exactly_one_winner(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[("CONFAB_AUTH_RATE_BURST", "100")]).await else {
        return;
    };
    let a = s.register("racer").await;
    let tries = (0..8).map(|_| refresh(&s, &a.refresh));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    // The race ended nothing: the session is alive.
    assert_eq!(me_status(&s, &a.token).await, 200);
}

async fn a_refresh_token_reused_after_the_grace_window_ends_its_session(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[("CONFAB_REFRESH_GRACE_SECS", "0")]).await else {
        return;
    };
    let a = s.register("thief").await;
    let mut ws = s.connect(&a).await;
    let (status, fresh) = refresh(&s, &a.refresh).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = refresh(&s, &a.refresh).await;
    assert_eq!(status, 401, "{body}");
    // The whole session ended: its newest tokens too, and its socket.
    let newest = fresh["refreshToken"].as_str().unwrap();
    assert_eq!(refresh(&s, newest).await.0, 401);
    assert_eq!(me_status(&s, fresh["token"].as_str().unwrap()).await, 401);
    assert_eq!(me_status(&s, &a.token).await, 401);
    assert_eq!(ws.closed_with(close_within()).await, 4003);
    assert!(s.logged("refresh token reused"), "the reuse is logged");
    assert!(
        s.metrics_text()
            .await
            .contains("confab_refresh_token_reuse_total 1")
    );
}

#[tokio::test]
async fn a_user_lists_their_sessions_and_ends_another_one_whose_socket_closes_with_4003() {
    let s = TestServer::start().await;
    let a = s.register("owen").await;
    let phone = s.login_on(&a, "phone").await;
    let stranger = s.register("stranger").await;
    let mut phone_ws = s.connect(&phone).await;
    let mut laptop_ws = s.connect(&a).await;

    let listed = sessions(&s, &a.token).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let current: Vec<&Value> = listed.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a.session.as_str());
    assert!(listed.iter().all(|d| d["id"] != stranger.session.as_str()));

    // Someone else's session, or none at all: 404, and nothing ends.
    let path = format!("/api/v1/sessions/{}", stranger.session);
    let (status, body) = call(&s, reqwest::Method::DELETE, &path, &a.token, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(me_status(&s, &stranger.token).await, 200);
    let (status, _) = call(
        &s,
        reqwest::Method::DELETE,
        "/api/v1/sessions/nope",
        &a.token,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let path = format!("/api/v1/sessions/{}", phone.session);
    let (status, _) = call(&s, reqwest::Method::DELETE, &path, &a.token, None).await;
    assert_eq!(status, 204);
    assert_eq!(phone_ws.closed_with(close_within()).await, 4003);
    assert_eq!(me_status(&s, &phone.token).await, 401);
    assert_eq!(refresh(&s, &phone.refresh).await.0, 401);
    assert_eq!(
        Client::connect(&s.ws_url(), &phone.token).await.err(),
        Some(401)
    );
    // The laptop is untouched.
    assert_eq!(me_status(&s, &a.token).await, 200);
    laptop_ws.ack("ping", json!({})).await;
    assert_eq!(sessions(&s, &a.token).await.len(), 1);
    // Ending it again: it is gone.
    let (status, _) = call(&s, reqwest::Method::DELETE, &path, &a.token, None).await;
    assert_eq!(status, 404);
}

async fn logout_ends_this_session_and_logout_all_ends_every_one(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let a = s.register("lou").await;
    let tablet = s.login_on(&a, "tablet").await;
    let phone = s.login_on(&a, "phone").await;
    let mut tablet_ws = s.connect(&tablet).await;
    let mut phone_ws = s.connect(&phone).await;

    let (status, _) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/logout",
        &tablet.token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(tablet_ws.closed_with(close_within()).await, 4003);
    assert_eq!(me_status(&s, &tablet.token).await, 401);
    assert_eq!(refresh(&s, &tablet.refresh).await.0, 401);
    assert_eq!(me_status(&s, &phone.token).await, 200);

    let (status, _) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/logout-all",
        &a.token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(phone_ws.closed_with(close_within()).await, 4003);
    for t in [&a.token, &phone.token] {
        assert_eq!(me_status(&s, t).await, 401);
    }
    assert_eq!(refresh(&s, &phone.refresh).await.0, 401);
    // Logging in again starts afresh.
    let again = s.login_on(&a, "laptop").await;
    assert_eq!(me_status(&s, &again.token).await, 200);
    assert_eq!(sessions(&s, &again.token).await.len(), 1);
}

async fn a_password_change_keeps_this_session_and_ends_the_others(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let a = s.register("pat").await;
    let other = s.login_on(&a, "other").await;
    let mut other_ws = s.connect(&other).await;
    let mut own_ws = s.connect(&a).await;
    let change = |current: &str, new: &str| json!({"currentPassword": current, "newPassword": new});

    let (status, body) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/password",
        &a.token,
        Some(change("wrong-password-1", "a-new-long-secret-7")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/password",
        &a.token,
        Some(change(PASSWORD, "short")),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(me_status(&s, &other.token).await, 200, "nothing ended yet");

    let (status, _) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/password",
        &a.token,
        Some(change(PASSWORD, "a-new-long-secret-7")),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(other_ws.closed_with(close_within()).await, 4003);
    assert_eq!(me_status(&s, &other.token).await, 401);
    assert_eq!(me_status(&s, &a.token).await, 200);
    own_ws.ack("ping", json!({})).await;
    let (status, _) = s
        .post(
            "/api/v1/login",
            json!({"username": "pat", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .post(
            "/api/v1/login",
            json!({"username": "pat", "password": "a-new-long-secret-7"}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn a_deleted_account_is_signed_out_everywhere_its_name_stays_taken_and_its_messages_stay(
    backend: Backend,
) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let gone = s.register("gone").await;
    let friend = s.register("friend").await;
    let mut gone_ws = s.connect(&gone).await;
    let mut friend_ws = s.connect(&friend).await;
    let sent = gone_ws
        .ack(
            "sendPrivateMessage",
            json!({"to": friend.id, "body": "bye"}),
        )
        .await;
    let conversation = sent["message"]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = gone_ws
        .ack(
            "createRoom",
            json!({"name": "club", "visibility": "public"}),
        )
        .await;
    let room = room["conversation"]["id"].as_str().unwrap().to_owned();
    friend_ws
        .ack("joinRoom", json!({ "conversationId": room }))
        .await;

    let (status, _) = call(
        &s,
        reqwest::Method::DELETE,
        "/api/v1/me",
        &gone.token,
        Some(json!({"password": "not it at all"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &s,
        reqwest::Method::DELETE,
        "/api/v1/me",
        &gone.token,
        Some(json!({"password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(gone_ws.closed_with(close_within()).await, 4003);
    assert_eq!(me_status(&s, &gone.token).await, 401);
    // They left their rooms, as the members see.
    let left = friend_ws
        .wait_for(|f| f["type"] == "member" && f["content"]["action"] == "left")
        .await;
    assert_eq!(left["content"]["user"]["id"], gone.id.as_str());
    assert_eq!(left["content"]["conversationId"], room.as_str());
    let (status, _) = s
        .post(
            "/api/v1/login",
            json!({"username": "gone", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .post(
            "/api/v1/register",
            json!({"username": "GONE", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 409, "the name stays taken");
    let (_, found) = s.get("/api/v1/users?prefix=gon", Some(&friend.token)).await;
    assert_eq!(found["users"], json!([]), "not found by others");
    assert_eq!(
        friend_ws
            .error_code(
                "sendPrivateMessage",
                json!({"to": gone.id, "body": "hello?"})
            )
            .await,
        "not_found"
    );
    let history = friend_ws.history_after(&conversation, 0).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["body"], "bye");
    assert_eq!(history[0]["sender"], "gone");
}

/// When an access token expires, in Unix milliseconds (its `exp`).
fn expiry_ms(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["exp"].as_i64().unwrap() * 1000
}

async fn sleep_until_ms(at: i64) {
    let left = at - chrono::Utc::now().timestamp_millis();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

#[tokio::test]
async fn reauth_keeps_a_socket_open_past_its_first_token_and_without_it_4001_follows() {
    let s = TestServer::start_with(&[("CONFAB_TOKEN_TTL_SECS", "3")]).await;
    let a = s.register("rey").await;
    let mut ws = s.connect(&a).await;
    // A second later (the token's seconds then differ), a fresh token of
    // the same session, from its refresh token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, fresh) = refresh(&s, &a.refresh).await;
    let ack = ws.ack("reauth", json!({ "token": fresh["token"] })).await;
    assert_eq!(ack["expiresAt"], fresh["expiresAt"]);
    // Past the first token's expiry, still open.
    sleep_until_ms(expiry_ms(&a.token) + 300).await;
    ws.ack("ping", json!({})).await;
    // Another session's token, junk, or none: refused, the socket stays.
    let other = s.login_on(&a, "other").await;
    assert_eq!(
        ws.error_code("reauth", json!({ "token": other.token }))
            .await,
        "unauthorized"
    );
    assert_eq!(
        ws.error_code("reauth", json!({ "token": "junk" })).await,
        "unauthorized"
    );
    assert_eq!(ws.error_code("reauth", json!({})).await, "bad_request");
    // No further reauth: closed with 4001 at the new expiry.
    assert_eq!(ws.closed_with(Duration::from_secs(5)).await, 4001);
}

#[tokio::test]
async fn past_the_device_limit_the_least_recently_used_session_ends() {
    let s = TestServer::start_with(&[("CONFAB_MAX_DEVICES_PER_USER", "2")]).await;
    let a = s.register("max").await;
    let second = s.login_on(&a, "second").await;
    let mut first_ws = s.connect(&a).await;
    let third = s.login_on(&a, "third").await;
    assert_eq!(first_ws.closed_with(close_within()).await, 4003);
    assert_eq!(me_status(&s, &a.token).await, 401);
    for t in [&second.token, &third.token] {
        assert_eq!(me_status(&s, t).await, 200);
    }
}

#[tokio::test]
async fn the_refresh_endpoint_is_throttled_per_address_like_login() {
    let s = TestServer::start_with(&[
        ("CONFAB_AUTH_RATE_PER_SEC", "1"),
        ("CONFAB_AUTH_RATE_BURST", "3"),
    ])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(refresh(&s, "guess").await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn the_web_clients_refresh_token_lives_in_an_http_only_cookie_behind_a_csrf_header() {
    let s = TestServer::start().await;
    s.register("cookie").await;
    let res = s
        .http()
        .post(s.url("/api/v1/login"))
        .header("x-confab-refresh", "cookie")
        .json(&json!({"username": "cookie", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in [
        "confab_refresh=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/v1/token",
    ] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    assert!(!cookie.contains("Secure"), "not over TLS: {cookie}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["refreshToken"], Value::Null, "kept from page scripts");
    let pair = cookie.split(';').next().unwrap().to_owned();

    // The cookie alone, as a cross-site form would send it: refused.
    let res = s
        .http()
        .post(s.url("/api/v1/token/refresh"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // With the header: a new pair, and a new cookie.
    let res = s
        .http()
        .post(s.url("/api/v1/token/refresh"))
        .header("cookie", &pair)
        .header("x-confab-refresh", "cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let renewed = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert_ne!(renewed.split(';').next().unwrap(), pair);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();

    // Logout clears it.
    let res = s
        .http()
        .post(s.url("/api/v1/logout"))
        .bearer_auth(&token)
        .header("x-confab-refresh", "cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

on_each_backend!(
    concurrent_refreshes_with_one_token_have_exactly_one_winner,
    a_refresh_token_reused_after_the_grace_window_ends_its_session,
    logout_ends_this_session_and_logout_all_ends_every_one,
    a_password_change_keeps_this_session_and_ends_the_others,
    a_deleted_account_is_signed_out_everywhere_its_name_stays_taken_and_its_messages_stay,
);

#[tokio::test]
async fn wrong_passwords_on_the_password_endpoint_lock_the_account_as_logins_do() {
    let s = TestServer::start_with(&[("CONFAB_LOGIN_FREE_FAILURES", "2")]).await;
    let a = s.register("guessed").await;
    let wrong = json!({"currentPassword": "a-wrong-guess-1", "newPassword": "a-new-long-secret-7"});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = call(
            &s,
            reqwest::Method::POST,
            "/api/v1/password",
            &a.token,
            Some(wrong.clone()),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses[..2], [403, 403], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}
