//! What the server writes: replies bounded in bytes and always delivered,
//! outbound memory bounded in bytes, clients that read (however slowly)
//! kept, clients that do not read cut off, and protocol errors closed with
//! the codes RFC 6455 gives them.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::{Account, Client, TestServer, seqs};

/// Request rates high enough that only what a test is about limits it.
const UNLIMITED: [(&str, &str); 2] = [
    ("CONFAB_RATE_PER_SEC", "100000"),
    ("CONFAB_RATE_BURST", "100000"),
];

/// 4,000 control characters: 4,000 bytes as sent, 24,000 on the wire,
/// where JSON escapes each as `\u0001`.
fn escaped_body() -> String {
    "\u{1}".repeat(4000)
}

#[tokio::test]
async fn a_history_page_too_large_for_one_reply_comes_cut_short_by_bytes_and_pages_on() {
    let s = TestServer::start_with(&UNLIMITED).await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let body = escaped_body();
    let mut conversation = String::new();
    for _ in 0..60 {
        let ack = ca
            .ack("sendPrivateMessage", json!({"to": b.id, "body": body}))
            .await;
        conversation = ack["message"]["conversationId"].as_str().unwrap().into();
    }
    let mut cb = s.connect(&b).await;
    // 60 messages of 24 KB on the wire: 1.4 MB asked for in one reply.
    let newest = cb
        .ack(
            "getHistory",
            json!({"conversationId": conversation, "limit": 200}),
        )
        .await;
    let page = seqs(&newest);
    assert!(
        !page.is_empty() && page.len() < 60,
        "cut short: {}",
        page.len()
    );
    assert_eq!(newest["hasMore"], true);
    assert_eq!(*page.last().unwrap(), 60, "reading back keeps the newest");
    assert!(page.windows(2).all(|w| w[1] == w[0] + 1), "oldest first");
    // Paging back from the oldest seq shown reaches every message once.
    let mut seen: Vec<u64> = page.clone();
    let mut before = page[0];
    loop {
        let older = cb
            .ack(
                "getHistory",
                json!({"conversationId": conversation, "beforeSeq": before, "limit": 200}),
            )
            .await;
        let page = seqs(&older);
        assert!(!page.is_empty(), "at least one message per page");
        before = page[0];
        seen.extend(page);
        if older["hasMore"] == false {
            break;
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=60).collect::<Vec<_>>());
    // Reading on from a seq keeps the oldest, and pages on to the end.
    let on = cb.history_after(&conversation, 0).await;
    let on: Vec<u64> = on.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(on, (1..=60).collect::<Vec<_>>());
    let first = cb
        .ack(
            "getHistory",
            json!({"conversationId": conversation, "afterSeq": 0, "limit": 200}),
        )
        .await;
    assert_eq!(seqs(&first)[0], 1);
    assert_eq!(first["hasMore"], true);
    // The session is still open and answering.
    cb.ack("ping", json!({})).await;
}

/// `n` public rooms created by `owner`, each with one 24 KB message.
async fn busy_rooms(c: &mut Client, n: usize) -> Vec<String> {
    let body = escaped_body();
    let mut rooms = Vec::new();
    for i in 0..n {
        let room = c
            .ack(
                "createRoom",
                json!({"name": format!("room {i:02}"), "visibility": "public"}),
            )
            .await;
        let id = room["conversation"]["id"].as_str().unwrap().to_owned();
        c.ack("sendMessage", json!({"conversationId": id, "body": body}))
            .await;
        rooms.push(id);
    }
    rooms
}

#[tokio::test]
async fn get_conversations_pages_by_cursor_when_one_reply_cannot_hold_them_all() {
    let s = TestServer::start_with(&UNLIMITED).await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    let rooms = busy_rooms(&mut c, 15).await;
    let first = c.ack("getConversations", json!({})).await;
    let listed = first["conversations"].as_array().unwrap().len();
    assert!(listed > 0 && listed < 15, "cut short: {listed}");
    assert_eq!(first["hasMore"], true);
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for conversation in page["conversations"].as_array().unwrap() {
            seen.push(conversation["id"].as_str().unwrap().into());
        }
        if page["hasMore"] == false {
            assert_eq!(page["nextCursor"], Value::Null);
            break;
        }
        let cursor = page["nextCursor"].as_str().expect("a cursor with hasMore");
        page = c.ack("getConversations", json!({"cursor": cursor})).await;
    }
    // Most recently active first: the rooms in reverse order of creation.
    let expected: Vec<String> = rooms.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "each conversation once, in order");
    // A small list comes whole, with hasMore false.
    let b = s.register("bob").await;
    let mut cb = s.connect(&b).await;
    let all = cb.ack("getConversations", json!({})).await;
    assert_eq!(all["conversations"], json!([]));
    assert_eq!(all["hasMore"], false);
    assert_eq!(
        cb.error_code("getConversations", json!({"cursor": 7}))
            .await,
        "bad_request"
    );
}

/// The names of every room `listRooms` finds, walked page by page with its
/// cursor; and how many pages that took.
async fn walk_rooms(c: &mut Client, ask: Value) -> (Vec<String>, usize) {
    let (mut names, mut pages) = (Vec::new(), 0);
    let mut ask = ask;
    loop {
        let page = c.ack("listRooms", ask.clone()).await;
        pages += 1;
        let rooms = page["rooms"].as_array().unwrap();
        assert!(!rooms.is_empty() || page["hasMore"] == false);
        names.extend(rooms.iter().map(|r| r["name"].as_str().unwrap().to_owned()));
        if page["hasMore"] == false {
            assert_eq!(page["nextCursor"], Value::Null);
            return (names, pages);
        }
        ask["cursor"] = page["nextCursor"].clone();
    }
}

#[tokio::test]
async fn list_rooms_too_large_for_one_reply_is_cut_short_and_pages_by_cursor() {
    let s = TestServer::start_with(&UNLIMITED).await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    busy_rooms(&mut c, 15).await;
    let page = c.ack("listRooms", json!({"limit": 50})).await;
    let listed = page["rooms"].as_array().unwrap();
    assert!(
        !listed.is_empty() && listed.len() < 15,
        "cut: {}",
        listed.len()
    );
    assert_eq!(page["hasMore"], true);
    assert_eq!(listed[0]["name"], "room 00", "by name");
    let expected: Vec<String> = (0..15).map(|i| format!("room {i:02}")).collect();
    let (names, pages) = walk_rooms(&mut c, json!({"limit": 50})).await;
    assert_eq!(names, expected, "cut by size, paged by cursor");
    assert!(pages > 1);
    // The limit pages too: 4 at a time, with a prefix.
    let (names, pages) = walk_rooms(&mut c, json!({"limit": 4, "prefix": "ROOM 1"})).await;
    assert_eq!(names, expected[10..]);
    assert_eq!(pages, 2);
    let small = c.ack("listRooms", json!({"prefix": "room 03"})).await;
    assert_eq!(small["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(small["hasMore"], false);
    assert_eq!(
        c.error_code("listRooms", json!({"cursor": ""})).await,
        "bad_request"
    );
}

/// The server's peak resident memory, in bytes.
fn peak_rss(s: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// The sessions the server has closed with `code`, from its metrics.
async fn closed_with(s: &TestServer, code: u16) -> u64 {
    s.metrics_text()
        .await
        .lines()
        .find(|l| {
            l.starts_with("confab_sessions_closed_by_server_total")
                && l.contains(&format!("code=\"{code}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn clients_that_ask_for_large_replies_and_never_read_them_are_bounded_and_cut_off() {
    let s = TestServer::start_with(&[("CONFAB_SLOW_CONSUMER_SECS", "3")]).await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let body = escaped_body();
    let mut conversation = String::new();
    for _ in 0..10 {
        let ack = ca
            .ack("sendPrivateMessage", json!({"to": b.id, "body": body}))
            .await;
        conversation = ack["message"]["conversationId"].as_str().unwrap().into();
    }
    let before = peak_rss(&s);
    // Three sessions ask for 240 KB pages at the allowed rate and never read.
    let hogs = (0..3).map(|_| {
        let (s, a, conversation) = (&s, &a, conversation.clone());
        async move {
            let mut c = s.connect(a).await;
            let ask = json!({"type": "getHistory", "content": {"conversationId": conversation, "limit": 200}})
                .to_string();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                // A write that blocks means the server stopped reading us;
                // one that fails, that it closed the connection.
                let sent =
                    tokio::time::timeout(Duration::from_secs(1), c.try_send_text(&ask)).await;
                if sent != Ok(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            c
        }
    });
    let hogs = join_all(hogs).await;
    // Each is cut off as a slow consumer once its socket takes nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while closed_with(&s, 4008).await < 3 {
        assert!(Instant::now() < deadline, "the hogs were not all cut off");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let grown = peak_rss(&s).saturating_sub(before);
    assert!(grown < 100 << 20, "the server grew by {} MB", grown >> 20);
    eprintln!("peak resident memory grew by {} MB", grown >> 20);
    // Everyone else is served all along.
    assert!(ca.ack("ping", json!({})).await["serverTime"].is_string());
    drop(hogs);
}

/// 4,000 emoji: 16,000 bytes.
fn emoji_body() -> String {
    "😀".repeat(4000)
}

/// Reads `bob`'s message events at about `bytes_per_sec` (as fast as it can
/// when `None`) until `count` arrived; returns how many came and whether
/// the server closed the session.
async fn read_events(
    mut c: Client,
    count: usize,
    bytes_per_sec: Option<f64>,
) -> (usize, Option<u16>) {
    let started = Instant::now();
    let (mut got, mut bytes) = (0, 0usize);
    while got < count {
        let Some(frame) = c.next_frame_within(Duration::from_secs(30)).await else {
            break;
        };
        if frame["type"] == "message" {
            got += 1;
            bytes += frame.to_string().len();
        }
        if let Some(rate) = bytes_per_sec {
            let due = Duration::from_secs_f64(bytes as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    (got, c.closed)
}

#[tokio::test]
async fn a_burst_reaches_a_fast_reader_and_a_slow_draining_one_while_a_stalled_one_is_cut() {
    let s = TestServer::start().await;
    let bob = s.register("bob").await;
    let names: Vec<String> = (0..30).map(|i| format!("sender{i:02}")).collect();
    let senders: Vec<Account> = join_all(names.iter().map(|n| s.register(n))).await;
    let fast = s.connect(&bob).await;
    let draining = s.connect(&bob).await;
    let mut stalled = s.connect(&bob).await;
    const EACH: usize = 45;
    let total = senders.len() * EACH;
    let readers = (
        tokio::spawn(read_events(fast, total, None)),
        tokio::spawn(read_events(draining, total, Some(2_000_000.0))),
    );
    // 1,350 messages of 16 KB (21 MB) from 30 senders, as fast as they go.
    let body = emoji_body();
    let sends = senders.iter().map(|sender| {
        let (s, body, to) = (&s, &body, &bob.id);
        async move {
            let mut c = s.connect(sender).await;
            let mut ids = Vec::new();
            for _ in 0..EACH {
                ids.push(
                    c.send_request("sendPrivateMessage", json!({"to": to, "body": body}))
                        .await,
                );
            }
            for id in ids {
                assert_eq!(c.reply_to(&id).await["type"], "ack");
            }
            c
        }
    });
    let _senders = join_all(sends).await;
    let (fast, draining) = (readers.0.await.unwrap(), readers.1.await.unwrap());
    assert_eq!(fast, (total, None), "the fast reader gets every message");
    assert_eq!(
        draining,
        (total, None),
        "the reader draining at 2 MB/s is kept"
    );
    // The session that never read was cut off, and says so when it looks.
    assert_eq!(stalled.closed_with(Duration::from_secs(60)).await, 4008);
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    let bad = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    c.send(Message::Frame(bad)).await;
    assert_eq!(c.closed_with(Duration::from_secs(10)).await, 1007);
}

#[tokio::test]
async fn a_frame_that_breaks_the_protocol_closes_with_1002() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    // A reserved bit set, with no extension that gives it a meaning.
    let mut bad = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
    bad.header_mut().rsv1 = true;
    c.send(Message::Frame(bad)).await;
    assert_eq!(c.closed_with(Duration::from_secs(10)).await, 1002);
}
