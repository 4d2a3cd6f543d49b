//! Unit tests of blocking: the three use cases, and how a block changes
//! sends, invitations, presence events and what presence shows, with every
//! port mocked.
//!
//! A child of the service's test module: it reuses its [`Harness`], whose
//! block store answers "nobody blocks anybody" to whatever a test did not
//! set up.
use super::rooms::{
    NO_USER, assert_forbidden, assert_not_found, expect_no_membership_change, expect_user_lookup,
    public_room,
};
use super::*;

use crate::domain::membership::Denied;

fn ann() -> Caller {
    caller("ann", "ann-1")
}

/// The blocker `of` blocks exactly `names`.
fn expect_blocked_by(h: &mut Harness, of: &str, names: &[&str]) {
    let (who, blocked) = (uid(of), names.iter().map(|n| user(n)).collect::<Vec<_>>());
    h.blocks
        .expect_blocked_by()
        .withf(move |u| *u == who)
        .returning(move |_| Ok(blocked.clone()));
}

/// `names` block `of`.
fn expect_blockers_of(h: &mut Harness, of: &str, names: &[&str]) {
    let (who, blockers) = (uid(of), uids(names));
    h.blocks
        .expect_blockers_of()
        .withf(move |u| *u == who)
        .returning(move |_| Ok(blockers.clone()));
}

fn to(names: &[&str]) -> Delivery {
    Delivery {
        users: uids(names),
        except: None,
    }
}

// ------------------------------------------------------------ block_user

fn expect_block(h: &mut Harness, blocker: &str, blocked: &str, new: bool) {
    let (a, b) = (uid(blocker), uid(blocked));
    h.blocks
        .expect_block()
        .withf(move |x, y, now| *x == a && *y == b && *now == NOW)
        .times(1)
        .returning(move |_, _, _| Ok(new));
}

#[tokio::test]
async fn blocking_a_contact_records_it_and_shows_them_the_blocker_offline_and_never_seen() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    expect_block(&mut h, "ann", "bob", true);
    h.expect_contacts("ann", &["cid", "bob"]);
    h.expect_delivery(
        to(&["bob"]),
        Event::Presence(presence(user("ann"), Status::Offline, None)),
    );
    h.build().block_user(&ann(), &uid("bob")).await.unwrap();
}

#[tokio::test]
async fn blocking_a_stranger_records_it_and_tells_nobody() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    expect_block(&mut h, "ann", "bob", true);
    h.expect_contacts("ann", &["cid"]);
    h.expect_no_delivery();
    h.build().block_user(&ann(), &uid("bob")).await.unwrap();
}

#[tokio::test]
async fn blocking_again_acks_and_tells_nobody() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    expect_block(&mut h, "ann", "bob", false);
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    h.build().block_user(&ann(), &uid("bob")).await.unwrap();
}

#[tokio::test]
async fn blocking_or_unblocking_oneself_is_a_bad_request_before_anything_is_looked_up() {
    let mut h = Harness::new();
    h.users.expect_user().never();
    h.blocks.expect_block().never();
    h.blocks.expect_unblock().never();
    h.expect_no_delivery();
    let service = h.build();
    let err = service.block_user(&ann(), &uid("ann")).await.unwrap_err();
    assert!(matches!(err, BlockError::Yourself), "{err:?}");
    let err = service.unblock_user(&ann(), &uid("ann")).await.unwrap_err();
    assert!(matches!(err, BlockError::Yourself), "{err:?}");
}

#[tokio::test]
async fn blocking_or_unblocking_an_unknown_user_is_not_found_and_records_nothing() {
    let mut h = Harness::new();
    h.users.expect_user().times(2).returning(|_| Ok(None));
    h.blocks.expect_block().never();
    h.blocks.expect_unblock().never();
    h.expect_no_delivery();
    let service = h.build();
    let err = service.block_user(&ann(), &uid("ghost")).await.unwrap_err();
    assert_not_found(&err, NO_USER);
    let err = service
        .unblock_user(&ann(), &uid("ghost"))
        .await
        .unwrap_err();
    assert_not_found(&err, NO_USER);
}

#[tokio::test]
async fn a_block_the_store_cannot_record_fails_internally_and_tells_nobody() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    h.blocks
        .expect_block()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.expect_no_delivery();
    let err = h.build().block_user(&ann(), &uid("bob")).await.unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ unblock_user

fn expect_unblock(h: &mut Harness, removed: bool) {
    h.blocks
        .expect_unblock()
        .withf(|x, y| *x == uid("ann") && *y == uid("bob"))
        .times(1)
        .returning(move |_, _| Ok(removed));
}

#[tokio::test]
async fn unblocking_a_contact_shows_them_the_blockers_presence_again() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    expect_unblock(&mut h, true);
    h.presence
        .expect_live()
        .withf(|ids| ids == uids(&["ann"]).as_slice())
        .times(1)
        .returning(|_| {
            let live = LiveStatus {
                status: ActiveStatus::Away,
                last_active: t(5_000),
            };
            Ok(HashMap::from([(uid("ann"), live)]))
        });
    h.users
        .expect_users_last_seen()
        .times(1)
        .returning(|_| Ok(vec![(user("ann"), Some(t(1_000)))]));
    // As bob sees ann (they share a conversation), then whom ann shares one with.
    h.expect_contacts("bob", &["ann"]);
    h.expect_contacts("ann", &["bob"]);
    h.expect_delivery(
        to(&["bob"]),
        Event::Presence(presence(user("ann"), Status::Away, Some(t(5_000)))),
    );
    h.build().unblock_user(&ann(), &uid("bob")).await.unwrap();
}

#[tokio::test]
async fn unblocking_someone_not_blocked_acks_and_tells_nobody() {
    let mut h = Harness::new();
    expect_user_lookup(&mut h, "bob", true);
    expect_unblock(&mut h, false);
    h.messages.expect_contacts().never();
    h.presence.expect_live().never();
    h.expect_no_delivery();
    h.build().unblock_user(&ann(), &uid("bob")).await.unwrap();
}

// ------------------------------------------------------------ blocked_users

#[tokio::test]
async fn the_blocked_list_is_the_stores_in_its_order() {
    let mut h = Harness::new();
    expect_blocked_by(&mut h, "ann", &["zed", "bob"]);
    let got = h.build().blocked_users(&ann()).await.unwrap();
    assert_eq!(got, vec![user("zed"), user("bob")]);
}

// ------------------------------------------------------------ sends and invitations

#[tokio::test]
async fn a_message_the_store_refuses_as_blocked_is_forbidden() {
    let err = super::send_failing_with(AppendError::Blocked).await;
    assert_forbidden(&err, Denied::Blocked);
}

#[tokio::test]
async fn inviting_someone_who_blocks_the_caller_is_forbidden_and_adds_nobody() {
    let mut h = Harness::new();
    h.expect_access(
        "r1",
        "ann",
        Access::Member(public_room("r1"), Membership { last_read_seq: 0 }),
    );
    expect_user_lookup(&mut h, "bob", true);
    expect_blockers_of(&mut h, "ann", &["bob"]);
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    let err = h
        .build()
        .invite_to_room(&ann(), &conv_id("r1"), &uid("bob"))
        .await
        .unwrap_err();
    assert_forbidden(&err, Denied::Blocked);
}

#[tokio::test]
async fn a_blocker_does_not_see_the_blocked_user_typing_in_their_direct_conversation() {
    let mut h = Harness::new();
    h.expect_access("d1", "bob", member("d1", 3, 3));
    h.expect_members("d1", &["ann", "bob"]);
    expect_blockers_of(&mut h, "bob", &["ann"]);
    h.expect_no_delivery();
    h.build()
        .typing(&caller("bob", "bob-1"), &conv_id("d1"), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn typing_in_a_room_reaches_a_member_who_blocks_the_typist() {
    let mut h = Harness::new();
    h.expect_access(
        "r1",
        "bob",
        Access::Member(public_room("r1"), Membership { last_read_seq: 0 }),
    );
    h.expect_members("r1", &["ann", "bob"]);
    h.blocks.expect_blockers_of().never();
    h.expect_delivery(
        to(&["ann"]),
        Event::Typing {
            conversation_id: conv_id("r1"),
            user_id: uid("bob"),
            active: true,
        },
    );
    h.build()
        .typing(&caller("bob", "bob-1"), &conv_id("r1"), true)
        .await
        .unwrap();
}

// ------------------------------------------------------------ presence

#[tokio::test]
async fn presence_events_never_reach_the_users_the_subject_blocks() {
    let mut h = Harness::new();
    h.presence
        .expect_open()
        .times(1)
        .returning(|_, _, _, _| Ok(true));
    h.expect_contacts("ann", &["bob", "cid", "dan"]);
    expect_blocked_by(&mut h, "ann", &["bob", "dan"]);
    h.expect_delivery(
        to(&["cid"]),
        Event::Presence(presence(user("ann"), Status::Online, Some(NOW))),
    );
    h.build().open_session(&ann()).await.unwrap();
}

#[tokio::test]
async fn a_blocker_shows_offline_and_never_seen_and_a_stranger_without_last_seen() {
    let mut h = Harness::new();
    let asked = uids(&["bob", "cid", "dan", "viewer"]);
    let live = LiveStatus {
        status: ActiveStatus::Online,
        last_active: t(9_000),
    };
    h.presence.expect_live().times(1).returning(move |_| {
        Ok(HashMap::from([
            (uid("bob"), live),
            (uid("cid"), live),
            (uid("viewer"), live),
        ]))
    });
    h.users.expect_users_last_seen().times(1).returning(|_| {
        Ok(vec![
            (user("bob"), Some(t(1_000))),
            (user("cid"), Some(t(1_000))),
            (user("dan"), Some(t(2_000))),
            (user("viewer"), None),
        ])
    });
    // bob blocks the viewer; cid shares a conversation with them, dan none.
    expect_blockers_of(&mut h, "viewer", &["bob"]);
    h.expect_contacts("viewer", &["bob", "cid"]);
    let got = h
        .build()
        .presence_of(&caller("viewer", "v-1"), asked)
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            presence(user("bob"), Status::Offline, None),
            presence(user("cid"), Status::Online, Some(t(9_000))),
            presence(user("dan"), Status::Offline, None),
            presence(user("viewer"), Status::Online, Some(t(9_000))),
        ]
    );
}

#[tokio::test]
async fn connected_users_leave_out_who_blocks_the_caller_and_keep_the_page_full() {
    let mut h = Harness::new();
    expect_blockers_of(&mut h, "ann", &["bob"]);
    h.presence
        .expect_online_users()
        .withf(|limit| *limit == 3)
        .times(1)
        .returning(|_| Ok(vec![user("bob"), user("cid"), user("dan")]));
    let got = h
        .build()
        .connected_users(&ann(), page(Some(2)))
        .await
        .unwrap();
    assert_eq!(got, vec![user("cid"), user("dan")]);
}

#[tokio::test]
async fn found_users_who_block_the_caller_show_offline() {
    let mut h = Harness::new();
    h.users
        .expect_users_by_prefix()
        .times(1)
        .returning(|_, _| Ok(vec![user("bob"), user("bud")]));
    h.presence.expect_live().times(1).returning(|_| {
        let live = LiveStatus {
            status: ActiveStatus::Online,
            last_active: NOW,
        };
        Ok(HashMap::from([(uid("bob"), live), (uid("bud"), live)]))
    });
    expect_blockers_of(&mut h, "ann", &["bob"]);
    let got = h
        .build()
        .find_users(&uid("ann"), "b", page(None))
        .await
        .unwrap();
    assert_eq!(got, vec![(user("bob"), false), (user("bud"), true)]);
}
