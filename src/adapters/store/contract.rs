//! The store contract: the one suite that every storage adapter must pass,
//! written once over a [`Fixture`] and run against each adapter by
//! [`store_contract_tests!`]. It is the definition of done for a new
//! adapter (docs/storage.md): every method of `UserStore` and
//! `MessageStore`, their error cases, and their behaviour under concurrency,
//! including several stores (as several server processes would have) on one
//! database.
//!
//! An adapter's tests instantiate it with a fixture that opens empty stores:
//!
//! ```ignore
//! mod contract {
//!     crate::adapters::store::contract::store_contract_tests!(super::MyFixture);
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::domain::conversation::MEMBERS_LISTED;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{
    Access, AppendError, BlockStore, CreateUserError, DeviceStore, FileStore, MessageStore,
    UserStore,
};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, ConversationSummary, HistoryPage,
    HistoryQuery, Membership, Message, MessageBody, MessageId, RoomName, Timestamp, User, UserId,
    Username, Visibility,
};

/// The storage ports, as one adapter provides them.
pub(crate) trait Store:
    UserStore + MessageStore + BlockStore + DeviceStore + FileStore + Clone + 'static
{
}

impl<T: UserStore + MessageStore + BlockStore + DeviceStore + FileStore + Clone + 'static> Store
    for T
{
}

mod devices;
pub(crate) use devices::*;
mod files;
pub(crate) use files::*;

/// What the suite needs from an adapter's tests.
pub(crate) trait Fixture: Sized {
    /// The adapter under test.
    type Store: Store;

    /// A store on a new, empty database; `None` when the backend cannot be
    /// reached here and the test is to be skipped (the fixture says so).
    async fn fresh() -> Option<Self>;

    /// The store opened by [`Fixture::fresh`] (or [`Fixture::reopen`]).
    fn store(&self) -> &Self::Store;

    /// Closes the store and opens the same database again.
    async fn reopen(&mut self);

    /// A second store on the same database, as another server process
    /// would open it.
    async fn another(&self) -> Self::Store;

    /// A message's body and deleted flag as stored, bypassing the store's
    /// mapping (which blanks deleted bodies).
    async fn raw_message(&self, id: &MessageId) -> (String, bool);
}

/// Instantiates every contract test for one adapter: `$fixture` implements
/// [`Fixture`]. Each test opens its own fresh database.
macro_rules! store_contract_tests {
    ($fixture:ty) => {
        $crate::adapters::store::contract::store_contract_tests!(@each $fixture;
            a_created_user_can_be_found_by_name_and_by_id,
            every_user_gets_a_distinct_id,
            credentials_are_looked_up_without_regard_to_case_and_keep_the_registered_name,
            credentials_of_an_unknown_name_are_none,
            a_name_taken_in_another_case_is_a_duplicate,
            of_concurrent_registrations_of_one_name_exactly_one_succeeds,
            an_unknown_user_id_is_none,
            users_by_prefix_ignore_case_and_are_ordered_by_name,
            users_by_prefix_honour_the_limit,
            an_empty_prefix_lists_everyone,
            users_last_seen_skips_unknown_ids_and_returns_the_stored_time,
            users_last_seen_answers_for_more_ids_than_one_query_may_bind,
            ping_succeeds_on_an_open_store,
            a_direct_conversation_is_the_same_whichever_side_asks,
            different_pairs_get_different_direct_conversations,
            a_conversation_with_oneself_has_one_member,
            concurrent_requests_for_one_pair_get_one_conversation,
            member_ids_lists_every_member,
            access_to_an_unknown_conversation_is_no_such_conversation,
            access_of_an_outsider_is_not_member_with_the_conversation,
            access_of_a_member_carries_the_conversation_and_the_read_marker,
            access_to_a_room_carries_its_name_and_visibility,
            appended_messages_get_dense_seqs_from_1,
            each_conversation_counts_its_own_seqs,
            an_appended_message_round_trips_every_field,
            a_message_without_client_msg_id_round_trips_as_none,
            a_stored_message_lists_every_member_of_a_room,
            a_resent_client_msg_id_returns_the_original_and_stores_nothing,
            a_resent_client_msg_id_is_still_a_duplicate_after_later_messages,
            the_same_client_msg_id_from_another_sender_is_stored,
            the_same_client_msg_id_in_another_conversation_is_stored,
            messages_without_client_msg_id_are_never_duplicates,
            appending_to_an_unknown_conversation_fails_and_stores_nothing,
            appending_as_a_non_member_fails_and_stores_nothing,
            concurrent_appends_get_unique_dense_seqs,
            history_without_cursors_is_the_newest_page_oldest_first,
            history_without_cursors_covering_everything_has_no_more,
            history_pages_backwards_with_before_seq_to_the_start,
            history_pages_forwards_with_after_seq,
            history_with_both_cursors_stays_between_them,
            history_respects_the_limit,
            history_of_an_empty_conversation_is_an_empty_page,
            history_shows_only_its_own_conversation,
            conversations_are_listed_most_recently_active_first,
            a_conversation_summary_carries_members_read_marker_and_last_message,
            a_conversation_without_messages_has_no_last_message,
            a_user_without_conversations_has_an_empty_list,
            a_large_room_lists_its_first_100_members_in_join_order_and_counts_all,
            the_read_marker_moves_forward_only,
            the_read_marker_of_a_non_member_does_not_move,
            of_concurrent_moves_to_the_same_seq_exactly_one_reports_it_moved,
            contacts_are_everyone_sharing_a_conversation_once_without_the_user,
            a_user_only_in_a_conversation_with_themself_has_no_contacts,
            reopening_the_database_keeps_users_conversations_and_messages,
            a_created_room_has_the_trimmed_name_and_its_creator_as_only_member,
            a_private_room_keeps_its_visibility,
            rooms_with_the_same_name_are_distinct_rooms,
            a_new_room_seqs_its_messages_from_1,
            a_new_member_starts_with_the_read_marker_at_the_newest_message,
            a_new_member_of_a_room_without_messages_starts_at_0,
            adding_an_existing_member_returns_false_and_changes_nothing,
            the_member_count_stays_exact_after_many_adds,
            of_concurrent_adds_of_the_same_user_exactly_one_reports_it_added,
            removing_a_member_returns_true_then_false_and_counts_once,
            a_removed_member_is_gone_from_members_contacts_conversations_and_access,
            a_removed_member_can_no_longer_append,
            a_removed_member_added_again_counts_once_and_starts_at_the_newest_message,
            a_members_summary_carries_their_read_marker_and_the_last_message,
            a_summary_is_the_same_as_the_entry_in_conversations_of,
            a_non_members_summary_has_no_read_marker_and_no_last_message,
            the_summary_of_an_unknown_conversation_is_none,
            a_summary_lists_the_first_100_members_in_join_order_and_counts_all,
            members_joining_in_the_same_millisecond_are_listed_in_join_order,
            public_rooms_are_listed_for_everyone_and_private_ones_only_for_members,
            listed_rooms_match_the_prefix_ignoring_case,
            listed_rooms_match_non_ascii_prefixes_ignoring_case,
            a_greek_prefix_ending_in_sigma_finds_the_room,
            rooms_are_listed_by_name_ignoring_case,
            rooms_are_listed_on_after_a_room_in_name_then_id_order,
            rooms_with_the_same_name_are_all_listed,
            listing_rooms_honours_the_limit,
            the_limit_counts_only_rooms_the_viewer_may_see,
            direct_conversations_are_never_listed_as_rooms,
            a_listed_room_is_as_the_viewer_sees_it,
            a_message_is_found_by_its_conversation_and_id,
            a_message_looked_up_under_another_conversation_is_none,
            an_unknown_message_is_none,
            an_edit_replaces_the_body_and_sets_edited_at_keeping_seq_and_created_at,
            a_delete_empties_the_body_and_keeps_seq_and_edited_at,
            deleting_a_deleted_message_answers_it_unchanged,
            history_and_summaries_show_updated_messages_in_place,
            a_deleted_body_is_gone_from_the_database,
            updating_an_unknown_message_is_none_and_changes_nothing,
            concurrent_retries_of_one_client_msg_id_store_it_once,
            two_stores_on_one_database_append_dense_seqs,
            stores_taking_turns_on_one_database_see_each_others_appends,
            append_all_stores_in_order_and_each_message_fails_on_its_own,
            batches_spanning_conversations_in_opposite_orders_from_two_stores_all_commit,
            text_with_nul_characters_is_stored_and_read_back_as_returned,
            editing_a_deleted_message_leaves_it_deleted_and_blank,
            a_block_is_recorded_once_and_listed_earliest_first,
            unblocking_removes_the_block_once,
            blockers_of_lists_everyone_who_blocks_a_user,
            a_blocked_sender_cannot_append_to_the_direct_conversation_until_unblocked,
            a_block_leaves_rooms_open_to_the_blocked_user,
            a_block_by_another_store_on_one_database_closes_the_direct_conversation,
            a_device_session_is_live_until_ended_and_listed_most_recent_first,
            a_refresh_token_rotates_once_and_its_reuse_ends_the_session,
            of_concurrent_rotations_of_one_token_on_two_stores_exactly_one_wins,
            past_the_limit_the_least_recently_used_device_session_ends,
            ending_every_session_keeps_one_if_asked_and_a_bump_moves_the_generation,
            a_password_change_replaces_the_hash_and_ends_the_other_sessions,
            a_deleted_user_keeps_the_name_but_not_the_password_nor_a_session,
            spent_refresh_tokens_older_than_a_token_lives_are_forgotten,
            a_created_file_is_found_by_id_and_among_files,
            create_file_refuses_past_the_quota_and_stores_nothing,
            used_bytes_sums_the_sizes_of_a_users_files,
            of_concurrent_files_that_together_exceed_the_quota_at_most_one_is_stored,
            a_file_is_readable_by_the_members_of_a_conversation_whose_message_carries_it,
            a_deleted_message_no_longer_makes_its_files_readable,
            deleting_a_message_under_another_conversation_keeps_its_files_readable,
            only_old_files_no_message_carries_are_unreferenced_and_deleted,
            referenced_blobs_are_those_a_file_names_as_bytes_or_thumbnail,
            an_upload_advances_only_from_where_it_stands_until_deleted,
            uploads_under_way_reserve_quota_until_their_file_takes_it,
            expired_uploads_are_those_expiring_before_now_soonest_first,
        );
    };
    (@each $fixture:ty; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                use $crate::adapters::store::contract::Fixture;
                if let Some(fixture) = <$fixture>::fresh().await {
                    $crate::adapters::store::contract::$test(fixture).await;
                }
            }
        )*
    };
}
pub(crate) use store_contract_tests;

// ---------------------------------------------------------------- helpers

/// A point in time a little after a fixed origin, so tests read as offsets.
pub(crate) fn ts(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + offset_ms)
}

fn name(raw: &str) -> Username {
    Username::parse(raw).expect("a valid username")
}

fn hash(tag: &str) -> PasswordHash {
    PasswordHash(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${tag}"))
}

pub(crate) async fn register<S: Store>(store: &S, raw: &str) -> User {
    store
        .create_user(&name(raw), &hash(raw), ts(0))
        .await
        .expect("the user is created")
}

pub(crate) async fn direct<S: Store>(store: &S, a: &User, b: &User) -> ConversationId {
    store
        .direct_conversation(&a.id, &b.id, ts(0))
        .await
        .expect("the direct conversation")
}

pub(crate) fn new_message(
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
        attachments: Vec::new(),
    }
}

pub(crate) fn stored(outcome: AppendOutcome) -> (Message, Vec<UserId>) {
    match outcome {
        AppendOutcome::Stored { message, members } => (message, members),
        AppendOutcome::Duplicate(original) => {
            panic!("expected Stored, got a duplicate of {original:?}")
        }
    }
}

/// Appends a message without a clientMsgId at `at` and returns it as stored.
async fn send_at<S: Store>(
    store: &S,
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

async fn send<S: Store>(
    store: &S,
    conversation: &ConversationId,
    sender: &User,
    body: &str,
) -> Message {
    send_at(store, conversation, sender, body, ts(1_000)).await
}

/// Appends `n` messages "m1".."mn".
async fn send_many<S: Store>(store: &S, conversation: &ConversationId, sender: &User, n: u64) {
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

async fn page<S: Store>(
    store: &S,
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

async fn membership<S: Store>(
    store: &S,
    conversation: &ConversationId,
    user: &User,
) -> (Conversation, u64) {
    match store.access(conversation, &user.id).await.expect("access") {
        Access::Member(conversation, membership) => (conversation, membership.last_read_seq),
        other => panic!("expected a member, got {other:?}"),
    }
}

async fn last_seq<S: Store>(store: &S, conversation: &ConversationId, user: &User) -> u64 {
    membership(store, conversation, user).await.0.last_seq
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn ids(users: &[&User]) -> Vec<UserId> {
    sorted(users.iter().map(|u| u.id.clone()).collect())
}

fn room_name(raw: &str) -> RoomName {
    RoomName::parse(raw).expect("a valid room name")
}

async fn create_room<S: Store>(
    store: &S,
    raw: &str,
    visibility: Visibility,
    creator: &User,
    at: Timestamp,
) -> ConversationId {
    store
        .create_room(&room_name(raw), visibility, &creator.id, at)
        .await
        .expect("the room is created")
}

async fn join<S: Store>(store: &S, room: &ConversationId, user: &User, at: Timestamp) -> bool {
    store
        .add_member(room, &user.id, at)
        .await
        .expect("add_member answers")
}

/// Creates a public room through the ports, members joining in the order
/// given at the given times; the first member creates it.
async fn seed_room<S: Store>(
    store: &S,
    room: &str,
    members: &[(&User, Timestamp)],
) -> ConversationId {
    let (creator, created) = members[0];
    let id = create_room(store, room, Visibility::Public, creator, created).await;
    for (user, joined) in &members[1..] {
        assert!(
            join(store, &id, user, *joined).await,
            "{} joins once",
            user.username.as_str()
        );
    }
    id
}

/// The conversation as `viewer` sees it; it must exist.
async fn summary_for<S: Store>(
    store: &S,
    conversation: &ConversationId,
    viewer: &User,
) -> ConversationSummary {
    store
        .summary(conversation, &viewer.id)
        .await
        .expect("summary answers")
        .expect("the conversation exists")
}

fn room_label(summary: &ConversationSummary) -> &str {
    match &summary.conversation.kind {
        ConversationKind::Room { name, .. } => name,
        ConversationKind::Direct => panic!("a direct conversation listed as a room: {summary:?}"),
    }
}

/// The names of the rooms `viewer` finds with `prefix`, in listed order.
async fn listed<S: Store>(store: &S, viewer: &User, prefix: &str, limit: u32) -> Vec<String> {
    store
        .list_rooms(&viewer.id, prefix, None, limit)
        .await
        .expect("list_rooms answers")
        .iter()
        .map(|s| room_label(s).to_owned())
        .collect()
}

fn edit(body: &str, at: Timestamp) -> MessageChange {
    MessageChange::Edit {
        body: MessageBody::parse(body).expect("a valid body"),
        at,
    }
}

// ---------------------------------------------------------------- users

pub(crate) async fn a_created_user_can_be_found_by_name_and_by_id<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn every_user_gets_a_distinct_id<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    assert_ne!(alice.id, bob.id);
    assert_eq!(store.user(&bob.id).await.unwrap(), Some(bob));
}

pub(crate) async fn credentials_are_looked_up_without_regard_to_case_and_keep_the_registered_name<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "Alice").await;
    for typed in ["alice", "ALICE", "aLiCe"] {
        let (found, found_hash) = store.credentials(&name(typed)).await.unwrap().unwrap();
        assert_eq!(found, alice, "{typed}");
        assert_eq!(found.username.as_str(), "Alice");
        assert_eq!(found_hash, hash("Alice"));
    }
}

pub(crate) async fn credentials_of_an_unknown_name_are_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    register(&store, "alice").await;
    assert_eq!(store.credentials(&name("alicia")).await.unwrap(), None);
}

pub(crate) async fn a_name_taken_in_another_case_is_a_duplicate<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn of_concurrent_registrations_of_one_name_exactly_one_succeeds<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn an_unknown_user_id_is_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    register(&store, "alice").await;
    assert_eq!(
        store.user(&UserId::new("no-such-user")).await.unwrap(),
        None
    );
}

pub(crate) async fn users_by_prefix_ignore_case_and_are_ordered_by_name<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn users_by_prefix_honour_the_limit<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn an_empty_prefix_lists_everyone<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn users_last_seen_skips_unknown_ids_and_returns_the_stored_time<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn users_last_seen_answers_for_more_ids_than_one_query_may_bind<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn ping_succeeds_on_an_open_store<F: Fixture>(f: F) {
    let store = f.store().clone();
    store.ping().await.unwrap();
}

// ---------------------------------------------------------------- direct conversations

pub(crate) async fn a_direct_conversation_is_the_same_whichever_side_asks<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn different_pairs_get_different_direct_conversations<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_conversation_with_oneself_has_one_member<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn concurrent_requests_for_one_pair_get_one_conversation<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn member_ids_lists_every_member<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn access_to_an_unknown_conversation_is_no_such_conversation<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    assert_eq!(
        store
            .access(&ConversationId::new("no-such-conversation"), &alice.id)
            .await
            .unwrap(),
        Access::NoSuchConversation
    );
}

pub(crate) async fn access_of_an_outsider_is_not_member_with_the_conversation<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn access_of_a_member_carries_the_conversation_and_the_read_marker<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn access_to_a_room_carries_its_name_and_visibility<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn appended_messages_get_dense_seqs_from_1<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn each_conversation_counts_its_own_seqs<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let ab = direct(&store, &alice, &bob).await;
    let ac = direct(&store, &alice, &carol).await;
    assert_eq!(send(&store, &ab, &alice, "x").await.seq, 1);
    assert_eq!(send(&store, &ab, &alice, "y").await.seq, 2);
    assert_eq!(send(&store, &ac, &alice, "z").await.seq, 1);
}

pub(crate) async fn an_appended_message_round_trips_every_field<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_message_without_client_msg_id_round_trips_as_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &own, &alice, "plain").await;
    assert_eq!(message.client_msg_id, None);
    let page = store.history(&own, query(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![message]);
}

pub(crate) async fn a_stored_message_lists_every_member_of_a_room<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_resent_client_msg_id_returns_the_original_and_stores_nothing<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn a_resent_client_msg_id_is_still_a_duplicate_after_later_messages<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn the_same_client_msg_id_from_another_sender_is_stored<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn the_same_client_msg_id_in_another_conversation_is_stored<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn messages_without_client_msg_id_are_never_duplicates<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let a = send(&store, &own, &alice, "same body").await;
    let b = send(&store, &own, &alice, "same body").await;
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_ne!(a.id, b.id);
}

pub(crate) async fn appending_to_an_unknown_conversation_fails_and_stores_nothing<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn appending_as_a_non_member_fails_and_stores_nothing<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn concurrent_appends_get_unique_dense_seqs<F: Fixture>(f: F) {
    const TASKS: u64 = 50;
    const EACH: u64 = 40;
    const TOTAL: u64 = TASKS * EACH;
    let store = f.store().clone();
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
async fn ten_messages<S: Store>(store: &S) -> ConversationId {
    let alice = register(store, "alice").await;
    let bob = register(store, "bob").await;
    let ab = direct(store, &alice, &bob).await;
    send_many(store, &ab, &alice, 10).await;
    ab
}

pub(crate) async fn history_without_cursors_is_the_newest_page_oldest_first<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
    let (seqs, has_more) = page(&store, &ab, None, None, 3).await;
    assert_eq!(seqs, vec![8, 9, 10]);
    assert!(has_more);
    let history = store.history(&ab, query(None, None, 3)).await.unwrap();
    let bodies: Vec<&str> = history.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m8", "m9", "m10"]);
}

pub(crate) async fn history_without_cursors_covering_everything_has_no_more<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
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

pub(crate) async fn history_pages_backwards_with_before_seq_to_the_start<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
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

pub(crate) async fn history_pages_forwards_with_after_seq<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
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

pub(crate) async fn history_with_both_cursors_stays_between_them<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
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

pub(crate) async fn history_respects_the_limit<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ab = ten_messages(&store).await;
    for limit in 1..=10u32 {
        let (seqs, has_more) = page(&store, &ab, None, None, limit).await;
        assert_eq!(seqs.len(), limit as usize);
        assert_eq!(has_more, limit < 10);
        let (seqs, _) = page(&store, &ab, None, Some(0), limit).await;
        assert_eq!(seqs, (1..=u64::from(limit)).collect::<Vec<_>>());
    }
}

pub(crate) async fn history_of_an_empty_conversation_is_an_empty_page<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn history_shows_only_its_own_conversation<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn conversations_are_listed_most_recently_active_first<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_conversation_summary_carries_members_read_marker_and_last_message<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn a_conversation_without_messages_has_no_last_message<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_user_without_conversations_has_an_empty_list<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn a_large_room_lists_its_first_100_members_in_join_order_and_counts_all<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn the_read_marker_moves_forward_only<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn the_read_marker_of_a_non_member_does_not_move<F: Fixture>(f: F) {
    let store = f.store().clone();
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

pub(crate) async fn of_concurrent_moves_to_the_same_seq_exactly_one_reports_it_moved<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn contacts_are_everyone_sharing_a_conversation_once_without_the_user<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
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

pub(crate) async fn a_user_only_in_a_conversation_with_themself_has_no_contacts<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    register(&store, "bob").await;
    direct(&store, &alice, &alice).await;
    assert_eq!(store.contacts(&alice.id).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------- durability

pub(crate) async fn reopening_the_database_keeps_users_conversations_and_messages<F: Fixture>(
    mut f: F,
) {
    let store = f.store().clone();
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

    f.reopen().await;
    let store = f.store().clone();
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

// ---------------------------------------------------------------- create_room

pub(crate) async fn a_created_room_has_the_trimmed_name_and_its_creator_as_only_member<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let room = create_room(&store, "  Lobby \t", Visibility::Public, &alice, ts(7)).await;
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
        summary_for(&store, &room, &alice).await,
        ConversationSummary {
            conversation: lobby.clone(),
            members: vec![alice.clone()],
            member_count: 1,
            last_read_seq: 0,
            last_message: None,
        }
    );
    assert_eq!(
        store.member_ids(&room).await.unwrap(),
        vec![alice.id.clone()]
    );
    assert_eq!(
        store.conversations_of(&alice.id).await.unwrap(),
        vec![summary_for(&store, &room, &alice).await]
    );
}

pub(crate) async fn a_private_room_keeps_its_visibility<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let room = create_room(&store, "Secret", Visibility::Private, &alice, ts(0)).await;
    let summary = summary_for(&store, &room, &alice).await;
    assert_eq!(
        summary.conversation.kind,
        ConversationKind::Room {
            name: "Secret".into(),
            visibility: Visibility::Private,
        }
    );
    assert_eq!(summary.member_count, 1);
    assert_eq!(summary.members, vec![alice]);
    assert_eq!(summary.conversation.last_seq, 0);
}

pub(crate) async fn rooms_with_the_same_name_are_distinct_rooms<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let first = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    let second = create_room(&store, "lobby", Visibility::Public, &bob, ts(1)).await;
    assert_ne!(first, second);
    assert_eq!(store.member_ids(&first).await.unwrap(), vec![alice.id]);
    assert_eq!(store.member_ids(&second).await.unwrap(), vec![bob.id]);
}

pub(crate) async fn a_new_room_seqs_its_messages_from_1<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    assert_eq!(send(&store, &room, &alice, "first").await.seq, 1);
    assert_eq!(send(&store, &room, &alice, "second").await.seq, 2);
    assert_eq!(last_seq(&store, &room, &alice).await, 2);
}

// ---------------------------------------------------------------- add_member

pub(crate) async fn a_new_member_starts_with_the_read_marker_at_the_newest_message<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    send_many(&store, &room, &alice, 4).await;
    let newest = send(&store, &room, &alice, "m5").await;

    assert!(join(&store, &room, &bob, ts(2_000)).await);
    assert_eq!(membership(&store, &room, &bob).await.1, 5);
    let summary = summary_for(&store, &room, &bob).await;
    assert_eq!(summary.last_read_seq, 5);
    assert_eq!(summary.unread(), 0);
    assert_eq!(summary.last_message, Some(newest));
    assert_eq!(summary.member_count, 2);
    assert_eq!(summary.members, vec![alice.clone(), bob.clone()]);
    // The creator's marker is untouched.
    assert_eq!(membership(&store, &room, &alice).await.1, 0);

    // Messages after joining are unread.
    send(&store, &room, &alice, "m6").await;
    assert_eq!(summary_for(&store, &room, &bob).await.unread(), 1);
}

pub(crate) async fn a_new_member_of_a_room_without_messages_starts_at_0<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    assert!(join(&store, &room, &bob, ts(1)).await);
    assert_eq!(membership(&store, &room, &bob).await.1, 0);
    assert_eq!(send(&store, &room, &bob, "hello").await.seq, 1);
}

pub(crate) async fn adding_an_existing_member_returns_false_and_changes_nothing<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    send_many(&store, &room, &alice, 2).await;
    assert!(join(&store, &room, &bob, ts(10)).await);
    assert!(join(&store, &room, &carol, ts(20)).await);
    send_many(&store, &room, &alice, 3).await;
    let before_bob = summary_for(&store, &room, &bob).await;
    let before_alice = summary_for(&store, &room, &alice).await;
    assert_eq!(before_bob.last_read_seq, 2);
    assert_eq!(before_bob.member_count, 3);

    // Bob again, later: his marker stays at 2 and he keeps his place.
    assert!(!join(&store, &room, &bob, ts(30)).await);
    // The creator is a member too.
    assert!(!join(&store, &room, &alice, ts(40)).await);

    assert_eq!(summary_for(&store, &room, &bob).await, before_bob);
    assert_eq!(summary_for(&store, &room, &alice).await, before_alice);
    assert_eq!(
        before_bob.members,
        vec![alice.clone(), bob.clone(), carol.clone()]
    );
    assert_eq!(store.member_ids(&room).await.unwrap().len(), 3);
}

pub(crate) async fn the_member_count_stays_exact_after_many_adds<F: Fixture>(f: F) {
    let store = f.store().clone();
    let owner = register(&store, "owner").await;
    let room = create_room(&store, "Crowd", Visibility::Public, &owner, ts(0)).await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(register(&store, &format!("user{i:02}")).await);
    }
    for (i, user) in users.iter().enumerate() {
        assert!(join(&store, &room, user, ts(1 + i as i64)).await);
        // Every other user is added a second time.
        if i % 2 == 0 {
            assert!(!join(&store, &room, user, ts(100 + i as i64)).await);
        }
    }
    // And the whole crowd once more.
    for user in &users {
        assert!(!join(&store, &room, user, ts(500)).await);
    }
    let summary = summary_for(&store, &room, &owner).await;
    assert_eq!(summary.member_count, 41);
    assert_eq!(summary.members.len(), 41);
    assert_eq!(store.member_ids(&room).await.unwrap().len(), 41);
}

pub(crate) async fn of_concurrent_adds_of_the_same_user_exactly_one_reports_it_added<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    send_many(&store, &room, &alice, 3).await;
    let tasks = 16;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (store, barrier, room, id) =
                (store.clone(), barrier.clone(), room.clone(), bob.id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .add_member(&room, &id, ts(10 + i as i64))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut added = 0;
    for handle in handles {
        added += usize::from(handle.await.unwrap());
    }
    assert_eq!(added, 1);
    let summary = summary_for(&store, &room, &bob).await;
    assert_eq!(summary.member_count, 2);
    assert_eq!(summary.members, vec![alice, bob.clone()]);
    assert_eq!(summary.last_read_seq, 3);
    assert_eq!(store.member_ids(&room).await.unwrap().len(), 2);
}

// ---------------------------------------------------------------- remove_member

pub(crate) async fn removing_a_member_returns_true_then_false_and_counts_once<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let eve = register(&store, "eve").await;
    let room = seed_room(
        &store,
        "Lobby",
        &[(&alice, ts(0)), (&bob, ts(1)), (&carol, ts(2))],
    )
    .await;
    assert_eq!(summary_for(&store, &room, &alice).await.member_count, 3);

    assert!(store.remove_member(&room, &bob.id).await.unwrap());
    assert_eq!(summary_for(&store, &room, &alice).await.member_count, 2);
    assert!(!store.remove_member(&room, &bob.id).await.unwrap());
    assert_eq!(summary_for(&store, &room, &alice).await.member_count, 2);

    // Someone who never was a member, and an unknown conversation.
    assert!(!store.remove_member(&room, &eve.id).await.unwrap());
    assert!(
        !store
            .remove_member(&ConversationId::new("no-such-conversation"), &alice.id)
            .await
            .unwrap()
    );
    let summary = summary_for(&store, &room, &alice).await;
    assert_eq!(summary.member_count, 2);
    assert_eq!(summary.members, vec![alice, carol]);
}

pub(crate) async fn a_removed_member_is_gone_from_members_contacts_conversations_and_access<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let carol = register(&store, "carol").await;
    let dave = register(&store, "dave").await;
    let room = seed_room(
        &store,
        "Lobby",
        &[(&alice, ts(0)), (&bob, ts(1)), (&carol, ts(2))],
    )
    .await;
    let bd = direct(&store, &bob, &dave).await;
    send_many(&store, &room, &alice, 2).await;
    assert_eq!(
        sorted(store.contacts(&bob.id).await.unwrap()),
        ids(&[&alice, &carol, &dave])
    );

    assert!(store.remove_member(&room, &bob.id).await.unwrap());

    assert_eq!(
        sorted(store.member_ids(&room).await.unwrap()),
        ids(&[&alice, &carol])
    );
    assert_eq!(
        sorted(store.contacts(&bob.id).await.unwrap()),
        ids(&[&dave])
    );
    assert_eq!(
        sorted(store.contacts(&alice.id).await.unwrap()),
        ids(&[&carol])
    );
    let theirs: Vec<ConversationId> = store
        .conversations_of(&bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.conversation.id)
        .collect();
    assert_eq!(theirs, vec![bd]);
    assert_eq!(
        store.access(&room, &bob.id).await.unwrap(),
        Access::NotMember(membership(&store, &room, &alice).await.0)
    );
    let summary = summary_for(&store, &room, &bob).await;
    assert_eq!(summary.members, vec![alice.clone(), carol.clone()]);
    assert_eq!(summary.last_read_seq, 0);
    assert_eq!(summary.last_message, None);
}

pub(crate) async fn a_removed_member_can_no_longer_append<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    send(&store, &room, &bob, "while inside").await;
    assert!(store.remove_member(&room, &bob.id).await.unwrap());

    let err = store
        .append(new_message(&room, &bob, "after leaving", Some("k"), ts(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::NotMember), "{err:?}");
    assert_eq!(page(&store, &room, None, None, 10).await, (vec![1], false));
    assert_eq!(last_seq(&store, &room, &alice).await, 1);
}

pub(crate) async fn a_removed_member_added_again_counts_once_and_starts_at_the_newest_message<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    send_many(&store, &room, &alice, 2).await;
    assert!(store.remove_member(&room, &bob.id).await.unwrap());
    send_many(&store, &room, &alice, 2).await;

    assert!(join(&store, &room, &bob, ts(50)).await);
    let summary = summary_for(&store, &room, &bob).await;
    assert_eq!(summary.member_count, 2);
    assert_eq!(summary.last_read_seq, 4);
    assert_eq!(summary.members, vec![alice, bob.clone()]);
    assert_eq!(send(&store, &room, &bob, "back").await.seq, 5);
}

// ---------------------------------------------------------------- summary

pub(crate) async fn a_members_summary_carries_their_read_marker_and_the_last_message<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    send_at(&store, &room, &alice, "one", ts(10)).await;
    send_at(&store, &room, &bob, "two", ts(11)).await;
    let newest = send_at(&store, &room, &alice, "three", ts(12)).await;
    assert!(store.advance_read_marker(&room, &bob.id, 2).await.unwrap());

    assert_eq!(
        summary_for(&store, &room, &bob).await,
        ConversationSummary {
            conversation: Conversation {
                id: room.clone(),
                kind: ConversationKind::Room {
                    name: "Lobby".into(),
                    visibility: Visibility::Public,
                },
                last_seq: 3,
            },
            members: vec![alice.clone(), bob.clone()],
            member_count: 2,
            last_read_seq: 2,
            last_message: Some(newest.clone()),
        }
    );
    let theirs = summary_for(&store, &room, &alice).await;
    assert_eq!(theirs.last_read_seq, 0);
    assert_eq!(theirs.unread(), 3);
    assert_eq!(theirs.last_message, Some(newest));
}

pub(crate) async fn a_summary_is_the_same_as_the_entry_in_conversations_of<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    let ab = direct(&store, &alice, &bob).await;
    send_many(&store, &room, &bob, 3).await;
    send_many(&store, &ab, &bob, 2).await;
    assert!(
        store
            .advance_read_marker(&room, &alice.id, 1)
            .await
            .unwrap()
    );
    for summary in store.conversations_of(&alice.id).await.unwrap() {
        assert_eq!(
            summary_for(&store, &summary.conversation.id, &alice).await,
            summary
        );
    }
}

pub(crate) async fn a_non_members_summary_has_no_read_marker_and_no_last_message<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let eve = register(&store, "eve").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    send_many(&store, &room, &alice, 4).await;
    assert!(
        store
            .advance_read_marker(&room, &alice.id, 4)
            .await
            .unwrap()
    );

    let seen = summary_for(&store, &room, &eve).await;
    assert_eq!(seen.conversation, membership(&store, &room, &alice).await.0);
    assert_eq!(seen.conversation.last_seq, 4);
    assert_eq!(seen.members, vec![alice.clone(), bob.clone()]);
    assert_eq!(seen.member_count, 2);
    assert_eq!(seen.last_read_seq, 0);
    assert_eq!(seen.last_message, None);

    // The same for a direct conversation, and for an unknown user.
    let ab = direct(&store, &alice, &bob).await;
    send(&store, &ab, &alice, "private").await;
    let seen = summary_for(&store, &ab, &eve).await;
    assert_eq!(seen.conversation.last_seq, 1);
    assert_eq!(seen.member_count, 2);
    assert_eq!((seen.last_read_seq, seen.last_message), (0, None));
    let ghost = store
        .summary(&room, &UserId::new("no-such-user"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ghost.last_read_seq, ghost.last_message), (0, None));
    assert_eq!(ghost.member_count, 2);
}

pub(crate) async fn the_summary_of_an_unknown_conversation_is_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    seed_room(&store, "Lobby", &[(&alice, ts(0))]).await;
    assert_eq!(
        store
            .summary(&ConversationId::new("no-such-conversation"), &alice.id)
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_summary_lists_the_first_100_members_in_join_order_and_counts_all<
    F: Fixture,
>(
    f: F,
) {
    const MEMBERS: usize = 150;
    let store = f.store().clone();
    let mut users = Vec::new();
    for i in 0..MEMBERS {
        users.push(register(&store, &format!("user{i:03}")).await);
    }
    // Join in an order unlike registration (and so id) order: the odd
    // ones from the back, then the even ones from the front.
    let mut order: Vec<&User> = users.iter().skip(1).step_by(2).rev().collect();
    order.extend(users.iter().step_by(2));
    let room = create_room(&store, "Crowd", Visibility::Public, order[0], ts(0)).await;
    for (i, user) in order.iter().enumerate().skip(1) {
        assert!(join(&store, &room, user, ts(i as i64)).await);
    }
    let outsider = register(&store, "outsider").await;

    let expected: Vec<User> = order
        .iter()
        .take(MEMBERS_LISTED)
        .map(|u| (*u).clone())
        .collect();
    for viewer in [order[0], order[MEMBERS - 1], &outsider] {
        let summary = summary_for(&store, &room, viewer).await;
        assert_eq!(summary.member_count, MEMBERS as u64);
        assert_eq!(summary.members, expected);
    }
    assert_eq!(store.member_ids(&room).await.unwrap().len(), MEMBERS);

    // One of the listed leaves: the next in line moves up.
    assert!(store.remove_member(&room, &order[5].id).await.unwrap());
    let summary = summary_for(&store, &room, &outsider).await;
    assert_eq!(summary.member_count, MEMBERS as u64 - 1);
    let mut expected: Vec<User> = order
        .iter()
        .take(MEMBERS_LISTED + 1)
        .map(|u| (*u).clone())
        .collect();
    expected.remove(5);
    assert_eq!(summary.members, expected);
}

pub(crate) async fn members_joining_in_the_same_millisecond_are_listed_in_join_order<F: Fixture>(
    f: F,
) {
    let store = f.store().clone();
    let mut users = [
        register(&store, "alice").await,
        register(&store, "bob").await,
        register(&store, "carol").await,
    ];
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let [low, middle, high] = [&users[0], &users[1], &users[2]];
    let room = create_room(&store, "Lobby", Visibility::Public, middle, ts(0)).await;
    // The higher id joins first, both within one millisecond.
    assert!(join(&store, &room, high, ts(1)).await);
    assert!(join(&store, &room, low, ts(1)).await);
    assert_eq!(
        summary_for(&store, &room, middle).await.members,
        vec![middle.clone(), high.clone(), low.clone()]
    );
}

// ---------------------------------------------------------------- list_rooms

pub(crate) async fn public_rooms_are_listed_for_everyone_and_private_ones_only_for_members<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    create_room(&store, "Alpha", Visibility::Public, &alice, ts(0)).await;
    let beta = create_room(&store, "Beta", Visibility::Private, &alice, ts(1)).await;
    create_room(&store, "Gamma", Visibility::Private, &bob, ts(2)).await;
    create_room(&store, "Delta", Visibility::Public, &bob, ts(3)).await;

    assert_eq!(
        listed(&store, &alice, "", 50).await,
        ["Alpha", "Beta", "Delta"]
    );
    assert_eq!(
        listed(&store, &bob, "", 50).await,
        ["Alpha", "Delta", "Gamma"]
    );

    assert!(join(&store, &beta, &bob, ts(10)).await);
    assert_eq!(
        listed(&store, &bob, "", 50).await,
        ["Alpha", "Beta", "Delta", "Gamma"]
    );
    assert!(store.remove_member(&beta, &bob.id).await.unwrap());
    assert_eq!(
        listed(&store, &bob, "", 50).await,
        ["Alpha", "Delta", "Gamma"]
    );
    // A user with no rooms sees only the public ones.
    let carol = register(&store, "carol").await;
    assert_eq!(listed(&store, &carol, "", 50).await, ["Alpha", "Delta"]);
}

pub(crate) async fn listed_rooms_match_the_prefix_ignoring_case<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    for (i, room) in ["Lobby", "LOUNGE", "library", "Main", "xlobby"]
        .into_iter()
        .enumerate()
    {
        create_room(&store, room, Visibility::Public, &alice, ts(i as i64)).await;
    }
    assert_eq!(listed(&store, &alice, "lo", 50).await, ["Lobby", "LOUNGE"]);
    assert_eq!(listed(&store, &alice, "LO", 50).await, ["Lobby", "LOUNGE"]);
    assert_eq!(listed(&store, &alice, "lOb", 50).await, ["Lobby"]);
    assert_eq!(listed(&store, &alice, "LOBBY", 50).await, ["Lobby"]);
    assert_eq!(
        listed(&store, &alice, "l", 50).await,
        ["library", "Lobby", "LOUNGE"]
    );
    assert_eq!(listed(&store, &alice, "main", 50).await, ["Main"]);
    assert!(listed(&store, &alice, "lobbyx", 50).await.is_empty());
    assert!(listed(&store, &alice, "zed", 50).await.is_empty());
    // A prefix matches at the start only, and is not a pattern.
    assert!(listed(&store, &alice, "obby", 50).await.is_empty());
    assert!(listed(&store, &alice, "%", 50).await.is_empty());
    assert!(listed(&store, &alice, "_obby", 50).await.is_empty());
}

pub(crate) async fn listed_rooms_match_non_ascii_prefixes_ignoring_case<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    for (i, room) in ["Été", "ÉCOLE", "Zèbre", "ete", "Straße"]
        .into_iter()
        .enumerate()
    {
        create_room(&store, room, Visibility::Public, &alice, ts(i as i64)).await;
    }
    assert_eq!(listed(&store, &alice, "été", 50).await, ["Été"]);
    assert_eq!(listed(&store, &alice, "ÉTÉ", 50).await, ["Été"]);
    assert_eq!(listed(&store, &alice, "éT", 50).await, ["Été"]);
    assert_eq!(listed(&store, &alice, "é", 50).await, ["ÉCOLE", "Été"]);
    assert_eq!(listed(&store, &alice, "É", 50).await, ["ÉCOLE", "Été"]);
    assert_eq!(listed(&store, &alice, "zÈ", 50).await, ["Zèbre"]);
    assert_eq!(listed(&store, &alice, "STRAß", 50).await, ["Straße"]);
    // Accents are not case: "e" does not find "Été".
    assert_eq!(listed(&store, &alice, "e", 50).await, ["ete"]);
}

pub(crate) async fn a_greek_prefix_ending_in_sigma_finds_the_room<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    create_room(&store, "ΚΟΣΜΟΣ", Visibility::Public, &alice, ts(0)).await;
    // Lower-case works; the same letters in capitals do not.
    assert_eq!(listed(&store, &alice, "κοσ", 50).await, ["ΚΟΣΜΟΣ"]);
    assert_eq!(listed(&store, &alice, "ΚΟΣ", 50).await, ["ΚΟΣΜΟΣ"]);
}

pub(crate) async fn rooms_are_listed_on_after_a_room_in_name_then_id_order<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    // Three rooms of one name: the id decides among them.
    for (i, room) in ["Same", "same", "SAME", "alpha", "zulu"]
        .into_iter()
        .enumerate()
    {
        create_room(&store, room, Visibility::Public, &alice, ts(i as i64)).await;
    }
    let all = store.list_rooms(&alice.id, "", None, 50).await.unwrap();
    assert_eq!(all.len(), 5);
    // Walking two at a time from each page's last room gives the same list.
    let mut walked = Vec::new();
    let mut after: Option<ConversationId> = None;
    loop {
        let page = store
            .list_rooms(&alice.id, "", after.clone(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().conversation.id.clone());
        walked.extend(page);
    }
    assert_eq!(walked, all);
    // With a prefix, and past the last room, nothing more.
    let last = &all[4].conversation.id;
    assert!(
        store
            .list_rooms(&alice.id, "", Some(last.clone()), 50)
            .await
            .unwrap()
            .is_empty()
    );
    let same = store
        .list_rooms(&alice.id, "sa", Some(all[1].conversation.id.clone()), 50)
        .await
        .unwrap();
    assert_eq!(same, all[2..4]);
    // A cursor naming no room is ignored.
    let unknown = ConversationId::new("no-such-room");
    assert_eq!(
        store
            .list_rooms(&alice.id, "", Some(unknown), 50)
            .await
            .unwrap(),
        all
    );
}

pub(crate) async fn rooms_are_listed_by_name_ignoring_case<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    for (i, room) in ["charlie", "Bravo2", "ALPHA2", "bravo", "Alpha", "delta"]
        .into_iter()
        .enumerate()
    {
        create_room(&store, room, Visibility::Public, &alice, ts(i as i64)).await;
    }
    assert_eq!(
        listed(&store, &alice, "", 50).await,
        ["Alpha", "ALPHA2", "bravo", "Bravo2", "charlie", "delta"]
    );
    // Recent activity does not change the order.
    let rooms = store.list_rooms(&alice.id, "delta", None, 1).await.unwrap();
    send(&store, &rooms[0].conversation.id, &alice, "bump").await;
    assert_eq!(
        listed(&store, &alice, "", 50).await,
        ["Alpha", "ALPHA2", "bravo", "Bravo2", "charlie", "delta"]
    );
}

pub(crate) async fn rooms_with_the_same_name_are_all_listed<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let first = create_room(&store, "Lobby", Visibility::Public, &alice, ts(0)).await;
    let second = create_room(&store, "LOBBY", Visibility::Public, &bob, ts(1)).await;
    let found: HashSet<ConversationId> = store
        .list_rooms(&alice.id, "lobby", None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.conversation.id)
        .collect();
    assert_eq!(found, HashSet::from([first, second]));
}

pub(crate) async fn listing_rooms_honours_the_limit<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    for (i, room) in ["r4", "R1", "r3", "R2", "other"].into_iter().enumerate() {
        create_room(&store, room, Visibility::Public, &alice, ts(i as i64)).await;
    }
    assert_eq!(
        listed(&store, &alice, "r", 50).await,
        ["R1", "R2", "r3", "r4"]
    );
    assert_eq!(
        listed(&store, &alice, "r", 4).await,
        ["R1", "R2", "r3", "r4"]
    );
    assert_eq!(listed(&store, &alice, "r", 2).await, ["R1", "R2"]);
    assert_eq!(listed(&store, &alice, "R", 1).await, ["R1"]);
    assert!(listed(&store, &alice, "r", 0).await.is_empty());
    assert_eq!(listed(&store, &alice, "", 3).await, ["other", "R1", "R2"]);
}

pub(crate) async fn the_limit_counts_only_rooms_the_viewer_may_see<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    create_room(&store, "a-private", Visibility::Private, &alice, ts(0)).await;
    create_room(&store, "b-private", Visibility::Private, &alice, ts(1)).await;
    create_room(&store, "c-public", Visibility::Public, &alice, ts(2)).await;
    create_room(&store, "d-public", Visibility::Public, &alice, ts(3)).await;
    assert_eq!(listed(&store, &bob, "", 2).await, ["c-public", "d-public"]);
}

pub(crate) async fn direct_conversations_are_never_listed_as_rooms<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    direct(&store, &alice, &bob).await;
    direct(&store, &alice, &alice).await;
    assert_eq!(
        store.list_rooms(&alice.id, "", None, 50).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.list_rooms(&bob.id, "", None, 50).await.unwrap(),
        vec![]
    );

    let room = create_room(&store, "Lobby", Visibility::Public, &alice, ts(1)).await;
    let rooms = store.list_rooms(&alice.id, "", None, 50).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].conversation.id, room);
}

pub(crate) async fn a_listed_room_is_as_the_viewer_sees_it<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let eve = register(&store, "eve").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    send_many(&store, &room, &alice, 2).await;
    let newest = send(&store, &room, &bob, "m3").await;
    assert!(store.advance_read_marker(&room, &bob.id, 2).await.unwrap());

    let of = |viewer: &User| {
        let (store, id) = (store.clone(), viewer.id.clone());
        async move {
            let mut rooms = store.list_rooms(&id, "lobby", None, 50).await.unwrap();
            assert_eq!(rooms.len(), 1, "{rooms:?}");
            rooms.remove(0)
        }
    };
    let bobs = of(&bob).await;
    assert_eq!(bobs, summary_for(&store, &room, &bob).await);
    assert_eq!(bobs.last_read_seq, 2);
    assert_eq!(bobs.last_message, Some(newest));

    let eves = of(&eve).await;
    assert_eq!(eves, summary_for(&store, &room, &eve).await);
    assert_eq!(eves.conversation.last_seq, 3);
    assert_eq!(eves.member_count, 2);
    assert_eq!(eves.members, vec![alice.clone(), bob.clone()]);
    assert_eq!(eves.last_read_seq, 0);
    assert_eq!(eves.last_message, None);
}

// ---------------------------------------------------------------- message

pub(crate) async fn a_message_is_found_by_its_conversation_and_id<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (first, _) = stored(
        store
            .append(new_message(&ab, &alice, "first", Some("k1"), ts(1)))
            .await
            .unwrap(),
    );
    let second = send(&store, &ab, &bob, "second").await;
    assert_eq!(store.message(&ab, &first.id).await.unwrap(), Some(first));
    assert_eq!(store.message(&ab, &second.id).await.unwrap(), Some(second));
}

pub(crate) async fn a_message_looked_up_under_another_conversation_is_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0))]).await;
    let message = send(&store, &ab, &alice, "private").await;
    send(&store, &room, &alice, "public").await;
    assert_eq!(store.message(&room, &message.id).await.unwrap(), None);
}

pub(crate) async fn an_unknown_message_is_none<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &own, &alice, "note").await;
    assert_eq!(
        store
            .message(&own, &MessageId::new("no-such-message"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .message(&ConversationId::new("no-such-conversation"), &message.id)
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------- update_message

pub(crate) async fn an_edit_replaces_the_body_and_sets_edited_at_keeping_seq_and_created_at<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (original, _) = stored(
        store
            .append(new_message(&ab, &alice, "helo", Some("k1"), ts(10)))
            .await
            .unwrap(),
    );
    send(&store, &ab, &bob, "later").await;

    let edited = store
        .update_message(&ab, &original.id, edit("hello", ts(20)))
        .await
        .unwrap();
    let expected = Message {
        body: "hello".into(),
        edited_at: Some(ts(20)),
        ..original.clone()
    };
    assert_eq!(edited, Some(expected.clone()));
    assert_eq!(
        store.message(&ab, &original.id).await.unwrap(),
        Some(expected.clone())
    );

    // A second edit replaces the first.
    let again = store
        .update_message(&ab, &original.id, edit("hello!", ts(30)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.body, "hello!");
    assert_eq!(again.edited_at, Some(ts(30)));
    assert_eq!((again.seq, again.created_at), (1, ts(10)));
    assert!(!again.deleted);

    // No new seq, and the idempotency key still finds the (edited) original.
    assert_eq!(last_seq(&store, &ab, &alice).await, 2);
    let resent = store
        .append(new_message(&ab, &alice, "helo", Some("k1"), ts(40)))
        .await
        .unwrap();
    assert_eq!(resent, AppendOutcome::Duplicate(again));
}

pub(crate) async fn a_delete_empties_the_body_and_keeps_seq_and_edited_at<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let edited_first = send_at(&store, &ab, &alice, "first", ts(10)).await;
    let never_edited = send_at(&store, &ab, &alice, "second", ts(11)).await;
    store
        .update_message(&ab, &edited_first.id, edit("first, edited", ts(20)))
        .await
        .unwrap()
        .unwrap();

    let deleted = store
        .update_message(&ab, &edited_first.id, MessageChange::Delete)
        .await
        .unwrap();
    let expected = Message {
        body: String::new(),
        edited_at: Some(ts(20)),
        deleted: true,
        ..edited_first.clone()
    };
    assert_eq!(deleted, Some(expected.clone()));
    assert_eq!(
        store.message(&ab, &edited_first.id).await.unwrap(),
        Some(expected)
    );

    let deleted = store
        .update_message(&ab, &never_edited.id, MessageChange::Delete)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        deleted,
        Message {
            body: String::new(),
            deleted: true,
            ..never_edited
        }
    );
    assert_eq!(deleted.edited_at, None);
    // Deleting keeps the conversation's seqs.
    assert_eq!(last_seq(&store, &ab, &alice).await, 2);
    assert_eq!(send(&store, &ab, &bob, "next").await.seq, 3);
}

pub(crate) async fn deleting_a_deleted_message_answers_it_unchanged<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &own, &alice, "oops").await;
    let once = store
        .update_message(&own, &message.id, MessageChange::Delete)
        .await
        .unwrap();
    let twice = store
        .update_message(&own, &message.id, MessageChange::Delete)
        .await
        .unwrap();
    assert!(once.as_ref().is_some_and(|m| m.deleted));
    assert_eq!(once, twice);
}

pub(crate) async fn history_and_summaries_show_updated_messages_in_place<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "Lobby", &[(&alice, ts(0)), (&bob, ts(1))]).await;
    let one = send_at(&store, &room, &alice, "one", ts(10)).await;
    let two = send_at(&store, &room, &bob, "two", ts(11)).await;
    let three = send_at(&store, &room, &alice, "three", ts(12)).await;

    let one = store
        .update_message(&room, &one.id, edit("one, edited", ts(20)))
        .await
        .unwrap()
        .unwrap();
    let three = store
        .update_message(&room, &three.id, MessageChange::Delete)
        .await
        .unwrap()
        .unwrap();

    let history = store.history(&room, query(None, None, 50)).await.unwrap();
    assert_eq!(
        history.messages,
        vec![one.clone(), two.clone(), three.clone()]
    );
    assert_eq!(history.messages[0].body, "one, edited");
    assert_eq!(history.messages[2].body, "");
    assert!(history.messages[2].deleted);
    let forwards = store
        .history(&room, query(None, Some(0), 50))
        .await
        .unwrap();
    assert_eq!(forwards.messages, vec![one, two, three.clone()]);

    // The newest message, deleted, is still the last message, without text.
    assert_eq!(
        summary_for(&store, &room, &bob).await.last_message,
        Some(three.clone())
    );
    assert_eq!(
        store.conversations_of(&alice.id).await.unwrap()[0].last_message,
        Some(three)
    );
}

pub(crate) async fn a_deleted_body_is_gone_from_the_database<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let secret = send(&store, &ab, &alice, "my password is hunter2").await;
    let edited = send(&store, &ab, &alice, "draft").await;
    let kept = send(&store, &ab, &bob, "keep me").await;
    assert_eq!(
        f.raw_message(&secret.id).await,
        ("my password is hunter2".to_owned(), false)
    );

    store
        .update_message(&ab, &secret.id, MessageChange::Delete)
        .await
        .unwrap()
        .unwrap();
    store
        .update_message(&ab, &edited.id, edit("edited then deleted", ts(5)))
        .await
        .unwrap()
        .unwrap();
    store
        .update_message(&ab, &edited.id, MessageChange::Delete)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(f.raw_message(&secret.id).await, (String::new(), true));
    assert_eq!(f.raw_message(&edited.id).await, (String::new(), true));
    assert_eq!(f.raw_message(&kept.id).await, ("keep me".to_owned(), false));
}

pub(crate) async fn updating_an_unknown_message_is_none_and_changes_nothing<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &ab, &alice, "original").await;
    let unknown = MessageId::new("no-such-message");

    for change in [edit("changed", ts(5)), MessageChange::Delete] {
        assert_eq!(
            store
                .update_message(&ab, &unknown, change.clone())
                .await
                .unwrap(),
            None
        );
        // The right id under the wrong conversation touches nothing.
        assert_eq!(
            store
                .update_message(&own, &message.id, change.clone())
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .update_message(
                    &ConversationId::new("no-such-conversation"),
                    &message.id,
                    change
                )
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store.message(&ab, &message.id).await.unwrap(),
        Some(message.clone())
    );
    assert_eq!(
        f.raw_message(&message.id).await,
        ("original".to_owned(), false)
    );
    assert_eq!(
        store
            .history(&ab, query(None, None, 50))
            .await
            .unwrap()
            .messages,
        vec![message]
    );
}

// ---------------------------------------------------------------- several stores, odd text

pub(crate) async fn concurrent_retries_of_one_client_msg_id_store_it_once<F: Fixture>(f: F) {
    let store = f.store().clone();
    let other = f.another().await;
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let tasks = 20;
    let barrier = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            // Half the retries reach the other store, as if they had been
            // sent to another server process.
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let (barrier, message) = (
                barrier.clone(),
                new_message(&ab, &alice, &format!("try {i}"), Some("once"), ts(i as i64)),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(message).await.expect("append")
            })
        })
        .collect();
    let mut originals = Vec::new();
    let mut duplicates = Vec::new();
    for handle in handles {
        match handle.await.unwrap() {
            AppendOutcome::Stored { message, .. } => originals.push(message),
            AppendOutcome::Duplicate(message) => duplicates.push(message),
        }
    }
    assert_eq!(originals.len(), 1, "{originals:?}");
    let original = &originals[0];
    assert_eq!(original.seq, 1);
    assert!(duplicates.iter().all(|d| d == original), "{duplicates:?}");
    assert_eq!(duplicates.len(), tasks - 1);
    assert_eq!(last_seq(&store, &ab, &alice).await, 1);
    assert_eq!(
        store
            .history(&ab, query(None, None, 50))
            .await
            .unwrap()
            .messages,
        originals
    );
    assert_eq!(send(&store, &ab, &bob, "next").await.seq, 2);
}

pub(crate) async fn two_stores_on_one_database_append_dense_seqs<F: Fixture>(f: F) {
    const TASKS: u64 = 10;
    const EACH: u64 = 20;
    let first = f.store().clone();
    let second = f.another().await;
    let alice = register(&first, "alice").await;
    let bob = register(&first, "bob").await;
    let ab = direct(&first, &alice, &bob).await;
    // What one store wrote, the other sees.
    assert_eq!(second.user(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(direct(&second, &bob, &alice).await, ab);

    let barrier = Arc::new(Barrier::new(2 * TASKS as usize));
    let handles: Vec<_> = (0..2 * TASKS)
        .map(|t| {
            let store = if t % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let sender = if t < TASKS {
                alice.clone()
            } else {
                bob.clone()
            };
            let (barrier, ab) = (barrier.clone(), ab.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let body = format!("task {t} message {i}");
                    seqs.push(send(&store, &ab, &sender, &body).await.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        let seqs = handle.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    let total = 2 * TASKS * EACH;
    assert_eq!(sorted(all), (1..=total).collect::<Vec<_>>());
    for store in [&first, &second] {
        let (seqs, has_more) = page(store, &ab, None, Some(0), 500).await;
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        assert!(!has_more);
        assert_eq!(last_seq(store, &ab, &bob).await, total);
    }
}

pub(crate) async fn stores_taking_turns_on_one_database_see_each_others_appends<F: Fixture>(f: F) {
    let (first, second) = (f.store().clone(), f.another().await);
    let alice = register(&first, "alice").await;
    let bob = register(&first, "bob").await;
    let ab = direct(&first, &alice, &bob).await;
    // A store may remember a conversation once it has written to it; here
    // each writes behind the other's back, in turns.
    for (i, store) in [&first, &second, &first, &second, &second, &first]
        .into_iter()
        .enumerate()
    {
        let message = send_at(store, &ab, &alice, "hi", ts(i as i64)).await;
        assert_eq!(message.seq, i as u64 + 1, "append {i}");
    }
}

pub(crate) async fn append_all_stores_in_order_and_each_message_fails_on_its_own<F: Fixture>(f: F) {
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let mallory = register(&store, "mallory").await;
    let ab = direct(&store, &alice, &bob).await;
    let results = store
        .append_all(vec![
            new_message(&ab, &alice, "one", Some("k-1"), ts(1)),
            new_message(&ab, &mallory, "not a member", None, ts(2)),
            new_message(&ab, &bob, "two", None, ts(3)),
            new_message(&ab, &alice, "one again", Some("k-1"), ts(4)),
            new_message(&ConversationId::new("nowhere"), &alice, "lost", None, ts(5)),
        ])
        .await;
    let [one, refused, two, retry, unknown] = <[_; 5]>::try_from(results).expect("five results");
    let (one, members) = stored(one.unwrap());
    assert_eq!((one.seq, one.body.as_str()), (1, "one"));
    assert_eq!(sorted(members), sorted(ids(&[&alice, &bob])));
    assert!(
        matches!(refused, Err(AppendError::NotMember)),
        "{refused:?}"
    );
    assert_eq!(stored(two.unwrap()).0.seq, 2);
    assert_eq!(retry.unwrap(), AppendOutcome::Duplicate(one));
    assert!(
        matches!(unknown, Err(AppendError::NoSuchConversation)),
        "{unknown:?}"
    );
    let (seqs, _) = page(&store, &ab, None, Some(0), 10).await;
    assert_eq!(seqs, vec![1, 2]);
}

pub(crate) async fn batches_spanning_conversations_in_opposite_orders_from_two_stores_all_commit<
    F: Fixture,
>(
    f: F,
) {
    // Two stores (two server processes) send batches that span the same
    // two conversations in opposite orders, at the same moments, while
    // single appends go to both: a store that locked the conversations in
    // the order of the batch would deadlock here.
    const ROUNDS: usize = 15;
    let first = f.store().clone();
    let second = f.another().await;
    let alice = register(&first, "alice").await;
    let bob = register(&first, "bob").await;
    let carol = register(&first, "carol").await;
    let ab = direct(&first, &alice, &bob).await;
    let ac = direct(&first, &alice, &carol).await;
    assert!(first.append_all(Vec::new()).await.is_empty());

    // One start for all: a task that fails later must not leave the others
    // waiting for it.
    let barrier = Arc::new(Barrier::new(3));
    let batches: Vec<_> = [
        (first.clone(), [ab.clone(), ac.clone()]),
        (second.clone(), [ac.clone(), ab.clone()]),
    ]
    .into_iter()
    .enumerate()
    .map(|(t, (store, [x, y]))| {
        let (barrier, alice) = (barrier.clone(), alice.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            for round in 0..ROUNDS {
                let batch: Vec<_> = [&x, &y, &x]
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| new_message(c, &alice, &format!("{t}.{round}.{i}"), None, ts(1)))
                    .collect();
                let results = store.append_all(batch.clone()).await;
                assert_eq!(results.len(), batch.len());
                let seqs: Vec<u64> = batch
                    .iter()
                    .zip(results)
                    .map(|(sent, result)| {
                        let (message, _) = stored(result.expect("every message is stored"));
                        assert_eq!(message.conversation_id, sent.conversation_id);
                        assert_eq!(message.body, sent.body.as_str());
                        message.seq
                    })
                    .collect();
                assert!(
                    seqs[0] < seqs[2],
                    "in order within a conversation: {seqs:?}"
                );
            }
        })
    })
    .collect();
    let singles = {
        let (ab, ac, alice) = (ab.clone(), ac.clone(), alice.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            for round in 0..ROUNDS {
                for c in [&ab, &ac] {
                    send(&first, c, &alice, &format!("single {round}")).await;
                }
            }
        })
    };
    for task in batches.into_iter().chain([singles]) {
        task.await.unwrap();
    }
    // Per round, each conversation took two messages from one batch, one
    // from the other, and one single append.
    let total = 4 * ROUNDS as u64;
    for c in [&ab, &ac] {
        let (seqs, has_more) = page(&second, c, None, Some(0), 500).await;
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        assert!(!has_more);
        assert_eq!(last_seq(&second, c, &alice).await, total);
    }
}

pub(crate) async fn text_with_nul_characters_is_stored_and_read_back_as_returned<F: Fixture>(f: F) {
    // The protocol allows U+0000; a backend that cannot store it may store
    // something else, but must accept it and answer consistently.
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (message, _) = stored(
        store
            .append(new_message(&ab, &alice, "a\0b", Some("k\0"), ts(1)))
            .await
            .unwrap(),
    );
    assert_eq!(message.body.chars().count(), 3);
    let page = store.history(&ab, query(None, None, 10)).await.unwrap();
    assert_eq!(page.messages, vec![message.clone()]);
    let retry = store
        .append(new_message(&ab, &alice, "again", Some("k\0"), ts(2)))
        .await
        .unwrap();
    assert_eq!(retry, AppendOutcome::Duplicate(message.clone()));
    let edited = store
        .update_message(&ab, &message.id, edit("c\0d", ts(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.message(&ab, &message.id).await.unwrap(), Some(edited));

    let room = create_room(&store, "nul\0room", Visibility::Public, &alice, ts(4)).await;
    let rooms = store.list_rooms(&alice.id, "nul", None, 10).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0], summary_for(&store, &room, &alice).await);

    // Ids and prefixes with one find nothing rather than fail.
    let (ghost_conversation, ghost_user) =
        (ConversationId::new("no\0such"), UserId::new("no\0such"));
    assert_eq!(
        store.access(&ghost_conversation, &alice.id).await.unwrap(),
        Access::NoSuchConversation
    );
    assert_eq!(store.user(&ghost_user).await.unwrap(), None);
    assert_eq!(store.users_by_prefix("al\0", 10).await.unwrap(), vec![]);
    assert_eq!(
        store.list_rooms(&alice.id, "x\0", None, 10).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store
            .message(&ab, &MessageId::new("no\0such"))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn editing_a_deleted_message_leaves_it_deleted_and_blank<F: Fixture>(f: F) {
    // The use case refuses to edit a deleted message, but an edit may race
    // the delete past that check: the store must not bring text back.
    let store = f.store().clone();
    let alice = register(&store, "alice").await;
    let own = direct(&store, &alice, &alice).await;
    let message = send(&store, &own, &alice, "gone soon").await;
    let deleted = store
        .update_message(&own, &message.id, MessageChange::Delete)
        .await
        .unwrap();
    let after = store
        .update_message(&own, &message.id, edit("back again", ts(9)))
        .await
        .unwrap();
    assert_eq!(after, deleted);
    assert_eq!(f.raw_message(&message.id).await, (String::new(), true));
}

// ---------------------------------------------------------------- blocks

async fn blocked_names<S: Store>(store: &S, blocker: &User) -> Vec<String> {
    store
        .blocked_by(&blocker.id)
        .await
        .expect("blocked_by answers")
        .into_iter()
        .map(|u| u.username.as_str().to_owned())
        .collect()
}

async fn append_err<S: Store>(
    store: &S,
    conversation: &ConversationId,
    sender: &User,
) -> AppendError {
    store
        .append(new_message(conversation, sender, "hi", None, ts(2)))
        .await
        .expect_err("the append is refused")
}

pub(crate) async fn a_block_is_recorded_once_and_listed_earliest_first<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    let zed = register(&store, "zed").await;
    // In one millisecond, and against the order of the ids.
    assert!(store.block(&ann.id, &zed.id, ts(1)).await.unwrap());
    assert!(store.block(&ann.id, &bob.id, ts(1)).await.unwrap());
    assert!(
        !store.block(&ann.id, &zed.id, ts(3)).await.unwrap(),
        "blocking again changes nothing"
    );
    assert_eq!(blocked_names(&store, &ann).await, ["zed", "bob"]);
    assert!(blocked_names(&store, &zed).await.is_empty(), "one-way");
}

pub(crate) async fn unblocking_removes_the_block_once<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    assert!(!store.unblock(&ann.id, &bob.id).await.unwrap(), "none yet");
    store.block(&ann.id, &bob.id, ts(1)).await.unwrap();
    assert!(!store.unblock(&bob.id, &ann.id).await.unwrap(), "one-way");
    assert!(store.unblock(&ann.id, &bob.id).await.unwrap());
    assert!(!store.unblock(&ann.id, &bob.id).await.unwrap());
    assert!(blocked_names(&store, &ann).await.is_empty());
}

pub(crate) async fn blockers_of_lists_everyone_who_blocks_a_user<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    let cid = register(&store, "cid").await;
    store.block(&ann.id, &cid.id, ts(1)).await.unwrap();
    store.block(&bob.id, &cid.id, ts(2)).await.unwrap();
    store.block(&cid.id, &ann.id, ts(3)).await.unwrap();
    let blockers = store.blockers_of(&cid.id).await.unwrap();
    assert_eq!(sorted(blockers), ids(&[&ann, &bob]));
    assert!(store.blockers_of(&bob.id).await.unwrap().is_empty());
}

pub(crate) async fn a_blocked_sender_cannot_append_to_the_direct_conversation_until_unblocked<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &ann, &bob).await;
    // Both have written first, so whatever the store remembers of the
    // conversation predates the block.
    send(&store, &ab, &ann, "hello").await;
    send(&store, &ab, &bob, "hi").await;
    store.block(&ann.id, &bob.id, ts(1)).await.unwrap();
    let err = append_err(&store, &ab, &bob).await;
    assert!(matches!(err, AppendError::Blocked), "{err:?}");
    assert_eq!(last_seq(&store, &ab, &ann).await, 2, "nothing stored");
    assert_eq!(
        send(&store, &ab, &ann, "the blocker still writes")
            .await
            .seq,
        3
    );
    store.unblock(&ann.id, &bob.id).await.unwrap();
    assert_eq!(send(&store, &ab, &bob, "again").await.seq, 4);
}

pub(crate) async fn a_block_leaves_rooms_open_to_the_blocked_user<F: Fixture>(f: F) {
    let store = f.store().clone();
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    let room = seed_room(&store, "lobby", &[(&ann, ts(0)), (&bob, ts(1))]).await;
    send(&store, &room, &bob, "before").await;
    store.block(&ann.id, &bob.id, ts(2)).await.unwrap();
    let (_, members) = stored(
        store
            .append(new_message(&room, &bob, "after", None, ts(3)))
            .await
            .expect("rooms stay open"),
    );
    assert_eq!(sorted(members), ids(&[&ann, &bob]));
}

pub(crate) async fn a_block_by_another_store_on_one_database_closes_the_direct_conversation<
    F: Fixture,
>(
    f: F,
) {
    let store = f.store().clone();
    let other = f.another().await;
    let ann = register(&store, "ann").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &ann, &bob).await;
    send(&store, &ab, &bob, "remembered").await;
    other.block(&ann.id, &bob.id, ts(1)).await.unwrap();
    let err = append_err(&store, &ab, &bob).await;
    assert!(matches!(err, AppendError::Blocked), "{err:?}");
    other.unblock(&ann.id, &bob.id).await.unwrap();
    assert_eq!(send(&store, &ab, &bob, "open again").await.seq, 2);
}
