//! Blocking (`blockUser`, `unblockUser`, `getBlocked`): what a block closes
//! to the blocked user (direct messages, invitations), what it hides from
//! them (the blocker's presence, everywhere it shows), what it leaves open
//! (rooms they share), and the `lastSeen` of users who share no
//! conversation with the caller.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Account, Backend, Client, TestServer, on_each_backend};

const QUIET: Duration = Duration::from_millis(300);

fn presence_of(user: &Account) -> impl Fn(&Value) -> bool + '_ {
    move |f| f["type"] == "presence" && f["content"]["presence"]["userId"] == user.id
}

fn message_from(user: &Account) -> impl Fn(&Value) -> bool + '_ {
    move |f| f["type"] == "message" && f["content"]["message"]["senderId"] == user.id
}

/// Sends a direct message from `from` to `to`; returns its conversation id.
async fn dm(from: &mut Client, to: &Account, body: &str) -> String {
    let ack = from
        .ack("sendPrivateMessage", json!({"to": to.id, "body": body}))
        .await;
    ack["message"]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `viewer`'s view of `user` through `getPresence`.
async fn presence(viewer: &mut Client, user: &Account) -> Value {
    let ack = viewer
        .ack("getPresence", json!({"userIds": [user.id]}))
        .await;
    ack["presence"][0].clone()
}

/// Whether `getConnectedUsers` lists `user` to `viewer`.
async fn listed_connected(viewer: &mut Client, user: &Account) -> bool {
    let ack = viewer.ack("getConnectedUsers", json!({})).await;
    ack["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == user.id)
}

/// Whether `GET /users` shows `user` online to `viewer`.
async fn shown_online(s: &TestServer, viewer: &Account, user: &Account) -> bool {
    let path = format!("/api/v1/users?prefix={}", user.username);
    let (status, body) = s.get(&path, Some(&viewer.token)).await;
    assert_eq!(status, 200, "{body}");
    let found = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == user.id)
        .cloned()
        .unwrap_or_else(|| panic!("{} not found: {body}", user.username));
    found["online"].as_bool().unwrap()
}

async fn blocked_ids(c: &mut Client) -> Vec<String> {
    let ack = c.ack("getBlocked", json!({})).await;
    ack["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A server on `backend` with ann, bob and cid signed up; `None` when the
/// backend is not here (the test is skipped).
async fn start_with_three(backend: Backend) -> Option<(TestServer, [Account; 3])> {
    let s = TestServer::start_on(backend, &[]).await?;
    let people = [
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    ];
    Some((s, people))
}

async fn a_blocked_user_cannot_message_or_invite_the_blocker_until_unblocked(backend: Backend) {
    let Some((s, [ann, bob, _])) = start_with_three(backend).await else {
        return;
    };
    let mut ca = s.connect(&ann).await;
    let mut cb = s.connect(&bob).await;
    let direct = dm(&mut cb, &ann, "hello").await;
    ca.wait_for(message_from(&bob)).await;

    assert_eq!(
        ca.ack("blockUser", json!({"userId": bob.id})).await,
        json!({})
    );
    assert_eq!(
        cb.error_code("sendPrivateMessage", json!({"to": ann.id, "body": "hey"}))
            .await,
        "forbidden"
    );
    assert_eq!(
        cb.error_code(
            "sendMessage",
            json!({"conversationId": direct, "body": "hey"})
        )
        .await,
        "forbidden"
    );
    let room = cb
        .ack(
            "createRoom",
            json!({"name": "bobs", "visibility": "private"}),
        )
        .await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        cb.error_code(
            "inviteToRoom",
            json!({"conversationId": room, "userId": ann.id})
        )
        .await,
        "forbidden"
    );
    cb.ack("typing", json!({"conversationId": direct, "active": true}))
        .await;
    ca.expect_none(QUIET, |f| f["type"] == "message" || f["type"] == "typing")
        .await;
    // The blocker still writes to the blocked user.
    dm(&mut ca, &bob, "I can still write").await;
    cb.wait_for(message_from(&ann)).await;
    let history = ca
        .ack("getHistory", json!({"conversationId": direct}))
        .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);

    assert_eq!(
        ca.ack("unblockUser", json!({"userId": bob.id})).await,
        json!({})
    );
    dm(&mut cb, &ann, "thanks").await;
    ca.wait_for(message_from(&bob)).await;
    cb.ack(
        "inviteToRoom",
        json!({"conversationId": room, "userId": ann.id}),
    )
    .await;
}

async fn blocking_is_idempotent_listed_by_get_blocked_and_checked(backend: Backend) {
    let Some((s, [ann, bob, cid])) = start_with_three(backend).await else {
        return;
    };
    let mut ca = s.connect(&ann).await;
    assert!(blocked_ids(&mut ca).await.is_empty());
    for _ in 0..2 {
        assert_eq!(
            ca.ack("blockUser", json!({"userId": cid.id})).await,
            json!({})
        );
    }
    ca.ack("blockUser", json!({"userId": bob.id})).await;
    let got = ca.ack("getBlocked", json!({})).await;
    assert_eq!(
        got,
        json!({"users": [
            {"id": cid.id, "username": "cid"},
            {"id": bob.id, "username": "bob"},
        ]}),
        "earliest blocked first"
    );
    for _ in 0..2 {
        assert_eq!(
            ca.ack("unblockUser", json!({"userId": cid.id})).await,
            json!({})
        );
    }
    assert_eq!(blocked_ids(&mut ca).await, std::slice::from_ref(&bob.id));

    assert_eq!(
        ca.error_code("blockUser", json!({"userId": ann.id})).await,
        "bad_request"
    );
    assert_eq!(
        ca.error_code("unblockUser", json!({"userId": ann.id}))
            .await,
        "bad_request"
    );
    assert_eq!(
        ca.error_code("blockUser", json!({"userId": "no-such-user"}))
            .await,
        "not_found"
    );
    assert_eq!(
        ca.error_code("unblockUser", json!({"userId": "no-such-user"}))
            .await,
        "not_found"
    );
    assert_eq!(ca.error_code("blockUser", json!({})).await, "bad_request");
}

async fn a_blocked_user_sees_the_blocker_offline_and_never_seen_everywhere(backend: Backend) {
    let Some((s, [ann, bob, cid])) = start_with_three(backend).await else {
        return;
    };
    let mut ca = s.connect(&ann).await;
    let mut cb = s.connect(&bob).await;
    let mut cc = s.connect(&cid).await;
    dm(&mut ca, &bob, "hi bob").await;
    dm(&mut ca, &cid, "hi cid").await;
    assert_eq!(presence(&mut cb, &ann).await["status"], "online");
    assert!(listed_connected(&mut cb, &ann).await);
    assert!(shown_online(&s, &bob, &ann).await);

    ca.ack("blockUser", json!({"userId": bob.id})).await;
    let hidden = cb.wait_for(presence_of(&ann)).await["content"]["presence"].clone();
    assert_eq!(
        (hidden["status"].clone(), hidden["lastSeen"].clone()),
        (json!("offline"), Value::Null)
    );
    let seen = presence(&mut cb, &ann).await;
    assert_eq!(
        (seen["status"].clone(), seen["lastSeen"].clone()),
        (json!("offline"), Value::Null)
    );
    assert!(!listed_connected(&mut cb, &ann).await);
    assert!(!shown_online(&s, &bob, &ann).await);
    // Nobody else is affected, and the blocker still sees the blocked user.
    assert_eq!(presence(&mut cc, &ann).await["status"], "online");
    assert!(listed_connected(&mut cc, &ann).await);
    assert!(shown_online(&s, &cid, &ann).await);
    assert_eq!(presence(&mut ca, &bob).await["status"], "online");

    // No presence event of the blocker reaches the blocked user.
    ca.ack("setStatus", json!({"status": "away"})).await;
    assert_eq!(
        cc.wait_for(presence_of(&ann)).await["content"]["presence"]["status"],
        "away"
    );
    cb.expect_none(QUIET, presence_of(&ann)).await;
    ca.close().await;
    cc.wait_for(presence_of(&ann)).await;
    cb.expect_none(QUIET, presence_of(&ann)).await;
    let mut ca = s.connect(&ann).await;
    cc.wait_for(presence_of(&ann)).await;
    cb.expect_none(QUIET, presence_of(&ann)).await;

    ca.ack("unblockUser", json!({"userId": bob.id})).await;
    let back = cb.wait_for(presence_of(&ann)).await["content"]["presence"].clone();
    assert_eq!(back["status"], "online");
    assert!(back["lastSeen"].is_string(), "{back}");
    let seen = presence(&mut cb, &ann).await;
    assert_eq!(seen["status"], "online");
    assert!(seen["lastSeen"].is_string(), "{seen}");
    assert!(listed_connected(&mut cb, &ann).await);
    assert!(shown_online(&s, &bob, &ann).await);
}

async fn the_blocker_still_reads_the_rooms_they_share(backend: Backend) {
    let Some((s, [ann, bob, _])) = start_with_three(backend).await else {
        return;
    };
    let mut ca = s.connect(&ann).await;
    let mut cb = s.connect(&bob).await;
    let room = ca
        .ack(
            "createRoom",
            json!({"name": "lobby", "visibility": "public"}),
        )
        .await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cb.ack("joinRoom", json!({"conversationId": room})).await;
    ca.ack("blockUser", json!({"userId": bob.id})).await;
    cb.ack(
        "sendMessage",
        json!({"conversationId": room, "body": "still here"}),
    )
    .await;
    let got = ca.wait_for(message_from(&bob)).await;
    assert_eq!(got["content"]["message"]["body"], "still here");
    let history = ca.ack("getHistory", json!({"conversationId": room})).await;
    assert_eq!(history["messages"][0]["body"], "still here");
    ca.ack("sendMessage", json!({"conversationId": room, "body": "ok"}))
        .await;
    cb.wait_for(message_from(&ann)).await;
}

async fn last_seen_is_null_for_users_who_share_no_conversation(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (ann, zed) = (s.register("ann").await, s.register("zed").await);
    let mut ca = s.connect(&ann).await;
    s.connect(&zed).await.close().await;
    // Seen once (online or, by now, offline): hidden from a stranger.
    assert_eq!(presence(&mut ca, &zed).await["lastSeen"], Value::Null);
    // Online: the status shows, the time does not.
    let mut cz = s.connect(&zed).await;
    let seen = presence(&mut ca, &zed).await;
    assert_eq!(
        (seen["status"].clone(), seen["lastSeen"].clone()),
        (json!("online"), Value::Null)
    );
    // Everyone sees their own.
    assert!(presence(&mut ca, &ann).await["lastSeen"].is_string());
    // Once they share a conversation, it shows.
    dm(&mut cz, &ann, "hello").await;
    assert!(presence(&mut ca, &zed).await["lastSeen"].is_string());
}

on_each_backend!(
    a_blocked_user_cannot_message_or_invite_the_blocker_until_unblocked,
    blocking_is_idempotent_listed_by_get_blocked_and_checked,
    a_blocked_user_sees_the_blocker_offline_and_never_seen_everywhere,
    the_blocker_still_reads_the_rooms_they_share,
    last_seen_is_null_for_users_who_share_no_conversation,
);
