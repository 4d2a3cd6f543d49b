//! Presence: online while any session is open, events to contacts only,
//! multi-session users, status, and the per-user session limit.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Account, Backend, Client, TestServer, on_each_backend};

const QUIET: Duration = Duration::from_millis(300);

fn presence_of(user: &Account) -> impl Fn(&Value) -> bool + '_ {
    move |f| f["type"] == "presence" && f["content"]["presence"]["userId"] == user.id
}

/// Makes `a` and `b` contacts by a message between them.
async fn introduce(a_conn: &mut Client, b: &Account) {
    a_conn
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "hi"}))
        .await;
}

async fn contacts_see_a_user_come_online_once_and_go_offline_with_the_last_session(
    backend: Backend,
) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, stranger) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("zed").await,
    );
    let mut cb = s.connect(&b).await;
    let mut cz = s.connect(&stranger).await;
    {
        let mut a0 = s.connect(&a).await;
        introduce(&mut a0, &b).await;
        a0.close().await;
    }
    let offline = cb.wait_for(presence_of(&a)).await;
    assert_eq!(offline["content"]["presence"]["status"], "offline");

    let a1 = s.connect(&a).await;
    let online = cb.wait_for(presence_of(&a)).await["content"]["presence"].clone();
    assert_eq!(online["status"], "online");
    assert_eq!(online["username"], "ann");
    assert!(online["lastSeen"].as_str().unwrap().ends_with('Z'));

    let a2 = s.connect(&a).await;
    cb.expect_none(QUIET, presence_of(&a)).await;
    a1.close().await;
    cb.expect_none(QUIET, presence_of(&a)).await;
    a2.close().await;
    let gone = cb.wait_for(presence_of(&a)).await["content"]["presence"].clone();
    assert_eq!(gone["status"], "offline");
    assert!(gone["lastSeen"].is_string());
    cz.expect_none(QUIET, presence_of(&a)).await;
}

#[tokio::test]
async fn set_status_away_is_announced_and_reported() {
    let s = TestServer::start().await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    introduce(&mut ca, &b).await;
    let mut cb = s.connect(&b).await;
    let ack = ca.ack("setStatus", json!({"status": "away"})).await;
    assert_eq!(ack["presence"]["status"], "away");
    assert_eq!(ack["presence"]["userId"], a.id);
    let ev = cb.wait_for(presence_of(&a)).await;
    assert_eq!(ev["content"]["presence"]["status"], "away");
    // Setting the same status again is not news.
    ca.ack("setStatus", json!({"status": "away"})).await;
    cb.expect_none(QUIET, presence_of(&a)).await;
    let p = cb.ack("getPresence", json!({"userIds": [a.id]})).await;
    assert_eq!(p["presence"][0]["status"], "away");
    ca.ack("setStatus", json!({"status": "online"})).await;
    assert_eq!(
        cb.wait_for(presence_of(&a)).await["content"]["presence"]["status"],
        "online"
    );
}

async fn get_presence_reports_online_and_offline_users_and_skips_unknown_ids(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    // cid shares a conversation with ann: only then does ann see when cid
    // was last seen (docs/protocol.md, "Blocking").
    let mut cc = s.connect(&c).await;
    introduce(&mut cc, &a).await;
    cc.close().await;
    let ask = json!({"userIds": [b.id, "nope", a.id, c.id, a.id]});
    // The server notices the close a moment after the client finished it.
    let mut ack = ca.ack("getPresence", ask.clone()).await;
    for _ in 0..50 {
        if ack["presence"][2]["status"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ack = ca.ack("getPresence", ask.clone()).await;
    }
    let list = ack["presence"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{ack}");
    assert_eq!(list[0]["userId"], b.id);
    assert_eq!(list[0]["status"], "offline");
    assert!(list[0]["lastSeen"].is_null(), "bob never connected");
    assert_eq!(list[1]["status"], "online");
    assert_eq!(list[2]["status"], "offline");
    assert!(
        list[2]["lastSeen"].is_string(),
        "cid was seen when the session closed"
    );
}

#[tokio::test]
async fn connected_users_lists_each_online_user_once() {
    let s = TestServer::start().await;
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    let _a2 = s.connect(&a).await;
    let _cb = s.connect(&b).await;
    let ack = ca.ack("getConnectedUsers", json!({})).await;
    let mut names: Vec<&str> = ack["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bob"]);
    let _ = c;
    let one = ca.ack("getConnectedUsers", json!({"limit": 1})).await;
    assert_eq!(one["users"].as_array().unwrap().len(), 1);
    assert!(one["users"][0]["id"].is_string());
}

#[tokio::test]
async fn one_session_beyond_the_limit_is_refused_with_429_before_the_upgrade() {
    let s = TestServer::start_with(&[("CONFAB_MAX_SESSIONS_PER_USER", "2")]).await;
    let a = s.register("ann").await;
    let c1 = s.connect(&a).await;
    let _c2 = s.connect(&a).await;
    assert_eq!(
        Client::connect(&s.ws_url(), &a.token).await.err(),
        Some(429)
    );
    let res = s
        .http()
        .get(s.url("/ws"))
        .bearer_auth(&a.token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // A closed session frees its slot.
    c1.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c3 = s.connect(&a).await;
}

on_each_backend!(
    contacts_see_a_user_come_online_once_and_go_offline_with_the_last_session,
    get_presence_reports_online_and_offline_users_and_skips_unknown_ids,
);
