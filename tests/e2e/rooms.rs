//! Rooms: creation, joining, invitations, leaving, listing, membership
//! rules for every kind of caller, and edits and deletes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Account, Backend, Client, TestServer, on_each_backend};

const QUIET: Duration = Duration::from_millis(300);
/// No rate limit to speak of, for tests that build big rooms.
const FAST: &[(&str, &str)] = &[
    ("CONFAB_RATE_PER_SEC", "100000"),
    ("CONFAB_RATE_BURST", "100000"),
];

fn member_event<'a>(
    room: &'a str,
    user: &'a Account,
    action: &'a str,
) -> impl Fn(&Value) -> bool + 'a {
    move |f| {
        f["type"] == "member"
            && f["content"]["conversationId"] == room
            && f["content"]["user"]["id"] == user.id
            && f["content"]["action"] == action
    }
}

async fn create(c: &mut Client, name: &str, visibility: &str) -> Value {
    c.ack(
        "createRoom",
        json!({"name": name, "visibility": visibility}),
    )
    .await["conversation"]
        .clone()
}

fn id(conv: &Value) -> String {
    conv["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_created_room_is_acked_to_the_creator_and_announced_to_their_other_sessions() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let room = create(&mut a1, "  Lobby ", "public").await;
    assert_eq!(room["kind"], "room");
    assert_eq!(room["name"], "Lobby");
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["memberCount"], 1);
    assert_eq!(room["members"], json!([{"id": a.id, "username": "ann"}]));
    assert_eq!(
        (
            room["lastSeq"].clone(),
            room["lastReadSeq"].clone(),
            room["unread"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert!(room["lastMessage"].is_null());
    let r = id(&room);
    a2.wait_for(member_event(&r, &a, "joined")).await;
    a1.expect_none(QUIET, |f| f["type"] == "member").await;
    let private = create(&mut a1, "Secret", "private").await;
    assert_eq!(private["visibility"], "private");
    // visibility is required: the contract marks it with no `?`.
    for content in [
        json!({"name": "Plain"}),
        json!({"name": "Plain", "visibility": null}),
    ] {
        assert_eq!(a1.error_code("createRoom", content).await, "bad_request");
    }
    assert_eq!(
        a1.error_code("createRoom", json!({"name": "x".repeat(65)}))
            .await,
        "bad_request"
    );
    assert_eq!(
        a1.error_code("createRoom", json!({"name": "ok", "visibility": "hidden"}))
            .await,
        "bad_request"
    );
}

#[tokio::test]
async fn anyone_joins_a_public_room_and_every_member_hears_of_it() {
    let s = TestServer::start().await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let mut b2 = s.connect(&b).await;
    let r = id(&create(&mut ca, "Lobby", "public").await);
    let id_sent = b1
        .send_request("joinRoom", json!({"conversationId": r}))
        .await;
    let ack = b1.next_frame().await;
    assert_eq!(
        ack["id"],
        id_sent.as_str(),
        "the ack comes before the event: {ack}"
    );
    assert_eq!(ack["content"]["conversation"]["memberCount"], 2);
    b1.wait_for(member_event(&r, &b, "joined")).await;
    b2.wait_for(member_event(&r, &b, "joined")).await;
    ca.wait_for(member_event(&r, &b, "joined")).await;
    // Joining again answers the same and announces nothing.
    let again = b1.ack("joinRoom", json!({"conversationId": r})).await;
    assert_eq!(again["conversation"]["memberCount"], 2);
    ca.expect_none(QUIET, |f| f["type"] == "member").await;
}

async fn a_private_room_is_entered_only_by_invitation(backend: Backend) {
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
    let r = id(&create(&mut ca, "Secret", "private").await);
    assert_eq!(
        cb.error_code("joinRoom", json!({"conversationId": r}))
            .await,
        "forbidden"
    );
    let invited = ca
        .ack("inviteToRoom", json!({"conversationId": r, "userId": b.id}))
        .await;
    assert_eq!(invited["conversation"]["memberCount"], 2);
    cb.wait_for(member_event(&r, &b, "invited")).await;
    ca.wait_for(member_event(&r, &b, "invited")).await;
    // The invited member may invite others in turn, and they all hear of it.
    cb.ack("inviteToRoom", json!({"conversationId": r, "userId": c.id}))
        .await;
    for conn in [&mut ca, &mut cb, &mut cc] {
        conn.wait_for(member_event(&r, &c, "invited")).await;
    }
    // Inviting a member again changes nothing.
    ca.ack("inviteToRoom", json!({"conversationId": r, "userId": c.id}))
        .await;
    cc.expect_none(QUIET, |f| f["type"] == "member").await;
    let ghost = json!({"conversationId": r, "userId": "no-such-user"});
    assert_eq!(ca.error_code("inviteToRoom", ghost).await, "not_found");
    let m = cc
        .ack(
            "sendMessage",
            json!({"conversationId": r, "body": "thanks"}),
        )
        .await;
    assert_eq!(m["message"]["seq"], 1);
}

#[tokio::test]
async fn strangers_and_former_members_are_forbidden_everything_in_a_private_room() {
    let s = TestServer::start().await;
    let (a, b, z) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("zed").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let mut cz = s.connect(&z).await;
    let r = id(&create(&mut ca, "Secret", "private").await);
    ca.ack("inviteToRoom", json!({"conversationId": r, "userId": b.id}))
        .await;
    let m = ca
        .ack("sendMessage", json!({"conversationId": r, "body": "hi"}))
        .await["message"]
        .clone();
    cb.ack("leaveRoom", json!({"conversationId": r})).await;
    for (who, conn) in [("stranger", &mut cz), ("former member", &mut cb)] {
        let attempts = [
            ("sendMessage", json!({"conversationId": r, "body": "x"})),
            ("getHistory", json!({"conversationId": r})),
            ("markRead", json!({"conversationId": r, "seq": 1})),
            ("typing", json!({"conversationId": r, "active": true})),
            ("joinRoom", json!({"conversationId": r})),
            ("inviteToRoom", json!({"conversationId": r, "userId": z.id})),
            ("leaveRoom", json!({"conversationId": r})),
            (
                "editMessage",
                json!({"conversationId": r, "messageId": m["id"], "body": "x"}),
            ),
            (
                "deleteMessage",
                json!({"conversationId": r, "messageId": m["id"]}),
            ),
        ];
        for (kind, content) in attempts {
            assert_eq!(
                conn.error_code(kind, content).await,
                "forbidden",
                "{who}: {kind}"
            );
        }
    }
    for (kind, content) in [
        (
            "sendMessage",
            json!({"conversationId": "nope", "body": "x"}),
        ),
        ("joinRoom", json!({"conversationId": "nope"})),
        (
            "inviteToRoom",
            json!({"conversationId": "nope", "userId": b.id}),
        ),
        ("leaveRoom", json!({"conversationId": "nope"})),
        (
            "editMessage",
            json!({"conversationId": "nope", "messageId": m["id"], "body": "x"}),
        ),
        (
            "deleteMessage",
            json!({"conversationId": r, "messageId": "nope"}),
        ),
    ] {
        assert_eq!(ca.error_code(kind, content).await, "not_found", "{kind}");
    }
    let convs = cz.ack("getConversations", json!({})).await;
    assert_eq!(convs["conversations"], json!([]));
}

async fn a_member_who_left_gets_no_further_events_and_cannot_read_new_messages(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut b1 = s.connect(&b).await;
    let mut b2 = s.connect(&b).await;
    let r = id(&create(&mut ca, "Lobby", "public").await);
    b1.ack("joinRoom", json!({"conversationId": r})).await;
    ca.ack(
        "sendMessage",
        json!({"conversationId": r, "body": "before"}),
    )
    .await;
    b2.wait_for(|f| f["type"] == "message").await;
    b1.wait_for(|f| f["type"] == "message").await;
    let left = b1.ack("leaveRoom", json!({"conversationId": r})).await;
    assert_eq!(left, json!({}));
    ca.wait_for(member_event(&r, &b, "left")).await;
    b1.wait_for(member_event(&r, &b, "left")).await;
    b2.wait_for(member_event(&r, &b, "left")).await;
    ca.ack("sendMessage", json!({"conversationId": r, "body": "after"}))
        .await;
    ca.ack("typing", json!({"conversationId": r, "active": true}))
        .await;
    for c in [&mut b1, &mut b2] {
        c.expect_none(QUIET, |f| {
            ["message", "typing"].contains(&f["type"].as_str().unwrap())
        })
        .await;
    }
    assert_eq!(
        b1.error_code("getHistory", json!({"conversationId": r, "afterSeq": 1}))
            .await,
        "forbidden"
    );
    let convs = b1.ack("getConversations", json!({})).await;
    assert_eq!(convs["conversations"], json!([]));
    // A public room can be joined again; the history is all there.
    b1.ack("joinRoom", json!({"conversationId": r})).await;
    let h = b1.ack("getHistory", json!({"conversationId": r})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

async fn rooms_are_listed_by_prefix_public_ones_to_all_private_ones_to_members(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let lobby = id(&create(&mut ca, "Lobby", "public").await);
    create(&mut ca, "lounge", "public").await;
    let secret = id(&create(&mut ca, "Locked", "private").await);
    create(&mut ca, "Other", "public").await;
    ca.ack(
        "sendMessage",
        json!({"conversationId": lobby, "body": "hello"}),
    )
    .await;

    let names = |rooms: &Value| -> Vec<String> {
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mine = ca.ack("listRooms", json!({"prefix": "LO"})).await;
    assert_eq!(names(&mine), ["Lobby", "Locked", "lounge"]);
    let theirs = cb.ack("listRooms", json!({"prefix": "lo"})).await;
    assert_eq!(names(&theirs), ["Lobby", "lounge"]);
    let lobby_for_b = &theirs["rooms"][0];
    assert_eq!(lobby_for_b["lastSeq"], 1);
    assert_eq!(lobby_for_b["lastReadSeq"], 0);
    assert!(
        lobby_for_b["lastMessage"].is_null(),
        "non-members do not see the last message"
    );
    let all = cb.ack("listRooms", json!({})).await;
    assert_eq!(names(&all), ["Lobby", "lounge", "Other"]);
    let one = cb.ack("listRooms", json!({"limit": 1})).await;
    assert_eq!(names(&one), ["Lobby"]);
    assert_eq!(
        cb.error_code("listRooms", json!({"limit": 0})).await,
        "bad_request"
    );
    ca.ack(
        "inviteToRoom",
        json!({"conversationId": secret, "userId": b.id}),
    )
    .await;
    let now = cb.ack("listRooms", json!({"prefix": "loc"})).await;
    assert_eq!(names(&now), ["Locked"]);
}

#[tokio::test]
async fn direct_conversations_cannot_be_joined_invited_to_or_left() {
    let s = TestServer::start().await;
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cc = s.connect(&c).await;
    let m = ca
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "hi"}))
        .await;
    let conv = m["message"]["conversationId"].clone();
    assert_eq!(
        ca.error_code(
            "inviteToRoom",
            json!({"conversationId": conv, "userId": c.id})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        ca.error_code("leaveRoom", json!({"conversationId": conv}))
            .await,
        "forbidden"
    );
    assert_eq!(
        cc.error_code("joinRoom", json!({"conversationId": conv}))
            .await,
        "forbidden"
    );
}

#[tokio::test]
async fn a_room_carries_history_receipts_typing_and_unread_counts_like_a_direct_conversation() {
    let s = TestServer::start().await;
    let (a, b, c) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cid").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let r = id(&create(&mut ca, "Team", "public").await);
    cb.ack("joinRoom", json!({"conversationId": r})).await;
    {
        let mut cc = s.connect(&c).await;
        cc.ack("joinRoom", json!({"conversationId": r})).await;
        cc.close().await;
    }
    for i in 1..=3 {
        ca.ack(
            "sendMessage",
            json!({"conversationId": r, "body": format!("m{i}")}),
        )
        .await;
    }
    for want in 1..=3 {
        assert_eq!(cb.event("message").await["message"]["seq"], want);
    }
    cb.ack("markRead", json!({"conversationId": r, "seq": 2}))
        .await;
    assert_eq!(
        ca.event("receipt").await,
        json!({"conversationId": r, "userId": b.id, "seq": 2})
    );
    cb.ack("typing", json!({"conversationId": r, "active": true}))
        .await;
    assert_eq!(ca.event("typing").await["userId"], b.id);
    let mut cc = s.connect(&c).await;
    let convs = cc.ack("getConversations", json!({})).await;
    let room = &convs["conversations"][0];
    assert_eq!(
        (room["unread"].clone(), room["memberCount"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(room["lastMessage"]["body"], "m3");
    let h = cc
        .ack("getHistory", json!({"conversationId": r, "afterSeq": 1}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

async fn only_the_sender_edits_and_everyone_else_gets_message_updated(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut a1 = s.connect(&a).await;
    let mut a2 = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let r = id(&create(&mut a1, "Team", "public").await);
    cb.ack("joinRoom", json!({"conversationId": r})).await;
    let m = a1
        .ack("sendMessage", json!({"conversationId": r, "body": "tpyo"}))
        .await["message"]
        .clone();
    let edit = json!({"conversationId": r, "messageId": m["id"], "body": "typo"});
    assert_eq!(
        cb.error_code("editMessage", edit.clone()).await,
        "forbidden"
    );
    let edited = a1.ack("editMessage", edit).await["message"].clone();
    assert_eq!(edited["body"], "typo");
    assert_eq!(edited["seq"], m["seq"]);
    assert!(edited["editedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(edited["createdAt"], m["createdAt"]);
    for c in [&mut a2, &mut cb] {
        assert_eq!(c.event("messageUpdated").await["message"], edited);
    }
    a1.expect_none(QUIET, |f| f["type"] == "messageUpdated")
        .await;
    let bad = json!({"conversationId": r, "messageId": m["id"], "body": "  "});
    assert_eq!(a1.error_code("editMessage", bad).await, "bad_request");
    let h = cb.ack("getHistory", json!({"conversationId": r})).await;
    assert_eq!(h["messages"][0], edited);
}

async fn a_deleted_message_keeps_its_seq_with_an_empty_body_everywhere(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let m1 = ca
        .ack("sendPrivateMessage", json!({"to": b.id, "body": "oops"}))
        .await["message"]
        .clone();
    let conv = m1["conversationId"].clone();
    ca.ack(
        "sendMessage",
        json!({"conversationId": conv, "body": "fine"}),
    )
    .await;
    let del = json!({"conversationId": conv, "messageId": m1["id"]});
    assert_eq!(
        cb.error_code("deleteMessage", del.clone()).await,
        "forbidden"
    );
    let deleted = ca.ack("deleteMessage", del.clone()).await["message"].clone();
    assert_eq!(
        (
            deleted["deleted"].clone(),
            deleted["body"].clone(),
            deleted["seq"].clone()
        ),
        (json!(true), json!(""), json!(1))
    );
    assert_eq!(cb.event("messageUpdated").await["message"], deleted);
    // Deleting again answers the same and sends nothing.
    assert_eq!(ca.ack("deleteMessage", del).await["message"], deleted);
    cb.expect_none(QUIET, |f| f["type"] == "messageUpdated")
        .await;
    let edit = json!({"conversationId": conv, "messageId": m1["id"], "body": "revive"});
    assert_eq!(ca.error_code("editMessage", edit).await, "bad_request");
    let h = cb.ack("getHistory", json!({"conversationId": conv})).await;
    assert_eq!(h["messages"][0], deleted);
    assert_eq!(h["messages"][1]["body"], "fine");
}

#[tokio::test]
async fn a_big_room_lists_100_members_and_counts_them_all() {
    let s = TestServer::start_with(FAST).await;
    let owner = s.register("owner").await;
    let mut co = s.connect(&owner).await;
    let r = id(&create(&mut co, "Big", "private").await);
    for i in 0..130 {
        let u = s.register(&format!("user{i:03}")).await;
        co.ack("inviteToRoom", json!({"conversationId": r, "userId": u.id}))
            .await;
    }
    let convs = co.ack("getConversations", json!({})).await;
    let room = &convs["conversations"][0];
    assert_eq!(room["memberCount"], 131);
    let members = room["members"].as_array().unwrap();
    assert_eq!(members.len(), 100);
    assert_eq!(members[0]["id"], owner.id, "join order: the owner first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_in_a_2000_member_room_reaches_every_member_session_exactly_once() {
    const MEMBERS: usize = 2000;
    let started = std::time::Instant::now();
    let mut env = FAST.to_vec();
    // Connecting 2,000 contacts means ~2 million presence events; the owner
    // reads them only at the end, so neither its queue, nor its stall
    // sweep, nor its heartbeat may cut it off meanwhile.
    env.extend([
        ("CONFAB_OUTBOUND_QUEUE", "65535"),
        ("CONFAB_SLOW_CONSUMER_SECS", "255"),
        ("CONFAB_HEARTBEAT_SECS", "3600"),
        // 2,000 sessions from one address: past its connection cap.
        ("CONFAB_MAX_CONNECTIONS_PER_ADDRESS", "100000"),
    ]);
    let s = TestServer::start_with(&env).await;
    let owner = s.register("owner").await;
    let mut co = s.connect(&owner).await;
    let r = id(&create(&mut co, "Everyone", "private").await);
    let mut accounts = Vec::new();
    for i in 1..MEMBERS {
        let u = s.register(&format!("member{i:04}")).await;
        let ack = co
            .request("inviteToRoom", json!({"conversationId": r, "userId": u.id}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        accounts.push(u);
    }
    eprintln!("{MEMBERS} members in {:?}", started.elapsed());
    // Every member's session counts the messages it sees, reading all along.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for u in &accounts {
        let mut c = s.connect(u).await;
        let done = done_tx.clone();
        tokio::spawn(async move {
            let seen = c
                .count_message_events(Duration::from_secs(300), QUIET)
                .await;
            let _ = done.send(seen);
        });
    }
    drop(done_tx);
    eprintln!("{MEMBERS} sessions in {:?}", started.elapsed());
    let m = co
        .ack(
            "sendMessage",
            json!({"conversationId": r, "body": "hello, all"}),
        )
        .await;
    assert_eq!(m["message"]["seq"], 1);
    let mut counts = Vec::new();
    while let Some(n) = done_rx.recv().await {
        counts.push(n);
    }
    eprintln!("delivered in {:?}", started.elapsed());
    assert_eq!(counts.len(), MEMBERS - 1);
    let wrong: Vec<_> = counts.iter().filter(|&&n| n != 1).collect();
    assert!(
        wrong.is_empty(),
        "each member saw the message exactly once: {wrong:?}"
    );
    co.expect_none(QUIET, |f| f["type"] == "message").await;
}

on_each_backend!(
    a_private_room_is_entered_only_by_invitation,
    a_member_who_left_gets_no_further_events_and_cannot_read_new_messages,
    rooms_are_listed_by_prefix_public_ones_to_all_private_ones_to_members,
    only_the_sender_edits_and_everyone_else_gets_message_updated,
    a_deleted_message_keeps_its_seq_with_an_empty_body_everywhere,
);
