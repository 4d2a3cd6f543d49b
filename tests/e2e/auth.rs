//! Tokens: every way a token can be wrong is 401, over HTTP and at the
//! WebSocket handshake, and the query-string form works for browsers.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, Client, TestServer, on_each_backend};

const SECRET: &str = "a-test-secret-of-enough-length";

fn forge(secret: &str, sub: &str, exp_offset: i64) -> String {
    forge_on(secret, sub, "no-such-session", exp_offset)
}

/// A token signed with `secret` for `sub` on device session `sid`.
fn forge_on(secret: &str, sub: &str, sid: &str, exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": sub, "name": "x", "iat": now, "exp": now + exp_offset, "jti": "j",
        "sid": sid, "gen": 0
    });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

async fn assert_refused(s: &TestServer, token: Option<&str>, what: &str) {
    let (status, body) = s.get("/api/v1/me", token).await;
    assert_eq!(status, 401, "{what} on /me");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    let ws = match token {
        Some(t) => Client::connect(&s.ws_url(), t).await.err(),
        None => Client::open(s.ws_url().into_client_request().unwrap())
            .await
            .err(),
    };
    assert_eq!(ws, Some(401), "{what} at the WebSocket handshake");
}

async fn every_bad_token_is_401_before_the_upgrade(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[("CONFAB_JWT_SECRET", SECRET)]).await else {
        return;
    };
    let a = s.register("frank").await;
    assert_refused(&s, None, "no token").await;
    assert_refused(&s, Some("not-a-jwt"), "garbage").await;
    assert_refused(&s, Some(&forge(SECRET, &a.id, -10)), "expired").await;
    assert_refused(
        &s,
        Some(&forge("another-secret-entirely", &a.id, 3600)),
        "other key",
    )
    .await;
    assert_refused(
        &s,
        Some(&forge(SECRET, "no-such-user", 3600)),
        "unknown user",
    )
    .await;

    let parts: Vec<&str> = a.token.split('.').collect();
    let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    assert_refused(&s, Some(&unsigned), "alg none").await;
    let mut sig = parts[2].to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    let tampered = format!("{}.{}.{}", parts[0], parts[1], sig);
    assert_refused(&s, Some(&tampered), "tampered signature").await;
    let other_claims = b64(&format!(r#"{{"sub":"{}","exp":9999999999,"iat":1}}"#, a.id));
    let swapped = format!("{}.{}.{}", parts[0], other_claims, parts[2]);
    assert_refused(&s, Some(&swapped), "tampered claims").await;

    // and the genuine one works
    let (status, _) = s.get("/api/v1/me", Some(&a.token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        Some(200),
        Some(
            s.get("/api/v1/me", Some(&forge_on(SECRET, &a.id, &a.session, 60)))
                .await
                .0
        )
    );
    // Signed right, but of no live device session: refused.
    assert_refused(&s, Some(&forge(SECRET, &a.id, 60)), "no device session").await;
}

#[tokio::test]
async fn the_refusal_body_is_the_json_error() {
    let s = TestServer::start().await;
    let res = s
        .http()
        .get(s.url("/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn browsers_authenticate_with_the_access_token_parameter() {
    let s = TestServer::start().await;
    let a = s.register("gina").await;
    let url = format!("{}?access_token={}", s.ws_url(), a.token);
    let mut c = Client::open(url.into_client_request().unwrap())
        .await
        .unwrap();
    let welcome = c.next_frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["content"]["user"]["id"], a.id);
    let bad = format!("{}?access_token=nope", s.ws_url());
    assert_eq!(
        Client::open(bad.into_client_request().unwrap()).await.err(),
        Some(401)
    );
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_with_a_token_is_426() {
    let s = TestServer::start().await;
    let a = s.register("hank").await;
    let (status, body) = s.get("/ws", Some(&a.token)).await;
    assert_eq!(status, 426);
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn tokens_survive_a_restart_because_the_generated_secret_is_kept() {
    let mut s = TestServer::start().await;
    let a = s.register("ivan").await;
    assert!(s.logged("generated a JWT secret"));
    assert_eq!(s.terminate().code(), Some(0));
    let s2 = TestServer::start_in(&s.data_dir, &[]).await;
    assert!(s2.logged("using the JWT secret in"));
    let (status, _) = s2.get("/api/v1/me", Some(&a.token)).await;
    assert_eq!(status, 200);
}

on_each_backend!(every_bad_token_is_401_before_the_upgrade,);
