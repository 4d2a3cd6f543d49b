//! Section 2 of the contract: the welcome, the envelope, and every kind of
//! bad frame.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestServer;

#[tokio::test]
async fn the_first_frame_is_the_welcome() {
    let s = TestServer::start_with(&[("CONFAB_HEARTBEAT_SECS", "17")]).await;
    let a = s.register("jack").await;
    let mut c = crate::helpers::Client::connect(&s.ws_url(), &a.token)
        .await
        .unwrap();
    let w = c.next_frame().await;
    assert_eq!(w["type"], "welcome");
    assert!(w.get("id").is_none(), "events carry no id: {w}");
    let content = &w["content"];
    assert_eq!(content["user"], json!({"id": a.id, "username": "jack"}));
    assert!(content["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(content["serverTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(content["heartbeatSeconds"], 17);
}

#[tokio::test]
async fn every_request_gets_one_reply_in_request_order_echoing_its_id() {
    let s = TestServer::start().await;
    let a = s.register("kate").await;
    let mut c = s.connect(&a).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let kind = if i % 3 == 0 { "nonsense" } else { "ping" };
        ids.push(c.send_request(kind, json!({})).await);
    }
    for id in &ids {
        let f = c.next_frame().await;
        assert_eq!(&f["id"], id, "replies come in request order");
        assert!(f["type"] == "ack" || f["type"] == "error");
    }
    let pong = c.ack("ping", json!({})).await;
    assert!(pong["serverTime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_request_without_id_is_answered_with_a_null_id() {
    let s = TestServer::start().await;
    let a = s.register("liam").await;
    let mut c = s.connect(&a).await;
    c.send_text(r#"{"type":"ping"}"#).await;
    let f = c.next_frame().await;
    assert_eq!(f["type"], "ack");
    assert!(
        f["id"].is_null() && f.get("id").is_some(),
        "id present and null: {f}"
    );
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_the_connection_stays_open() {
    let s = TestServer::start().await;
    let a = s.register("mia").await;
    let b = s.register("noah").await;
    let mut c = s.connect(&a).await;
    let expect_bad = |f: serde_json::Value, id: Option<&str>| {
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["content"]["code"], "bad_request", "{f}");
        assert!(
            f["content"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        match id {
            Some(id) => assert_eq!(f["id"], id),
            None => assert!(f["id"].is_null()),
        }
    };
    c.send(Message::binary(vec![1u8, 2, 3])).await;
    expect_bad(c.next_frame().await, None);
    c.send_text("not json").await;
    expect_bad(c.next_frame().await, None);
    c.send_text("[1,2]").await;
    expect_bad(c.next_frame().await, None);
    c.send_text("\"just a string\"").await;
    expect_bad(c.next_frame().await, None);
    c.send_text(r#"{"type":"fly","id":"x1"}"#).await;
    expect_bad(c.next_frame().await, Some("x1"));
    c.send_text(r#"{"type":"ping","id":"x2","content":[]}"#)
        .await;
    expect_bad(c.next_frame().await, Some("x2"));
    // Valid JSON but for a lone surrogate escape, which no string can hold.
    c.send_text(r#"{"type":"sendPrivateMessage","id":"x3","content":{"to":"u","body":"\ud800"}}"#)
        .await;
    expect_bad(c.next_frame().await, Some("x3"));

    let cases = [
        ("sendPrivateMessage", json!({"body": "hi"}), "to"),
        ("sendPrivateMessage", json!({"to": 42, "body": "hi"}), "to"),
        ("sendPrivateMessage", json!({"to": b.id}), "body"),
        ("sendPrivateMessage", json!({"to": b.id, "body": 5}), "body"),
        (
            "sendPrivateMessage",
            json!({"to": b.id, "body": "x".repeat(4001)}),
            "4000",
        ),
        (
            "sendPrivateMessage",
            json!({"to": b.id, "body": " \n\t "}),
            "white space",
        ),
        (
            "sendPrivateMessage",
            json!({"to": b.id, "body": ""}),
            "body",
        ),
        (
            "sendPrivateMessage",
            json!({"to": b.id, "body": "x", "clientMsgId": 7}),
            "clientMsgId",
        ),
        ("sendMessage", json!({"body": "x"}), "conversationId"),
        (
            "getHistory",
            json!({"conversationId": "c", "limit": 0}),
            "limit",
        ),
        (
            "getHistory",
            json!({"conversationId": "c", "beforeSeq": -1}),
            "beforeSeq",
        ),
        (
            "markRead",
            json!({"conversationId": "c", "seq": "1"}),
            "seq",
        ),
        ("typing", json!({"conversationId": "c"}), "active"),
        ("getPresence", json!({"userIds": "nope"}), "userIds"),
        ("setStatus", json!({"status": "invisible"}), "status"),
        ("getConnectedUsers", json!({"limit": 0}), "limit"),
    ];
    for (kind, content, field) in cases {
        let f = c.request(kind, content.clone()).await;
        assert_eq!(f["content"]["code"], "bad_request", "{kind} {content}: {f}");
        let msg = f["content"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{kind} {content}: message {msg:?} names {field}"
        );
    }
    // Bad input never cost the connection.
    c.ack("ping", json!({})).await;
    // A body of exactly 4000 characters, multi-byte ones included, is fine.
    let ok = c
        .ack(
            "sendPrivateMessage",
            json!({"to": b.id, "body": "é".repeat(4000)}),
        )
        .await;
    assert_eq!(
        ok["message"]["body"].as_str().unwrap().chars().count(),
        4000
    );
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_connection_with_1009() {
    let s = TestServer::start().await;
    let a = s.register("olga").await;
    let mut c = s.connect(&a).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(65 * 1024));
    c.send_text(&big).await;
    assert_eq!(c.closed_with(crate::helpers::WAIT).await, 1009);
    // The server itself is fine.
    let mut again = s.connect(&a).await;
    again.ack("ping", json!({})).await;
}

#[tokio::test]
async fn a_frame_just_under_64_kib_is_read() {
    let s = TestServer::start().await;
    let a = s.register("pete").await;
    let mut c = s.connect(&a).await;
    let frame = format!(
        r#"{{"type":"ping","id":"big","pad":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    c.send_text(&frame).await;
    let f = c.reply_to("big").await;
    assert_eq!(f["type"], "ack");
}
