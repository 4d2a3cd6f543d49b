//! Messages: private and conversation sends, who gets which event, order,
//! idempotency, history, offline delivery, unread counts, receipts, typing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Account, Backend, Client, TestServer, on_each_backend, seqs};

const QUIET: Duration = Duration::from_millis(300);

fn is_message(f: &Value) -> bool {
    f["type"] == "message"
}

async fn a_private_message_is_acked_to_the_sender_and_pushed_to_every_other_session(
    backend: Backend,
) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let mut b2 = s.connect(&b).await;

    let ack = a1
        .ack(
            "sendPrivateMessage",
            json!({"to": b.id, "body": "hello", "clientMsgId": "c-1"}),
        )
        .await;
    let m = &ack["message"];
    assert_eq!(m["seq"], 1);
    assert_eq!(m["senderId"], a.id);
    assert_eq!(m["sender"], "ann");
    assert_eq!(m["body"], "hello");
    assert_eq!(m["clientMsgId"], "c-1");
    assert_eq!(m["deleted"], false);
    assert!(m["editedAt"].is_null());
    assert!(m["createdAt"].as_str().unwrap().ends_with('Z'));
    for c in [&mut a2, &mut b1, &mut b2] {
        let ev = c.event("message").await;
        assert_eq!(&ev["message"], m, "the event carries the acked message");
    }
    a1.expect_none(QUIET, is_message).await;
}

async fn one_direct_conversation_per_pair_whoever_writes_first(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let m1 = ca
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "1"}))
        .await;
    let m2 = cb
        .ack("sendPrivateMessage", json!({"to": a.id, "body": "2"}))
        .await;
    assert_eq!(
        m1["message"]["conversationId"],
        m2["message"]["conversationId"]
    );
    assert_eq!(m2["message"]["seq"], 2);
    let convs = ca.ack("getConversations", json!({})).await;
    let list = convs["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(c["kind"], "direct");
    assert!(c["name"].is_null() && c["visibility"].is_null());
    assert_eq!(c["memberCount"], 2);
    assert_eq!(c["members"].as_array().unwrap().len(), 2);
    assert_eq!(c["lastSeq"], 2);
    assert_eq!(c["lastMessage"]["body"], "2");
}

async fn a_user_may_message_themself(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let a = s.register("ann").await;
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let ack = a1
        .ack("sendPrivateMessage", json!({"to": a.id, "body": "note"}))
        .await;
    assert_eq!(ack["message"]["seq"], 1);
    assert_eq!(a2.event("message").await["message"]["body"], "note");
    let convs = a1.ack("getConversations", json!({})).await;
    assert_eq!(convs["conversations"][0]["memberCount"], 1);
}

async fn send_message_uses_a_conversation_id_and_checks_membership(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let mut cc = s.connect(&c).await;
    let first = ca
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "hi"}))
        .await;
    let conv = first["message"]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = cb
        .ack("sendMessage", json!({"conversationId": conv, "body": "yo"}))
        .await;
    assert_eq!(m["message"]["seq"], 2);
    assert_eq!(ca.event("message").await["message"]["seq"], 2);

    let content = json!({"conversationId": conv, "body": "sneak"});
    assert_eq!(cc.error_code("sendMessage", content).await, "forbidden");
    let history = json!({"conversationId": conv});
    assert_eq!(
        cc.error_code("getHistory", history.clone()).await,
        "forbidden"
    );
    let read = json!({"conversationId": conv, "seq": 1});
    assert_eq!(cc.error_code("markRead", read).await, "forbidden");
    let typing = json!({"conversationId": conv, "active": true});
    assert_eq!(cc.error_code("typing", typing).await, "forbidden");
    let ghost = json!({"conversationId": "no-such-conversation", "body": "x"});
    assert_eq!(cc.error_code("sendMessage", ghost).await, "not_found");
    let ghost = json!({"conversationId": "no-such-conversation"});
    assert_eq!(ca.error_code("getHistory", ghost).await, "not_found");
    let nobody = json!({"to": "no-such-user", "body": "x"});
    assert_eq!(
        ca.error_code("sendPrivateMessage", nobody).await,
        "not_found"
    );
    cc.expect_none(QUIET, is_message).await;
}

async fn a_retry_with_the_same_client_msg_id_acks_the_original_and_sends_no_event(
    backend: Backend,
) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let send = json!({"to": b.id, "body": "once", "clientMsgId": "k1"});
    let first = ca.ack("sendPrivateMessage", send.clone()).await;
    let again = ca.ack("sendPrivateMessage", send).await;
    assert_eq!(first, again);
    // A different body under the same key is still the same send.
    let other = json!({"to": b.id, "body": "changed", "clientMsgId": "k1"});
    assert_eq!(ca.ack("sendPrivateMessage", other).await, first);
    let conv = first["message"]["conversationId"].clone();
    let by_id = json!({"conversationId": conv, "body": "x", "clientMsgId": "k1"});
    assert_eq!(ca.ack("sendMessage", by_id).await, first);
    assert_eq!(cb.event("message").await["message"]["body"], "once");
    cb.expect_none(QUIET, is_message).await;
    // The same key from the other member is that member's own send.
    let theirs = cb
        .ack(
            "sendMessage",
            json!({"conversationId": conv, "body": "mine", "clientMsgId": "k1"}),
        )
        .await;
    assert_eq!(theirs["message"]["seq"], 2);
    let h = ca.ack("getHistory", json!({"conversationId": conv})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

async fn five_hundred_fast_messages_arrive_dense_and_in_order_at_every_session(backend: Backend) {
    let Some(s) = TestServer::start_on(
        backend,
        &[
            ("CONFAB_RATE_PER_SEC", "10000"),
            ("CONFAB_RATE_BURST", "10000"),
        ],
    )
    .await
    else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let mut b2 = s.connect(&b).await;
    // Also a second sender racing into the same conversation.
    let first = a1
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "start"}))
        .await;
    let conv = first["message"]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut b3 = s.connect(&b).await;
    let racer = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..100 {
            let body = format!("b{i}");
            ids.push(
                b3.send_request("sendMessage", json!({"conversationId": conv, "body": body}))
                    .await,
            );
        }
        for id in ids {
            let f = b3.reply_to(&id).await;
            assert_eq!(f["type"], "ack", "{f}");
        }
        b3
    });
    let mut ids = Vec::new();
    for i in 0..499 {
        ids.push(
            a1.send_request(
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("a{i}")}),
            )
            .await,
        );
    }
    let mut last = 1;
    for id in ids {
        let f = a1.reply_to(&id).await;
        assert_eq!(f["type"], "ack", "{f}");
        let seq = f["content"]["message"]["seq"].as_u64().unwrap();
        assert!(seq > last, "acks of one sender are in seq order");
        last = seq;
    }
    racer.await.unwrap();
    let total = 600;
    for (name, c) in [("a2", &mut a2), ("b1", &mut b1), ("b2", &mut b2)] {
        for want in 1..=total {
            let ev = c.event("message").await;
            assert_eq!(
                ev["message"]["seq"], want,
                "{name} got seq {} for {want}",
                ev["message"]["seq"]
            );
        }
    }
}

async fn history_pages_backwards_and_forwards(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut conv = Value::Null;
    for i in 1..=7 {
        let m = ca
            .ack(
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("m{i}")}),
            )
            .await;
        conv = m["message"]["conversationId"].clone();
    }
    let newest = ca
        .ack("getHistory", json!({"conversationId": conv, "limit": 3}))
        .await;
    assert_eq!(
        (seqs(&newest), newest["hasMore"].clone()),
        (vec![5, 6, 7], json!(true))
    );
    let older = ca
        .ack(
            "getHistory",
            json!({"conversationId": conv, "limit": 3, "beforeSeq": 5}),
        )
        .await;
    assert_eq!(
        (seqs(&older), older["hasMore"].clone()),
        (vec![2, 3, 4], json!(true))
    );
    let oldest = ca
        .ack(
            "getHistory",
            json!({"conversationId": conv, "limit": 3, "beforeSeq": 2}),
        )
        .await;
    assert_eq!(
        (seqs(&oldest), oldest["hasMore"].clone()),
        (vec![1], json!(false))
    );
    let after = ca
        .ack(
            "getHistory",
            json!({"conversationId": conv, "limit": 4, "afterSeq": 2}),
        )
        .await;
    assert_eq!(
        (seqs(&after), after["hasMore"].clone()),
        (vec![3, 4, 5, 6], json!(true))
    );
    let tail = ca
        .ack("getHistory", json!({"conversationId": conv, "afterSeq": 6}))
        .await;
    assert_eq!(
        (seqs(&tail), tail["hasMore"].clone()),
        (vec![7], json!(false))
    );
    let window = ca
        .ack(
            "getHistory",
            json!({"conversationId": conv, "afterSeq": 2, "beforeSeq": 5}),
        )
        .await;
    assert_eq!(
        (seqs(&window), window["hasMore"].clone()),
        (vec![3, 4], json!(false))
    );
    let all = ca.ack("getHistory", json!({"conversationId": conv})).await;
    assert_eq!(seqs(&all), (1..=7).collect::<Vec<_>>());
    assert_eq!(all["messages"][0]["body"], "m1");
    let clamped = ca
        .ack("getHistory", json!({"conversationId": conv, "limit": 5000}))
        .await;
    assert_eq!(seqs(&clamped).len(), 7);
}

async fn messages_to_an_offline_user_wait_as_unread_and_come_back_with_after_seq(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut conv = Value::Null;
    for i in 1..=3 {
        let m = ca
            .ack(
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("m{i}")}),
            )
            .await;
        conv = m["message"]["conversationId"].clone();
    }
    let mut cb = s.connect(&b).await;
    let convs = cb.ack("getConversations", json!({})).await;
    let c = &convs["conversations"][0];
    assert_eq!(c["id"], conv);
    assert_eq!(
        (
            c["lastSeq"].clone(),
            c["lastReadSeq"].clone(),
            c["unread"].clone()
        ),
        (json!(3), json!(0), json!(3))
    );
    assert_eq!(c["lastMessage"]["body"], "m3");
    let missed = cb
        .ack("getHistory", json!({"conversationId": conv, "afterSeq": 0}))
        .await;
    let bodies: Vec<&str> = missed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);

    let marked = cb
        .ack("markRead", json!({"conversationId": conv, "seq": 2}))
        .await;
    assert_eq!(marked, json!({"conversationId": conv, "seq": 2}));
    let convs = cb.ack("getConversations", json!({})).await;
    assert_eq!(convs["conversations"][0]["unread"], 1);
    assert_eq!(convs["conversations"][0]["lastReadSeq"], 2);
}

async fn conversations_are_listed_most_recently_active_first(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    ca.ack("sendPrivateMessage", json!({"to": b.id, "body": "1"}))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    ca.ack("sendPrivateMessage", json!({"to": c.id, "body": "2"}))
        .await;
    let list = ca.ack("getConversations", json!({})).await;
    let first_members = list["conversations"][0]["members"].to_string();
    assert!(first_members.contains(&c.id), "{list}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    ca.ack("sendPrivateMessage", json!({"to": b.id, "body": "3"}))
        .await;
    let list = ca.ack("getConversations", json!({})).await;
    assert!(
        list["conversations"][0]["members"]
            .to_string()
            .contains(&b.id),
        "{list}"
    );
}

async fn mark_read_moves_forward_only_clamps_and_sends_receipts_to_other_sessions(
    backend: Backend,
) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let mut b2 = s.connect(&b).await;
    let mut conv = Value::Null;
    for i in 1..=4 {
        let m = ca
            .ack(
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("m{i}")}),
            )
            .await;
        conv = m["message"]["conversationId"].clone();
    }
    let ack = b1
        .ack("markRead", json!({"conversationId": conv, "seq": 3}))
        .await;
    assert_eq!(ack["seq"], 3);
    let r = ca.event("receipt").await;
    assert_eq!(r, json!({"conversationId": conv, "userId": b.id, "seq": 3}));
    assert_eq!(
        b2.event("receipt").await["seq"],
        3,
        "the reader's other session hears too"
    );
    b1.expect_none(QUIET, |f| f["type"] == "receipt").await;

    let back = b1
        .ack("markRead", json!({"conversationId": conv, "seq": 1}))
        .await;
    assert_eq!(back["seq"], 3, "never backwards");
    let beyond = b1
        .ack("markRead", json!({"conversationId": conv, "seq": 99}))
        .await;
    assert_eq!(beyond["seq"], 4, "clamped to lastSeq");
    assert_eq!(ca.event("receipt").await["seq"], 4);
    ca.expect_none(QUIET, |f| f["type"] == "receipt").await;
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let s = TestServer::start().await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let m = a1
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "hi"}))
        .await;
    let conv = m["message"]["conversationId"].clone();
    let ack = a1
        .ack("typing", json!({"conversationId": conv, "active": true}))
        .await;
    assert_eq!(ack, json!({}));
    let t = b1.event("typing").await;
    assert_eq!(
        t,
        json!({"conversationId": conv, "userId": a.id, "active": true})
    );
    a1.ack("typing", json!({"conversationId": conv, "active": false}))
        .await;
    assert_eq!(b1.event("typing").await["active"], false);
    a2.expect_none(QUIET, |f| f["type"] == "typing").await;
    a1.expect_none(QUIET, |f| f["type"] == "typing").await;
}

on_each_backend!(
    a_private_message_is_acked_to_the_sender_and_pushed_to_every_other_session,
    one_direct_conversation_per_pair_whoever_writes_first,
    a_user_may_message_themself,
    send_message_uses_a_conversation_id_and_checks_membership,
    a_retry_with_the_same_client_msg_id_acks_the_original_and_sends_no_event,
    five_hundred_fast_messages_arrive_dense_and_in_order_at_every_session,
    history_pages_backwards_and_forwards,
    messages_to_an_offline_user_wait_as_unread_and_come_back_with_after_seq,
    conversations_are_listed_most_recently_active_first,
    mark_read_moves_forward_only_clamps_and_sends_receipts_to_other_sessions,
);

/// A server whose send rate limit these tests never reach, with ann and
/// bob each connected once: ann's client, bob, and bob's client.
async fn ann_and_bob_without_rate_limit() -> (TestServer, Client, Account, Client) {
    let s = TestServer::start_with(&[
        ("CONFAB_RATE_PER_SEC", "10000"),
        ("CONFAB_RATE_BURST", "10000"),
    ])
    .await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let (ca, cb) = (s.connect(&a).await, s.connect(&b).await);
    (s, ca, b, cb)
}

/// A session that gets events faster than its write pace gets them a few
/// to a write; once they stop, its pace timer finds nothing to write and
/// it waits unpaced again: a lone event later goes out at once, not when
/// something else (the heartbeat, 30 s away) next wakes the session.
#[tokio::test]
async fn after_a_paced_run_of_events_a_lone_event_still_goes_out_at_once() {
    let (_s, mut ca, b, mut cb) = ann_and_bob_without_rate_limit().await;
    // One at a time, each after the last one's ack: events reach bob's
    // session one by one, more often than its writes' burst allows.
    for i in 1..=40 {
        ca.ack(
            "sendPrivateMessage",
            json!({"to": b.id, "body": format!("m{i}")}),
        )
        .await;
    }
    for want in 1..=40 {
        assert_eq!(cb.event("message").await["message"]["seq"], want);
    }
    // Long enough for the pace timer to ring on an empty mailbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ca.ack("sendPrivateMessage", json!({"to": b.id, "body": "lone"}))
        .await;
    let lone = cb.event("message").await;
    assert_eq!(lone["message"]["body"], "lone");
}

/// A client may keep many requests in flight: replies keep request order,
/// its messages keep their order, and a request behind sends sees them.
#[tokio::test]
async fn requests_in_flight_together_are_answered_in_order_and_see_the_sends_before_them() {
    let (_s, mut ca, b, mut cb) = ann_and_bob_without_rate_limit().await;
    let first = ca
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "m0"}))
        .await;
    let conv = first["message"]["conversationId"].clone();
    // Sends by user and by conversation, a bad one, a refused one, and a
    // history request in the middle, all written before any reply is read.
    let mut asked = Vec::new();
    for i in 1..=40 {
        let (kind, content) = match i % 10 {
            3 => ("sendPrivateMessage", json!({"to": b.id, "body": "  "})),
            5 => (
                "sendMessage",
                json!({"conversationId": "nowhere", "body": "x"}),
            ),
            7 => ("getHistory", json!({"conversationId": conv, "afterSeq": 0})),
            n if n % 2 == 0 => (
                "sendMessage",
                json!({"conversationId": conv, "body": format!("m{i}")}),
            ),
            _ => (
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("m{i}")}),
            ),
        };
        asked.push((i, ca.send_request(kind, content).await));
    }
    let mut last_seq = 1;
    for (i, id) in asked {
        let reply = ca.next_frame().await;
        assert_eq!(
            reply["id"],
            id.as_str(),
            "replies in request order: {reply}"
        );
        match i % 10 {
            3 => assert_eq!(reply["content"]["code"], "bad_request", "{reply}"),
            5 => assert_eq!(reply["content"]["code"], "not_found", "{reply}"),
            7 => {
                let seqs: Vec<u64> = reply["content"]["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["seq"].as_u64().unwrap())
                    .collect();
                assert_eq!(
                    seqs.last(),
                    Some(&last_seq),
                    "history sees every send before it"
                );
            }
            _ => {
                let message = &reply["content"]["message"];
                assert_eq!(message["seq"], last_seq + 1, "{reply}");
                assert_eq!(message["body"], format!("m{i}"));
                last_seq += 1;
            }
        }
    }
    for want in 1..=last_seq {
        let ev = cb.event("message").await;
        assert_eq!(ev["message"]["seq"], want);
    }
}
