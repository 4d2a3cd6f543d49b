//! The SQLite store against a temporary database file.
use super::*;

use std::collections::{HashMap, HashSet};

use crate::domain::MessageBody;
use tempfile::TempDir;
use tokio::sync::Barrier;

// ---------------------------------------------------------------- helpers

/// A point in time a little after a fixed origin, so tests read as offsets.
fn ts(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + offset_ms)
}

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("a valid username")
}

fn hash(tag: &str) -> PasswordHash {
    PasswordHash(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${tag}"))
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("t.db")).expect("the store opens")
}

fn fresh() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = open(&dir);
    (dir, store)
}

async fn register(store: &SqliteStore, raw: &str) -> User {
    store
        .create_user(&name(raw), &hash(raw), ts(0))
        .await
        .expect("the user is created")
}

async fn direct(store: &SqliteStore, a: &User, b: &User) -> ConversationId {
    store
        .direct_conversation(&a.id, &b.id, ts(0))
        .await
        .expect("the direct conversation")
}

fn new_message(
    conversation: &ConversationId,
    sender: &User,
    body: &str,
    client_msg_id: Option<&str>,
    at: Timestamp,
) -> NewMessage {
    NewMessage {
        conversation_id: conversation.clone(),
        sender: sender.clone(),
        body: MessageBody::parse(body).expect("a valid body"),
        client_msg_id: client_msg_id.map(|c| ClientMsgId::parse(c).expect("a valid clientMsgId")),
        created_at: at,
    }
}

fn stored(outcome: AppendOutcome) -> (Message, Vec<UserId>) {
    match outcome {
        AppendOutcome::Stored { message, members } => (message, members),
        AppendOutcome::Duplicate(original) => {
            panic!("expected Stored, got a duplicate of {original:?}")
        }
    }
}

/// Appends a message without a clientMsgId at `at` and returns it as stored.
async fn send_at(
    store: &SqliteStore,
    conversation: &ConversationId,
    sender: &User,
    body: &str,
    at: Timestamp,
) -> Message {
    let outcome = store
        .append(new_message(conversation, sender, body, None, at))
        .await
        .expect("the message is appended");
    stored(outcome).0
}

async fn send(
    store: &SqliteStore,
    conversation: &ConversationId,
    sender: &User,
    body: &str,
) -> Message {
    send_at(store, conversation, sender, body, ts(1_000)).await
}

/// Appends `n` messages "m1".."mn".
async fn send_many(store: &SqliteStore, conversation: &ConversationId, sender: &User, n: u64) {
    for i in 1..=n {
        send(store, conversation, sender, &format!("m{i}")).await;
    }
}

fn query(before_seq: Option<u64>, after_seq: Option<u64>, limit: u32) -> HistoryQuery {
    HistoryQuery {
        before_seq,
        after_seq,
        limit,
    }
}

async fn page(
    store: &SqliteStore,
    conversation: &ConversationId,
    before_seq: Option<u64>,
    after_seq: Option<u64>,
    limit: u32,
) -> (Vec<u64>, bool) {
    let page = store
        .history(conversation, query(before_seq, after_seq, limit))
        .await
        .expect("a history page");
    (page.messages.iter().map(|m| m.seq).collect(), page.has_more)
}

async fn membership(
    store: &SqliteStore,
    conversation: &ConversationId,
    user: &User,
) -> (Conversation, u64) {
    match store.access(conversation, &user.id).await.expect("access") {
        Access::Member(conversation, membership) => (conversation, membership.last_read_seq),
        other => panic!("expected a member, got {other:?}"),
    }
}

async fn last_seq(store: &SqliteStore, conversation: &ConversationId, user: &User) -> u64 {
    membership(store, conversation, user).await.0.last_seq
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn ids(users: &[&User]) -> Vec<UserId> {
    sorted(users.iter().map(|u| u.id.clone()).collect())
}

/// Seeds a public room straight into the database, members joining in the
/// order given at the given times: the ports cannot create rooms, and
/// direct conversations never have more than two members.
async fn seed_room(
    store: &SqliteStore,
    room: &str,
    members: &[(&User, Timestamp)],
) -> ConversationId {
    let inner = store.inner.clone();
    let room = room.to_owned();
    let members: Vec<(String, i64)> = members
        .iter()
        .map(|(u, at)| (u.id.as_str().to_owned(), at.millis()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut conn = inner.writer.lock().expect("the writer");
        conn.immediate_transaction(|conn| {
            let id = uuid::Uuid::now_v7().to_string();
            let created = members[0].1;
            diesel::insert_into(conversations::table)
                .values((
                    conversations::id.eq(&id),
                    conversations::kind.eq("room"),
                    conversations::name.eq(&room),
                    conversations::name_key.eq(room.to_lowercase()),
                    conversations::visibility.eq("public"),
                    conversations::created_by.eq(&members[0].0),
                    conversations::created_at.eq(created),
                    conversations::last_activity.eq(created),
                ))
                .execute(conn)?;
            for (user, joined) in &members {
                add_member(conn, &id, user, 0, *joined)?;
            }
            QueryResult::Ok(ConversationId::new(id))
        })
    })
    .await
    .expect("the seeding task")
    .expect("the room is seeded")
}

// ---------------------------------------------------------------- users

#[tokio::test(flavor = "multi_thread")]
async fn a_created_user_can_be_found_by_name_and_by_id() {
    let (_dir, store) = fresh();
    let alice = store
        .create_user(&name("Alice"), &hash("alice"), ts(0))
        .await
        .unwrap();
    assert_eq!(alice.username.as_str(), "Alice");
    assert!(!alice.id.as_str().is_empty());

    let (found, found_hash) = store.credentials(&name("Alice")).await.unwrap().unwrap();
    assert_eq!(found, alice);
    assert_eq!(found_hash, hash("alice"));
    assert_eq!(store.user(&alice.id).await.unwrap(), Some(alice));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_user_gets_a_distinct_id() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    assert_ne!(alice.id, bob.id);
    assert_eq!(store.user(&bob.id).await.unwrap(), Some(bob));
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_looked_up_without_regard_to_case_and_keep_the_registered_name() {
    let (_dir, store) = fresh();
    let alice = register(&store, "Alice").await;
    for typed in ["alice", "ALICE", "aLiCe"] {
        let (found, found_hash) = store.credentials(&name(typed)).await.unwrap().unwrap();
        assert_eq!(found, alice, "{typed}");
        assert_eq!(found.username.as_str(), "Alice");
        assert_eq!(found_hash, hash("Alice"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_of_an_unknown_name_are_none() {
    let (_dir, store) = fresh();
    register(&store, "alice").await;
    assert_eq!(store.credentials(&name("alicia")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_taken_in_another_case_is_a_duplicate() {
    let (_dir, store) = fresh();
    let alice = register(&store, "Alice").await;
    for again in ["Alice", "alice", "ALICE"] {
        let err = store
            .create_user(&name(again), &hash("other"), ts(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CreateUserError::Duplicate),
            "{again}: {err:?}"
        );
    }
    // The original is untouched.
    let (found, found_hash) = store.credentials(&name("alice")).await.unwrap().unwrap();
    assert_eq!(found, alice);
    assert_eq!(found_hash, hash("Alice"));
    assert_eq!(
        store.users_by_prefix("alice", 10).await.unwrap(),
        vec![alice]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_registrations_of_one_name_exactly_one_succeeds() {
    let (_dir, store) = fresh();
    let spellings = ["racer", "Racer", "RACER", "rAcEr"];
    let tasks = 16;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let spelling = spellings[i % spellings.len()];
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .create_user(&name(spelling), &hash(&i.to_string()), ts(0))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut duplicates = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Ok(user) => created.push(user),
            Err(CreateUserError::Duplicate) => duplicates += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(duplicates, tasks - 1);
    let (found, _) = store.credentials(&name("racer")).await.unwrap().unwrap();
    assert_eq!(found, created[0]);
    assert_eq!(store.users_by_prefix("racer", 100).await.unwrap(), created);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_id_is_none() {
    let (_dir, store) = fresh();
    register(&store, "alice").await;
    assert_eq!(
        store.user(&UserId::new("no-such-user")).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_by_prefix_ignore_case_and_are_ordered_by_name() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let albert = register(&store, "ALBERT").await;
    let alfred = register(&store, "Alfred").await;
    let alan = register(&store, "alan_x").await;
    register(&store, "bob").await;
    register(&store, "xal").await;

    let expected = vec![alan.clone(), albert.clone(), alfred.clone(), alice.clone()];
    assert_eq!(store.users_by_prefix("al", 10).await.unwrap(), expected);
    assert_eq!(store.users_by_prefix("AL", 10).await.unwrap(), expected);
    assert_eq!(
        store.users_by_prefix("aLf", 10).await.unwrap(),
        vec![alfred]
    );
    assert_eq!(
        store.users_by_prefix("alice", 10).await.unwrap(),
        vec![alice]
    );
    assert_eq!(store.users_by_prefix("zed", 10).await.unwrap(), vec![]);
    assert_eq!(store.users_by_prefix("alicea", 10).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_by_prefix_honour_the_limit() {
    let (_dir, store) = fresh();
    let a1 = register(&store, "user1").await;
    let a2 = register(&store, "User2").await;
    register(&store, "user3").await;
    register(&store, "USER4").await;
    assert_eq!(
        store.users_by_prefix("user", 2).await.unwrap(),
        vec![a1.clone(), a2]
    );
    assert_eq!(store.users_by_prefix("user", 1).await.unwrap(), vec![a1]);
    assert_eq!(store.users_by_prefix("user", 0).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_prefix_lists_everyone() {
    let (_dir, store) = fresh();
    let carol = register(&store, "carol").await;
    let bob = register(&store, "Bob").await;
    let alice = register(&store, "alice").await;
    let dots = register(&store, "...").await;
    let zed = register(&store, "Zed-9").await;
    assert_eq!(
        store.users_by_prefix("", 100).await.unwrap(),
        vec![dots, alice.clone(), bob.clone(), carol, zed]
    );
    assert_eq!(store.users_by_prefix("", 2).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_last_seen_skips_unknown_ids_and_returns_the_stored_time() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let unknown = UserId::new("no-such-user");

    let wanted = [alice.id.clone(), unknown.clone(), bob.id.clone()];
    let seen: HashMap<User, Option<Timestamp>> = store
        .users_last_seen(&wanted)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        seen,
        HashMap::from([(alice.clone(), None), (bob.clone(), None)])
    );

    store.set_last_seen(&alice.id, ts(42)).await.unwrap();
    let seen = store.users_last_seen(&wanted).await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let seen: HashMap<User, Option<Timestamp>> = seen.into_iter().collect();
    assert_eq!(
        seen,
        HashMap::from([(alice.clone(), Some(ts(42))), (bob, None)])
    );

    // A later close replaces the time.
    store.set_last_seen(&alice.id, ts(99)).await.unwrap();
    assert_eq!(
        store
            .users_last_seen(std::slice::from_ref(&alice.id))
            .await
            .unwrap(),
        vec![(alice, Some(ts(99)))]
    );
    assert_eq!(store.users_last_seen(&[unknown]).await.unwrap(), vec![]);
    assert_eq!(store.users_last_seen(&[]).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_last_seen_answers_for_more_ids_than_one_query_may_bind() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let mut wanted: Vec<UserId> = (0..1_200)
        .map(|i| UserId::new(format!("ghost-{i}")))
        .collect();
    wanted.insert(700, alice.id.clone());
    assert_eq!(
        store.users_last_seen(&wanted).await.unwrap(),
        vec![(alice, None)]
    );
}

// ---------------------------------------------------------------- ping

#[tokio::test(flavor = "multi_thread")]
async fn ping_succeeds_on_an_open_store() {
    let (_dir, store) = fresh();
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_creates_missing_parent_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a/b/t.db")).unwrap();
    store.ping().await.unwrap();
    assert!(dir.path().join("a/b/t.db").exists());
}

// ---------------------------------------------------------------- direct conversations

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_conversation_is_the_same_whichever_side_asks() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = store
        .direct_conversation(&alice.id, &bob.id, ts(0))
        .await
        .unwrap();
    let ba = store
        .direct_conversation(&bob.id, &alice.id, ts(5))
        .await
        .unwrap();
    let again = store
        .direct_conversation(&alice.id, &bob.id, ts(9))
        .await
        .unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab, again);

    assert_eq!(
        sorted(store.member_ids(&ab).await.unwrap()),
        ids(&[&alice, &bob])
    );
    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].conversation.id, ab);
    assert_eq!(summaries[0].conversation.kind, ConversationKind::Direct);
    assert_eq!(summaries[0].member_count, 2);
    assert_eq!(store.conversations_of(&bob.id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn different_pairs_get_different_direct_conversations() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let ab = direct(&store, &alice, &bob).await;
    let ac = direct(&store, &alice, &carol).await;
    let bc = direct(&store, &bob, &carol).await;
    let aa = direct(&store, &alice, &alice).await;
    let all: HashSet<_> = [&ab, &ac, &bc, &aa].into_iter().collect();
    assert_eq!(all.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_with_oneself_has_one_member() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    assert_eq!(direct(&store, &alice, &alice).await, own);
    assert_eq!(
        store.member_ids(&own).await.unwrap(),
        vec![alice.id.clone()]
    );
    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].member_count, 1);
    assert_eq!(summaries[0].members, vec![alice.clone()]);
    let (message, members) = stored(
        store
            .append(new_message(&own, &alice, "note to self", None, ts(1)))
            .await
            .unwrap(),
    );
    assert_eq!(message.seq, 1);
    assert_eq!(members, vec![alice.id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_one_pair_get_one_conversation() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let tasks = 24;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let (a, b) = if i % 2 == 0 {
                (alice.id.clone(), bob.id.clone())
            } else {
                (bob.id.clone(), alice.id.clone())
            };
            tokio::spawn(async move {
                barrier.wait().await;
                store.direct_conversation(&a, &b, ts(i as i64)).await
            })
        })
        .collect();
    let mut got = HashSet::new();
    for handle in handles {
        got.insert(handle.await.unwrap().unwrap());
    }
    assert_eq!(got.len(), 1, "{got:?}");
    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].member_count, 2);
    assert_eq!(store.conversations_of(&bob.id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn member_ids_lists_every_member() {
    let (_dir, store) = fresh();
    let users = [
        register(&store, "alice").await,
        register(&store, "bob").await,
        register(&store, "carol").await,
    ];
    let room = seed_room(
        &store,
        "Lobby",
        &[(&users[0], ts(0)), (&users[1], ts(1)), (&users[2], ts(2))],
    )
    .await;
    assert_eq!(
        sorted(store.member_ids(&room).await.unwrap()),
        ids(&[&users[0], &users[1], &users[2]])
    );
    assert_eq!(
        store
            .member_ids(&ConversationId::new("no-such-conversation"))
            .await
            .unwrap(),
        vec![]
    );
}

// ---------------------------------------------------------------- access

#[tokio::test(flavor = "multi_thread")]
async fn access_to_an_unknown_conversation_is_no_such_conversation() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    assert_eq!(
        store
            .access(&ConversationId::new("no-such-conversation"), &alice.id)
            .await
            .unwrap(),
        Access::NoSuchConversation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_of_an_outsider_is_not_member_with_the_conversation() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let eve = register(&store, "eve").await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &ab, &alice, 2).await;
    assert_eq!(
        store.access(&ab, &eve.id).await.unwrap(),
        Access::NotMember(Conversation {
            id: ab.clone(),
            kind: ConversationKind::Direct,
            last_seq: 2,
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_of_a_member_carries_the_conversation_and_the_read_marker() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let expected = |last_seq, last_read_seq| {
        Access::Member(
            Conversation {
                id: ab.clone(),
                kind: ConversationKind::Direct,
                last_seq,
            },
            Membership { last_read_seq },
        )
    };
    assert_eq!(store.access(&ab, &alice.id).await.unwrap(), expected(0, 0));
    send_many(&store, &ab, &bob, 3).await;
    assert!(store.advance_read_marker(&ab, &alice.id, 2).await.unwrap());
    assert_eq!(store.access(&ab, &alice.id).await.unwrap(), expected(3, 2));
    assert_eq!(store.access(&ab, &bob.id).await.unwrap(), expected(3, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn access_to_a_room_carries_its_name_and_visibility() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0))]).await;
    let lobby = Conversation {
        id: room.clone(),
        kind: ConversationKind::Room {
            name: "Lobby".into(),
            visibility: Visibility::Public,
        },
        last_seq: 0,
    };
    assert_eq!(
        store.access(&room, &alice.id).await.unwrap(),
        Access::Member(lobby.clone(), Membership { last_read_seq: 0 })
    );
    assert_eq!(
        store.access(&room, &bob.id).await.unwrap(),
        Access::NotMember(lobby)
    );
}

// ---------------------------------------------------------------- append

#[tokio::test(flavor = "multi_thread")]
async fn appended_messages_get_dense_seqs_from_1() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let seqs = [
        send(&store, &ab, &alice, "one").await.seq,
        send(&store, &ab, &bob, "two").await.seq,
        send(&store, &ab, &alice, "three").await.seq,
    ];
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(last_seq(&store, &ab, &alice).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_conversation_counts_its_own_seqs() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let ab = direct(&store, &alice, &bob).await;
    let ac = direct(&store, &alice, &carol).await;
    assert_eq!(send(&store, &ab, &alice, "x").await.seq, 1);
    assert_eq!(send(&store, &ab, &alice, "y").await.seq, 2);
    assert_eq!(send(&store, &ac, &alice, "z").await.seq, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_appended_message_round_trips_every_field() {
    let (_dir, store) = fresh();
    let alice = register(&store, "Alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let body = "  héllo, 世界 😀\nsecond line ";
    let (message, members) = stored(
        store
            .append(new_message(&ab, &alice, body, Some("client-1"), ts(1_234)))
            .await
            .unwrap(),
    );
    assert!(!message.id.as_str().is_empty());
    assert_eq!(message.conversation_id, ab);
    assert_eq!(message.seq, 1);
    assert_eq!(message.sender_id, alice.id);
    assert_eq!(message.sender.as_str(), "Alice");
    assert_eq!(message.body, body);
    assert_eq!(
        message.client_msg_id,
        Some(ClientMsgId::parse("client-1").unwrap())
    );
    assert_eq!(message.created_at, ts(1_234));
    assert_eq!(message.edited_at, None);
    assert!(!message.deleted);
    assert_eq!(sorted(members), ids(&[&alice, &bob]));

    // What was returned is exactly what is read back.
    let page = store.history(&ab, query(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![message]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_without_client_msg_id_round_trips_as_none() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &own, &alice, "plain").await;
    assert_eq!(message.client_msg_id, None);
    let page = store.history(&own, query(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![message]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_message_lists_every_member_of_a_room() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let outsider = register(&store, "dave").await;
    let room = seed_room(
        &store,
        "Lobby",
        &[(&alice, ts(0)), (&bob, ts(1)), (&carol, ts(2))],
    )
    .await;
    let (_, members) = stored(
        store
            .append(new_message(&room, &bob, "hi all", None, ts(3)))
            .await
            .unwrap(),
    );
    let members = sorted(members);
    assert_eq!(members, ids(&[&alice, &bob, &carol]));
    assert!(!members.contains(&outsider.id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_client_msg_id_returns_the_original_and_stores_nothing() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (original, _) = stored(
        store
            .append(new_message(&ab, &alice, "first try", Some("k1"), ts(10)))
            .await
            .unwrap(),
    );

    let again = store
        .append(new_message(&ab, &alice, "second try", Some("k1"), ts(20)))
        .await
        .unwrap();
    assert_eq!(again, AppendOutcome::Duplicate(original.clone()));

    assert_eq!(last_seq(&store, &ab, &alice).await, 1);
    let page = store.history(&ab, query(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![original.clone()]);
    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries[0].last_message, Some(original));

    // The seq did not advance: the next new message takes 2.
    assert_eq!(send(&store, &ab, &alice, "next").await.seq, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_client_msg_id_is_still_a_duplicate_after_later_messages() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (original, _) = stored(
        store
            .append(new_message(&ab, &alice, "first", Some("k1"), ts(10)))
            .await
            .unwrap(),
    );
    send_many(&store, &ab, &bob, 3).await;
    let again = store
        .append(new_message(&ab, &alice, "first", Some("k1"), ts(50)))
        .await
        .unwrap();
    assert_eq!(again, AppendOutcome::Duplicate(original));
    assert_eq!(last_seq(&store, &ab, &alice).await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_client_msg_id_from_another_sender_is_stored() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (first, _) = stored(
        store
            .append(new_message(&ab, &alice, "from alice", Some("same"), ts(1)))
            .await
            .unwrap(),
    );
    let (second, _) = stored(
        store
            .append(new_message(&ab, &bob, "from bob", Some("same"), ts(2)))
            .await
            .unwrap(),
    );
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(second.body, "from bob");
    assert_eq!(second.sender_id, bob.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_client_msg_id_in_another_conversation_is_stored() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let ab = direct(&store, &alice, &bob).await;
    let ac = direct(&store, &alice, &carol).await;
    let (first, _) = stored(
        store
            .append(new_message(&ab, &alice, "to bob", Some("same"), ts(1)))
            .await
            .unwrap(),
    );
    let (second, _) = stored(
        store
            .append(new_message(&ac, &alice, "to carol", Some("same"), ts(2)))
            .await
            .unwrap(),
    );
    assert_ne!(first.id, second.id);
    assert_eq!(second.conversation_id, ac);
    assert_eq!(second.body, "to carol");
    assert_eq!(second.seq, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_without_client_msg_id_are_never_duplicates() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let a = send(&store, &own, &alice, "same body").await;
    let b = send(&store, &own, &alice, "same body").await;
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_ne!(a.id, b.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn appending_to_an_unknown_conversation_fails_and_stores_nothing() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let nowhere = ConversationId::new("no-such-conversation");
    let err = store
        .append(new_message(&nowhere, &alice, "hello?", Some("k"), ts(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::NoSuchConversation), "{err:?}");
    let page = store
        .history(&nowhere, query(None, None, 10))
        .await
        .unwrap();
    assert_eq!(page, HistoryPage::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn appending_as_a_non_member_fails_and_stores_nothing() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let eve = register(&store, "eve").await;
    let ab = direct(&store, &alice, &bob).await;
    send(&store, &ab, &alice, "private").await;
    let err = store
        .append(new_message(&ab, &eve, "let me in", Some("k"), ts(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::NotMember), "{err:?}");
    assert_eq!(last_seq(&store, &ab, &alice).await, 1);
    let (seqs, _) = page(&store, &ab, None, None, 10).await;
    assert_eq!(seqs, vec![1]);
    assert_eq!(send(&store, &ab, &bob, "next").await.seq, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_get_unique_dense_seqs() {
    const TASKS: u64 = 50;
    const EACH: u64 = 40;
    const TOTAL: u64 = TASKS * EACH;
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            let conversation = ab.clone();
            let sender = if t % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            tokio::spawn(async move {
                barrier.wait().await;
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let message = new_message(
                        &conversation,
                        &sender,
                        &format!("task {t} message {i}"),
                        Some(&format!("{t}-{i}")),
                        ts((t * EACH + i) as i64),
                    );
                    let (stored, _) = stored(store.append(message).await.expect("append"));
                    seqs.push(stored.seq);
                }
                (t, seqs)
            })
        })
        .collect();

    let mut returned = Vec::new();
    for handle in handles {
        let (t, seqs) = handle.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "task {t}: {seqs:?}");
        returned.extend(seqs);
    }
    assert_eq!(sorted(returned), (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(last_seq(&store, &ab, &alice).await, TOTAL);

    // Backwards from the newest, in pages of the largest size.
    let mut backwards = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(&ab, query(before, None, 200)).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "{seqs:?}");
        before = seqs.first().copied();
        backwards.splice(0..0, page.messages);
        if !page.has_more {
            break;
        }
    }
    let seqs: Vec<u64> = backwards.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>());
    let bodies: HashSet<&str> = backwards.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len() as u64, TOTAL);
    let ids: HashSet<&MessageId> = backwards.iter().map(|m| &m.id).collect();
    assert_eq!(ids.len() as u64, TOTAL);

    // Forwards from the start gives the same messages.
    let mut forwards = Vec::new();
    let mut after = Some(0);
    loop {
        let page = store.history(&ab, query(None, after, 200)).await.unwrap();
        after = page.messages.last().map(|m| m.seq);
        forwards.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(forwards, backwards);
}

// ---------------------------------------------------------------- history

/// A conversation holding messages 1..=10.
async fn ten_messages() -> (TempDir, SqliteStore, ConversationId) {
    let (dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &ab, &alice, 10).await;
    (dir, store, ab)
}

#[tokio::test(flavor = "multi_thread")]
async fn history_without_cursors_is_the_newest_page_oldest_first() {
    let (_dir, store, ab) = ten_messages().await;
    let (seqs, has_more) = page(&store, &ab, None, None, 3).await;
    assert_eq!(seqs, vec![8, 9, 10]);
    assert!(has_more);
    let history = store.history(&ab, query(None, None, 3)).await.unwrap();
    let bodies: Vec<&str> = history.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m8", "m9", "m10"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_without_cursors_covering_everything_has_no_more() {
    let (_dir, store, ab) = ten_messages().await;
    assert_eq!(
        page(&store, &ab, None, None, 10).await,
        ((1..=10).collect(), false)
    );
    assert_eq!(
        page(&store, &ab, None, None, 200).await,
        ((1..=10).collect(), false)
    );
    assert_eq!(
        page(&store, &ab, None, None, 9).await,
        ((2..=10).collect(), true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_backwards_with_before_seq_to_the_start() {
    let (_dir, store, ab) = ten_messages().await;
    assert_eq!(
        page(&store, &ab, Some(8), None, 3).await,
        (vec![5, 6, 7], true)
    );
    assert_eq!(
        page(&store, &ab, Some(5), None, 3).await,
        (vec![2, 3, 4], true)
    );
    assert_eq!(page(&store, &ab, Some(2), None, 3).await, (vec![1], false));
    assert_eq!(page(&store, &ab, Some(1), None, 3).await, (vec![], false));
    // A page that ends exactly at the first message has no more.
    assert_eq!(
        page(&store, &ab, Some(4), None, 3).await,
        (vec![1, 2, 3], false)
    );
    // A cursor past the end is the newest page.
    assert_eq!(
        page(&store, &ab, Some(99), None, 2).await,
        (vec![9, 10], true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_forwards_with_after_seq() {
    let (_dir, store, ab) = ten_messages().await;
    assert_eq!(
        page(&store, &ab, None, Some(0), 4).await,
        (vec![1, 2, 3, 4], true)
    );
    assert_eq!(
        page(&store, &ab, None, Some(4), 4).await,
        (vec![5, 6, 7, 8], true)
    );
    assert_eq!(
        page(&store, &ab, None, Some(8), 4).await,
        (vec![9, 10], false)
    );
    // A page that ends exactly at the newest message has no more.
    assert_eq!(
        page(&store, &ab, None, Some(6), 4).await,
        (vec![7, 8, 9, 10], false)
    );
    assert_eq!(page(&store, &ab, None, Some(10), 4).await, (vec![], false));
    assert_eq!(page(&store, &ab, None, Some(99), 4).await, (vec![], false));
}

#[tokio::test(flavor = "multi_thread")]
async fn history_with_both_cursors_stays_between_them() {
    let (_dir, store, ab) = ten_messages().await;
    assert_eq!(
        page(&store, &ab, Some(8), Some(2), 3).await,
        (vec![3, 4, 5], true)
    );
    assert_eq!(
        page(&store, &ab, Some(8), Some(2), 5).await,
        (vec![3, 4, 5, 6, 7], false)
    );
    assert_eq!(
        page(&store, &ab, Some(8), Some(2), 50).await,
        (vec![3, 4, 5, 6, 7], false)
    );
    assert_eq!(
        page(&store, &ab, Some(3), Some(2), 5).await,
        (vec![], false)
    );
    assert_eq!(
        page(&store, &ab, Some(2), Some(5), 5).await,
        (vec![], false)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_respects_the_limit() {
    let (_dir, store, ab) = ten_messages().await;
    for limit in 1..=10u32 {
        let (seqs, has_more) = page(&store, &ab, None, None, limit).await;
        assert_eq!(seqs.len(), limit as usize);
        assert_eq!(has_more, limit < 10);
        let (seqs, _) = page(&store, &ab, None, Some(0), limit).await;
        assert_eq!(seqs, (1..=u64::from(limit)).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_of_an_empty_conversation_is_an_empty_page() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    for (before, after) in [
        (None, None),
        (Some(5), None),
        (None, Some(0)),
        (Some(5), Some(1)),
    ] {
        let got = store.history(&ab, query(before, after, 50)).await.unwrap();
        assert_eq!(got, HistoryPage::default(), "{before:?} {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_shows_only_its_own_conversation() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let ab = direct(&store, &alice, &bob).await;
    let ac = direct(&store, &alice, &carol).await;
    send_many(&store, &ab, &alice, 3).await;
    let to_carol = send(&store, &ac, &alice, "carol only").await;
    let got = store.history(&ac, query(None, None, 50)).await.unwrap();
    assert_eq!(got.messages, vec![to_carol]);
    assert!(!got.has_more);
}

// ---------------------------------------------------------------- conversations_of

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_listed_most_recently_active_first() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let own = store
        .direct_conversation(&alice.id, &alice.id, ts(10))
        .await
        .unwrap();
    let ab = store
        .direct_conversation(&alice.id, &bob.id, ts(20))
        .await
        .unwrap();
    let ac = store
        .direct_conversation(&alice.id, &carol.id, ts(30))
        .await
        .unwrap();

    let order = |summaries: Vec<ConversationSummary>| -> Vec<ConversationId> {
        summaries.into_iter().map(|s| s.conversation.id).collect()
    };
    // Without messages: by creation.
    assert_eq!(
        order(store.conversations_of(&alice.id).await.unwrap()),
        vec![ac.clone(), ab.clone(), own.clone()]
    );

    send_at(&store, &ab, &bob, "hi", ts(100)).await;
    assert_eq!(
        order(store.conversations_of(&alice.id).await.unwrap()),
        vec![ab.clone(), ac.clone(), own.clone()]
    );

    send_at(&store, &own, &alice, "memo", ts(200)).await;
    send_at(&store, &ac, &carol, "yo", ts(300)).await;
    assert_eq!(
        order(store.conversations_of(&alice.id).await.unwrap()),
        vec![ac.clone(), own.clone(), ab.clone()]
    );
    assert_eq!(
        order(store.conversations_of(&bob.id).await.unwrap()),
        vec![ab]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_summary_carries_members_read_marker_and_last_message() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    send_at(&store, &ab, &alice, "one", ts(1)).await;
    send_at(&store, &ab, &bob, "two", ts(2)).await;
    let newest = send_at(&store, &ab, &bob, "three", ts(3)).await;
    assert!(store.advance_read_marker(&ab, &alice.id, 1).await.unwrap());

    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(
        summary.conversation,
        Conversation {
            id: ab.clone(),
            kind: ConversationKind::Direct,
            last_seq: 3,
        }
    );
    assert_eq!(summary.member_count, 2);
    let mut listed = summary.members.clone();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![alice.clone(), bob.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, expected);
    assert_eq!(summary.last_read_seq, 1);
    assert_eq!(summary.last_message, Some(newest.clone()));
    assert_eq!(summary.unread(), 2);

    // Bob's view of the same conversation has his own marker.
    let theirs = store.conversations_of(&bob.id).await.unwrap();
    assert_eq!(theirs[0].last_read_seq, 0);
    assert_eq!(theirs[0].unread(), 3);
    assert_eq!(theirs[0].last_message, Some(newest));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_without_messages_has_no_last_message() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let summaries = store.conversations_of(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].conversation.id, ab);
    assert_eq!(summaries[0].conversation.last_seq, 0);
    assert_eq!(summaries[0].last_message, None);
    assert_eq!(summaries[0].last_read_seq, 0);
    assert_eq!(summaries[0].unread(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_conversations_has_an_empty_list() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    direct(&store, &alice, &bob).await;
    assert_eq!(store.conversations_of(&carol.id).await.unwrap(), vec![]);
    assert_eq!(
        store
            .conversations_of(&UserId::new("no-such-user"))
            .await
            .unwrap(),
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_room_lists_its_first_100_members_in_join_order_and_counts_all() {
    let (_dir, store) = fresh();
    let mut users = Vec::new();
    for i in 0..(MEMBERS_LISTED + 5) {
        users.push(register(&store, &format!("user{i:03}")).await);
    }
    // Join in the reverse of name (and id) order, one millisecond apart.
    let joins: Vec<(&User, Timestamp)> = users
        .iter()
        .rev()
        .enumerate()
        .map(|(i, u)| (u, ts(i as i64)))
        .collect();
    let room = seed_room(&store, "Crowd", &joins).await;

    let summaries = store.conversations_of(&users[0].id).await.unwrap();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(summary.conversation.id, room);
    assert_eq!(summary.member_count, (MEMBERS_LISTED + 5) as u64);
    let expected: Vec<User> = joins
        .iter()
        .take(MEMBERS_LISTED)
        .map(|(u, _)| (*u).clone())
        .collect();
    assert_eq!(summary.members, expected);
    assert_eq!(
        store.member_ids(&room).await.unwrap().len(),
        MEMBERS_LISTED + 5
    );
}

// ---------------------------------------------------------------- read markers

#[tokio::test(flavor = "multi_thread")]
async fn the_read_marker_moves_forward_only() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &ab, &bob, 5).await;

    assert!(store.advance_read_marker(&ab, &alice.id, 3).await.unwrap());
    assert_eq!(membership(&store, &ab, &alice).await.1, 3);

    assert!(!store.advance_read_marker(&ab, &alice.id, 3).await.unwrap());
    assert!(!store.advance_read_marker(&ab, &alice.id, 2).await.unwrap());
    assert!(!store.advance_read_marker(&ab, &alice.id, 0).await.unwrap());
    assert_eq!(membership(&store, &ab, &alice).await.1, 3);

    assert!(store.advance_read_marker(&ab, &alice.id, 5).await.unwrap());
    assert_eq!(membership(&store, &ab, &alice).await.1, 5);
    // The other member's marker is untouched.
    assert_eq!(membership(&store, &ab, &bob).await.1, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_marker_of_a_non_member_does_not_move() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let eve = register(&store, "eve").await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &ab, &bob, 2).await;
    assert!(!store.advance_read_marker(&ab, &eve.id, 2).await.unwrap());
    assert!(matches!(
        store.access(&ab, &eve.id).await.unwrap(),
        Access::NotMember(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_moves_to_the_same_seq_exactly_one_reports_it_moved() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &ab, &bob, 4).await;
    let tasks = 16;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, barrier, ab, id) =
                (store.clone(), barrier.clone(), ab.clone(), alice.id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.advance_read_marker(&ab, &id, 4).await.unwrap()
            })
        })
        .collect();
    let mut moved = 0;
    for handle in handles {
        moved += usize::from(handle.await.unwrap());
    }
    assert_eq!(moved, 1);
    assert_eq!(membership(&store, &ab, &alice).await.1, 4);
}

// ---------------------------------------------------------------- contacts

#[tokio::test(flavor = "multi_thread")]
async fn contacts_are_everyone_sharing_a_conversation_once_without_the_user() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let dave = register(&store, "dave").await;
    let loner = register(&store, "loner").await;
    direct(&store, &alice, &bob).await;
    direct(&store, &alice, &carol).await;
    direct(&store, &alice, &alice).await;
    direct(&store, &bob, &dave).await;
    // Bob shares a room with alice too: he is still listed once.
    seed_room(
        &store,
        "Lobby",
        &[(&alice, ts(0)), (&bob, ts(1)), (&dave, ts(2))],
    )
    .await;

    let of = |user: &User| {
        let (store, id) = (store.clone(), user.id.clone());
        async move { sorted(store.contacts(&id).await.unwrap()) }
    };
    assert_eq!(of(&alice).await, ids(&[&bob, &carol, &dave]));
    assert_eq!(of(&bob).await, ids(&[&alice, &dave]));
    assert_eq!(of(&carol).await, ids(&[&alice]));
    assert_eq!(of(&dave).await, ids(&[&alice, &bob]));
    assert_eq!(of(&loner).await, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_only_in_a_conversation_with_themself_has_no_contacts() {
    let (_dir, store) = fresh();
    let alice = register(&store, "alice").await;
    register(&store, "bob").await;
    direct(&store, &alice, &alice).await;
    assert_eq!(store.contacts(&alice.id).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------- durability

#[tokio::test(flavor = "multi_thread")]
async fn reopening_the_file_keeps_users_conversations_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let alice = store
        .create_user(&name("Alice"), &hash("a"), ts(0))
        .await
        .unwrap();
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (first, _) = stored(
        store
            .append(new_message(
                &ab,
                &alice,
                "before the restart",
                Some("k1"),
                ts(1),
            ))
            .await
            .unwrap(),
    );
    send_at(&store, &ab, &bob, "reply", ts(2)).await;
    assert!(store.advance_read_marker(&ab, &alice.id, 1).await.unwrap());
    store.set_last_seen(&bob.id, ts(3)).await.unwrap();
    let history_before = store.history(&ab, query(None, None, 50)).await.unwrap();
    drop(store);

    let store = open(&dir);
    store.ping().await.unwrap();
    let (found, found_hash) = store.credentials(&name("alice")).await.unwrap().unwrap();
    assert_eq!(found, alice);
    assert_eq!(found_hash, hash("a"));
    assert_eq!(store.user(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(
        store
            .users_last_seen(std::slice::from_ref(&bob.id))
            .await
            .unwrap(),
        vec![(bob.clone(), Some(ts(3)))]
    );
    assert_eq!(direct(&store, &bob, &alice).await, ab);
    assert_eq!(
        store.history(&ab, query(None, None, 50)).await.unwrap(),
        history_before
    );
    assert_eq!(
        membership(&store, &ab, &alice).await,
        (
            Conversation {
                id: ab.clone(),
                kind: ConversationKind::Direct,
                last_seq: 2,
            },
            1
        )
    );
    assert_eq!(
        store.contacts(&alice.id).await.unwrap(),
        vec![bob.id.clone()]
    );

    // The seq and the idempotency keys carry on.
    let again = store
        .append(new_message(
            &ab,
            &alice,
            "before the restart",
            Some("k1"),
            ts(4),
        ))
        .await
        .unwrap();
    assert_eq!(again, AppendOutcome::Duplicate(first));
    assert_eq!(send(&store, &ab, &alice, "after").await.seq, 3);
    assert!(matches!(
        store.create_user(&name("ALICE"), &hash("x"), ts(5)).await,
        Err(CreateUserError::Duplicate)
    ));
}
