//! Unit tests of the room use cases (create, join, invite, leave, list) and
//! of editing and deleting messages, with every port mocked.
//!
//! A child of the service's test module: it reuses its [`Harness`] and
//! fixtures. As there, every mock starts with no expectation, so a use case
//! that calls a port the contract does not need fails its test.
use super::*;

use std::future::Future;

use crate::domain::membership::Denied;
use crate::domain::membership::tests::{ROLES, Role};

// ------------------------------------------------------------ fixtures

const MEMBER_ROLES: [Role; 3] = [Role::Owner, Role::Member, Role::Invited];

const NON_MEMBER_ROLES: [Role; 2] = [Role::FormerMember, Role::Stranger];

/// The members of every room and direct conversation in these tests: one
/// user per member role.
const MEMBERS: [&str; 3] = ["olga", "mia", "ivan"];

impl Role {
    /// The user who has this role.
    fn name(self) -> &'static str {
        match self {
            Role::Owner => "olga",
            Role::Member => "mia",
            Role::Invited => "ivan",
            Role::FormerMember => "fred",
            Role::Stranger => "sam",
        }
    }

    /// That user on their first session.
    fn caller(self) -> Caller {
        caller(self.name(), &self.session_raw())
    }

    fn session_raw(self) -> String {
        format!("{}-1", self.name())
    }

    /// What the store answers about this role's standing in `conv`.
    fn access(self, conv: Conversation) -> Access {
        if self.is_member() {
            Access::Member(conv, Membership { last_read_seq: 4 })
        } else {
            Access::NotMember(conv)
        }
    }
}

fn room(id: &str, visibility: Visibility) -> Conversation {
    Conversation {
        id: conv_id(id),
        kind: ConversationKind::Room {
            name: "General".to_owned(),
            visibility,
        },
        last_seq: 9,
    }
}

pub(super) fn public_room(id: &str) -> Conversation {
    room(id, Visibility::Public)
}

fn private_room(id: &str) -> Conversation {
    room(id, Visibility::Private)
}

fn direct(id: &str) -> Conversation {
    conversation(id, 9)
}

/// Both kinds of room.
fn rooms(id: &str) -> [Conversation; 2] {
    [public_room(id), private_room(id)]
}

/// A conversation as a store would summarise it for some viewer.
fn summary(conv: Conversation, members: &[&str], last_read_seq: u64) -> ConversationSummary {
    ConversationSummary {
        conversation: conv,
        members: members.iter().map(|n| user(n)).collect(),
        member_count: members.len() as u64,
        last_read_seq,
        last_message: None,
    }
}

fn member_ev(conversation: &str, who: &str, action: MemberAction) -> Event {
    Event::Member {
        conversation_id: conv_id(conversation),
        user: user(who),
        action,
    }
}

fn all_but(names: &[&str], actor: &SessionId) -> Delivery {
    Delivery {
        users: uids(names),
        except: Some(actor.clone()),
    }
}

#[track_caller]
pub(super) fn assert_forbidden(err: &impl Failure, why: Denied) {
    assert_eq!(
        err.refused(),
        Some(why),
        "expected Refused({why:?}), got {err:?}"
    );
}

#[track_caller]
pub(super) fn assert_not_found(err: &impl Failure, what: Missing) {
    assert_eq!(
        err.missing(),
        Some(what),
        "expected {what:?} missing, got {err:?}"
    );
}

const NO_CONVERSATION: Missing = Missing::Conversation;
pub(super) const NO_USER: Missing = Missing::User;
const NO_MESSAGE: Missing = Missing::Message;

// ------------------------------------------------------------ expectations

/// The store answers `summary(conversation, viewer)` once with `found`.
fn expect_summary(
    h: &mut Harness,
    conversation: &str,
    viewer: &str,
    found: Option<ConversationSummary>,
) {
    let (c, v) = (conv_id(conversation), uid(viewer));
    h.messages
        .expect_summary()
        .withf(move |conv, who| *conv == c && *who == v)
        .times(1)
        .return_once(move |_, _| Ok(found));
}

/// `add_member(conversation, who, NOW)` once, answering `added`.
fn expect_add(h: &mut Harness, seq: &mut Sequence, conversation: &str, who: &str, added: bool) {
    let (c, u) = (conv_id(conversation), uid(who));
    h.messages
        .expect_add_member()
        .withf(move |conv, user, now| *conv == c && *user == u && *now == NOW)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _, _| Ok(added));
}

/// `remove_member(conversation, who)` once, answering `removed`.
fn expect_remove(
    h: &mut Harness,
    seq: &mut Sequence,
    conversation: &str,
    who: &str,
    removed: bool,
) {
    let (c, u) = (conv_id(conversation), uid(who));
    h.messages
        .expect_remove_member()
        .withf(move |conv, user| *conv == c && *user == u)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _| Ok(removed));
}

/// `member_ids(conversation)` once, after what `seq` holds so far.
fn expect_members_in(h: &mut Harness, seq: &mut Sequence, conversation: &str, names: &[&str]) {
    let c = conv_id(conversation);
    let members = uids(names);
    h.messages
        .expect_member_ids()
        .withf(move |conv| *conv == c)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_| Ok(members));
}

/// Exactly one delivery, of `event` to `delivery`, after what `seq` holds.
fn expect_delivery_in(h: &mut Harness, seq: &mut Sequence, delivery: Delivery, event: Event) {
    h.transport
        .expect_deliver()
        .withf(move |d, e| *d == delivery && *e == event)
        .times(1)
        .in_sequence(seq)
        .return_const(());
}

/// Nothing about membership changes, and nobody hears anything.
pub(super) fn expect_no_membership_change(h: &mut Harness) {
    h.messages.expect_add_member().never();
    h.messages.expect_remove_member().never();
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
}

/// `user(id)` once, answering the user when `exists`.
pub(super) fn expect_user_lookup(h: &mut Harness, name: &str, exists: bool) {
    let id = uid(name);
    let found = exists.then(|| user(name));
    h.users
        .expect_user()
        .withf(move |u| *u == id)
        .times(1)
        .return_once(move |_| Ok(found));
}

// ------------------------------------------------------------ create_room

fn room_name(raw: &str) -> RoomName {
    RoomName::parse(raw).unwrap()
}

#[tokio::test]
async fn creating_a_room_stores_it_with_the_name_visibility_creator_and_clocks_time() {
    for visibility in [Visibility::Public, Visibility::Private] {
        let mut h = Harness::new();
        let mut seq = Sequence::new();
        h.messages
            .expect_create_room()
            .withf(move |name, vis, creator, now| {
                *name == room_name("Book club")
                    && *vis == visibility
                    && *creator == uid("olga")
                    && *now == NOW
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _, _| Ok(conv_id("r1")));
        let created = summary(room("r1", visibility), &["olga"], 0);
        let expected = created.clone();
        h.messages
            .expect_summary()
            .withf(|c, viewer| *c == conv_id("r1") && *viewer == uid("olga"))
            .times(1)
            .in_sequence(&mut seq)
            .return_once(move |_, _| Ok(Some(created)));
        h.transport.expect_deliver().times(1).return_const(());
        let acked = h
            .build()
            .create_room(
                &caller("olga", "olga-1"),
                room_name("Book club"),
                visibility,
            )
            .await
            .unwrap();
        assert_eq!(acked, expected, "the ack is the creator's view of the room");
    }
}

#[tokio::test]
async fn creating_a_room_tells_exactly_the_creators_other_sessions_that_they_joined() {
    let mut h = Harness::new();
    h.messages
        .expect_create_room()
        .times(1)
        .returning(|_, _, _, _| Ok(conv_id("r1")));
    expect_summary(
        &mut h,
        "r1",
        "olga",
        Some(summary(public_room("r1"), &["olga"], 0)),
    );
    h.expect_delivery(
        all_but(&["olga"], &session("olga-2")),
        member_ev("r1", "olga", MemberAction::Joined),
    );
    h.build()
        .create_room(
            &caller("olga", "olga-2"),
            room_name("General"),
            Visibility::Public,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn creating_a_room_fails_internally_and_tells_nobody_when_the_store_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_create_room()
        .times(1)
        .returning(|_, _, _, _| Err(store_error()));
    h.messages.expect_summary().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .create_room(
            &caller("olga", "olga-1"),
            room_name("General"),
            Visibility::Public,
        )
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn creating_a_room_fails_internally_and_tells_nobody_when_it_cannot_be_read_back() {
    let mut h = Harness::new();
    h.messages
        .expect_create_room()
        .times(1)
        .returning(|_, _, _, _| Ok(conv_id("r1")));
    h.messages
        .expect_summary()
        .times(1)
        .returning(|_, _| Err(store_error()));
    h.expect_no_delivery();
    let err = h
        .build()
        .create_room(
            &caller("olga", "olga-1"),
            room_name("General"),
            Visibility::Private,
        )
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ join_room

/// join_room by `role` of `conv`, expecting an answer without any change.
async fn join_changing_nothing(role: Role, conv: Conversation) -> Answer<ConversationSummary> {
    let id = conv.id.as_str().to_owned();
    let mut h = Harness::new();
    h.expect_access(&id, role.name(), role.access(conv.clone()));
    expect_no_membership_change(&mut h);
    expect_summary(&mut h, &id, role.name(), Some(summary(conv, &MEMBERS, 4)));
    h.build()
        .join_room(&role.caller(), &conv_id(&id))
        .await
        .unwrap()
}

/// join_room by `role` of `conv`, expecting a refusal without any change.
async fn join_refused(role: Role, conv: Conversation) -> ConversationError {
    let id = conv.id.as_str().to_owned();
    let mut h = Harness::new();
    h.expect_access(&id, role.name(), role.access(conv));
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    h.build()
        .join_room(&role.caller(), &conv_id(&id))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_non_member_joining_a_public_room_is_added_and_every_member_but_the_joining_session_hears_it()
 {
    for role in NON_MEMBER_ROLES {
        let me = role.name();
        let mut h = Harness::new();
        let mut seq = Sequence::new();
        h.expect_access("r1", me, role.access(public_room("r1")));
        expect_add(&mut h, &mut seq, "r1", me, true);
        // The members after the add: the new member's other sessions hear too.
        let after = ["olga", "mia", "ivan", me];
        expect_members_in(&mut h, &mut seq, "r1", &after);
        let event = member_ev("r1", me, MemberAction::Joined);
        expect_delivery_in(
            &mut h,
            &mut seq,
            all_but(&after, &session(&role.session_raw())),
            event.clone(),
        );
        let joined = summary(public_room("r1"), &after, 9);
        expect_summary(&mut h, "r1", me, Some(joined.clone()));
        let answer = h
            .build()
            .join_room(&role.caller(), &conv_id("r1"))
            .await
            .unwrap();
        assert_eq!(
            answer.value, joined,
            "{role:?}: the ack is the joiner's view"
        );
        assert_eq!(
            answer.then,
            Some(event),
            "{role:?}: the joining session gets the event after its ack"
        );
    }
}

#[tokio::test]
async fn a_member_joining_a_public_room_again_changes_nothing_and_tells_nobody() {
    for role in MEMBER_ROLES {
        let answer = join_changing_nothing(role, public_room("r1")).await;
        assert_eq!(answer.value, summary(public_room("r1"), &MEMBERS, 4));
        assert_eq!(answer.then, None, "{role:?}");
    }
}

#[tokio::test]
async fn a_member_joining_a_private_room_again_changes_nothing_and_tells_nobody() {
    for role in MEMBER_ROLES {
        let answer = join_changing_nothing(role, private_room("r1")).await;
        assert_eq!(answer.value, summary(private_room("r1"), &MEMBERS, 4));
        assert_eq!(answer.then, None, "{role:?}");
    }
}

#[tokio::test]
async fn a_non_member_joining_a_private_room_is_forbidden_and_not_added() {
    for role in NON_MEMBER_ROLES {
        let err = join_refused(role, private_room("r1")).await;
        assert_forbidden(&err, Denied::PrivateRoom);
    }
}

#[tokio::test]
async fn nobody_joins_a_direct_conversation_member_or_not() {
    for role in ROLES {
        let err = join_refused(role, direct("d1")).await;
        assert_forbidden(&err, Denied::NotARoom);
    }
}

#[tokio::test]
async fn joining_an_unknown_conversation_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("nope", "sam", Access::NoSuchConversation);
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    let err = h
        .build()
        .join_room(&caller("sam", "sam-1"), &conv_id("nope"))
        .await
        .unwrap_err();
    assert_not_found(&err, NO_CONVERSATION);
}

#[tokio::test]
async fn a_join_that_a_concurrent_join_got_in_first_acks_the_room_and_tells_nobody() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("r1", "sam", Access::NotMember(public_room("r1")));
    expect_add(&mut h, &mut seq, "r1", "sam", false);
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let joined = summary(public_room("r1"), &["olga", "sam"], 9);
    expect_summary(&mut h, "r1", "sam", Some(joined.clone()));
    let answer = h
        .build()
        .join_room(&caller("sam", "sam-2"), &conv_id("r1"))
        .await
        .unwrap();
    assert_eq!(answer.value, joined);
    assert_eq!(answer.then, None, "the other join already announced it");
}

#[tokio::test]
async fn joining_fails_internally_and_adds_nobody_when_the_access_check_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_access()
        .times(1)
        .returning(|_, _| Err(store_error()));
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    let err = h
        .build()
        .join_room(&caller("sam", "sam-1"), &conv_id("r1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn joining_fails_internally_and_tells_nobody_when_the_member_cannot_be_added() {
    let mut h = Harness::new();
    h.expect_access("r1", "sam", Access::NotMember(public_room("r1")));
    h.messages
        .expect_add_member()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    h.messages.expect_summary().never();
    let err = h
        .build()
        .join_room(&caller("sam", "sam-1"), &conv_id("r1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn joining_fails_internally_when_the_members_cannot_be_read() {
    let mut h = Harness::new();
    h.expect_access("r1", "sam", Access::NotMember(public_room("r1")));
    h.messages
        .expect_add_member()
        .times(1)
        .returning(|_, _, _| Ok(true));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Err(store_error()));
    h.expect_no_delivery();
    h.messages.expect_summary().never();
    let err = h
        .build()
        .join_room(&caller("sam", "sam-1"), &conv_id("r1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ invite_to_room

/// invite_to_room by `role` of "vic" into `conv`, expecting a refusal before
/// the invitee is even looked up.
async fn invite_refused(role: Role, conv: Conversation) -> InviteError {
    let id = conv.id.as_str().to_owned();
    let mut h = Harness::new();
    h.expect_access(&id, role.name(), role.access(conv));
    h.users.expect_user().never();
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    h.build()
        .invite_to_room(&role.caller(), &conv_id(&id), &uid("vic"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_member_inviting_a_user_adds_them_and_every_member_but_the_inviting_session_hears_it() {
    for conv in rooms("r1") {
        for role in MEMBER_ROLES {
            let mut h = Harness::new();
            let mut seq = Sequence::new();
            h.expect_access("r1", role.name(), role.access(conv.clone()));
            expect_user_lookup(&mut h, "vic", true);
            expect_add(&mut h, &mut seq, "r1", "vic", true);
            // The invitee is among the members by now and hears it too.
            let after = ["olga", "mia", "ivan", "vic"];
            expect_members_in(&mut h, &mut seq, "r1", &after);
            let event = member_ev("r1", "vic", MemberAction::Invited);
            expect_delivery_in(
                &mut h,
                &mut seq,
                all_but(&after, &session(&role.session_raw())),
                event.clone(),
            );
            let view = summary(conv.clone(), &after, 4);
            // The ack is the room as the inviter (not the invitee) sees it.
            expect_summary(&mut h, "r1", role.name(), Some(view.clone()));
            let answer = h
                .build()
                .invite_to_room(&role.caller(), &conv_id("r1"), &uid("vic"))
                .await
                .unwrap();
            assert_eq!(answer.value, view, "{role:?} in {conv:?}");
            assert_eq!(answer.then, Some(event), "{role:?} in {conv:?}");
        }
    }
}

#[tokio::test]
async fn inviting_someone_who_is_already_a_member_acks_the_room_and_tells_nobody() {
    for conv in rooms("r1") {
        let mut h = Harness::new();
        let mut seq = Sequence::new();
        h.expect_access("r1", "olga", Role::Owner.access(conv.clone()));
        expect_user_lookup(&mut h, "mia", true);
        expect_add(&mut h, &mut seq, "r1", "mia", false);
        h.messages.expect_member_ids().never();
        h.expect_no_delivery();
        let view = summary(conv.clone(), &MEMBERS, 4);
        expect_summary(&mut h, "r1", "olga", Some(view.clone()));
        let answer = h
            .build()
            .invite_to_room(&Role::Owner.caller(), &conv_id("r1"), &uid("mia"))
            .await
            .unwrap();
        assert_eq!(answer.value, view);
        assert_eq!(answer.then, None, "{conv:?}");
    }
}

#[tokio::test]
async fn inviting_an_unknown_user_is_not_found_and_adds_nobody() {
    for conv in rooms("r1") {
        let mut h = Harness::new();
        h.expect_access("r1", "mia", Role::Member.access(conv));
        expect_user_lookup(&mut h, "ghost", false);
        expect_no_membership_change(&mut h);
        h.messages.expect_summary().never();
        let err = h
            .build()
            .invite_to_room(&Role::Member.caller(), &conv_id("r1"), &uid("ghost"))
            .await
            .unwrap_err();
        assert_not_found(&err, NO_USER);
    }
}

#[tokio::test]
async fn a_non_member_inviting_is_forbidden_before_the_invitee_is_looked_up() {
    for conv in rooms("r1") {
        for role in NON_MEMBER_ROLES {
            let err = invite_refused(role, conv.clone()).await;
            assert_forbidden(&err, Denied::NotMember);
        }
    }
}

#[tokio::test]
async fn nobody_invites_anyone_to_a_direct_conversation() {
    for role in MEMBER_ROLES {
        let err = invite_refused(role, direct("d1")).await;
        assert_forbidden(&err, Denied::NotARoom);
    }
    for role in NON_MEMBER_ROLES {
        let err = invite_refused(role, direct("d1")).await;
        assert!(err.refused().is_some(), "{role:?}: {err:?}");
    }
}

#[tokio::test]
async fn inviting_to_an_unknown_room_is_not_found_before_the_invitee_is_looked_up() {
    let mut h = Harness::new();
    h.expect_access("nope", "olga", Access::NoSuchConversation);
    // Even an unknown invitee: the room is checked first.
    h.users.expect_user().never();
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    let err = h
        .build()
        .invite_to_room(&caller("olga", "olga-1"), &conv_id("nope"), &uid("ghost"))
        .await
        .unwrap_err();
    assert_not_found(&err, NO_CONVERSATION);
}

#[tokio::test]
async fn inviting_checks_the_room_then_the_callers_membership_then_the_invitee() {
    // Each check runs only once the previous one passed, so the mock calls
    // must come in this order.
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.messages
        .expect_access()
        .withf(|c, u| *c == conv_id("r1") && *u == uid("mia"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Role::Member.access(private_room("r1"))));
    h.users
        .expect_user()
        .withf(|u| *u == uid("vic"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Some(user("vic"))));
    expect_add(&mut h, &mut seq, "r1", "vic", true);
    expect_members_in(&mut h, &mut seq, "r1", &["mia", "vic"]);
    h.transport
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .return_const(());
    expect_summary(
        &mut h,
        "r1",
        "mia",
        Some(summary(private_room("r1"), &["mia", "vic"], 4)),
    );
    h.build()
        .invite_to_room(&Role::Member.caller(), &conv_id("r1"), &uid("vic"))
        .await
        .unwrap();
}

#[tokio::test]
async fn inviting_fails_internally_and_adds_nobody_when_the_invitee_cannot_be_looked_up() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    h.users
        .expect_user()
        .times(1)
        .returning(|_| Err(store_error()));
    expect_no_membership_change(&mut h);
    h.messages.expect_summary().never();
    let err = h
        .build()
        .invite_to_room(&Role::Member.caller(), &conv_id("r1"), &uid("vic"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn inviting_fails_internally_and_tells_nobody_when_the_invitee_cannot_be_added() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_user_lookup(&mut h, "vic", true);
    h.messages
        .expect_add_member()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    h.messages.expect_summary().never();
    let err = h
        .build()
        .invite_to_room(&Role::Member.caller(), &conv_id("r1"), &uid("vic"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ leave_room

/// leave_room by `role` of `conv`, expecting a refusal without any change.
async fn leave_refused(role: Role, conv: Conversation) -> ConversationError {
    let id = conv.id.as_str().to_owned();
    let mut h = Harness::new();
    h.expect_access(&id, role.name(), role.access(conv));
    expect_no_membership_change(&mut h);
    h.build()
        .leave_room(&role.caller(), &conv_id(&id))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_member_leaving_is_removed_and_the_remaining_members_and_the_leavers_other_sessions_hear_it()
 {
    for conv in rooms("r1") {
        for role in MEMBER_ROLES {
            let me = role.name();
            let mut h = Harness::new();
            let mut seq = Sequence::new();
            h.expect_access("r1", me, role.access(conv.clone()));
            expect_remove(&mut h, &mut seq, "r1", me, true);
            let remaining: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != me).collect();
            expect_members_in(&mut h, &mut seq, "r1", &remaining);
            let mut audience = remaining.clone();
            audience.push(me);
            let event = member_ev("r1", me, MemberAction::Left);
            expect_delivery_in(
                &mut h,
                &mut seq,
                all_but(&audience, &session(&role.session_raw())),
                event.clone(),
            );
            let answer = h
                .build()
                .leave_room(&role.caller(), &conv_id("r1"))
                .await
                .unwrap();
            assert_eq!(
                answer.then,
                Some(event),
                "{role:?} in {conv:?}: the leaving session gets the event after its ack"
            );
        }
    }
}

#[tokio::test]
async fn the_last_member_leaving_tells_only_their_own_other_sessions() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("r1", "olga", Role::Owner.access(private_room("r1")));
    expect_remove(&mut h, &mut seq, "r1", "olga", true);
    expect_members_in(&mut h, &mut seq, "r1", &[]);
    let event = member_ev("r1", "olga", MemberAction::Left);
    expect_delivery_in(
        &mut h,
        &mut seq,
        all_but(&["olga"], &session("olga-3")),
        event.clone(),
    );
    let answer = h
        .build()
        .leave_room(&caller("olga", "olga-3"), &conv_id("r1"))
        .await
        .unwrap();
    assert_eq!(answer.then, Some(event));
}

#[tokio::test]
async fn a_leave_that_a_concurrent_leave_got_in_first_acks_and_tells_nobody() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_remove(&mut h, &mut seq, "r1", "mia", false);
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let answer = h
        .build()
        .leave_room(&Role::Member.caller(), &conv_id("r1"))
        .await
        .unwrap();
    assert_eq!(answer.then, None, "the other leave already announced it");
}

#[tokio::test]
async fn a_non_member_leaving_a_room_is_forbidden() {
    for conv in rooms("r1") {
        for role in NON_MEMBER_ROLES {
            let err = leave_refused(role, conv.clone()).await;
            assert_forbidden(&err, Denied::NotMember);
        }
    }
}

#[tokio::test]
async fn nobody_leaves_a_direct_conversation() {
    for role in MEMBER_ROLES {
        let err = leave_refused(role, direct("d1")).await;
        assert_forbidden(&err, Denied::NotARoom);
    }
    for role in NON_MEMBER_ROLES {
        let err = leave_refused(role, direct("d1")).await;
        assert!(err.refused().is_some(), "{role:?}: {err:?}");
    }
}

#[tokio::test]
async fn leaving_an_unknown_conversation_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("nope", "mia", Access::NoSuchConversation);
    expect_no_membership_change(&mut h);
    let err = h
        .build()
        .leave_room(&caller("mia", "mia-1"), &conv_id("nope"))
        .await
        .unwrap_err();
    assert_not_found(&err, NO_CONVERSATION);
}

#[tokio::test]
async fn leaving_fails_internally_and_tells_nobody_when_the_member_cannot_be_removed() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    h.messages
        .expect_remove_member()
        .times(1)
        .returning(|_, _| Err(store_error()));
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .leave_room(&Role::Member.caller(), &conv_id("r1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ list_rooms

/// `list_rooms(viewer, prefix, after, limit)` once, answering `rooms`.
fn expect_list(
    h: &mut Harness,
    viewer: &str,
    prefix: &'static str,
    after: Option<&'static str>,
    limit: u32,
    rooms: Vec<ConversationSummary>,
) {
    let v = uid(viewer);
    h.messages
        .expect_list_rooms()
        .withf(move |who, p, a, l| {
            *who == v && p == prefix && a.as_ref().map(|a| a.as_str()) == after && *l == limit
        })
        .times(1)
        .return_once(move |_, _, _, _| Ok(rooms));
}

/// Asks for `asked` rooms: the store is asked for one more than the page.
async fn list_with_limit(asked: Option<u64>, sent: u32) {
    let mut h = Harness::new();
    expect_list(&mut h, "sam", "", None, sent, Vec::new());
    let got = h
        .build()
        .list_rooms(&caller("sam", "sam-1"), "", None, page(asked))
        .await
        .unwrap();
    assert!(got.rooms.is_empty() && !got.has_more, "{asked:?}");
}

#[tokio::test]
async fn listing_rooms_asks_for_50_by_default() {
    list_with_limit(None, 51).await;
}

#[tokio::test]
async fn listing_rooms_passes_a_limit_within_range_through() {
    list_with_limit(Some(1), 2).await;
    list_with_limit(Some(17), 18).await;
    list_with_limit(Some(200), 201).await;
}

#[tokio::test]
async fn listing_rooms_clamps_the_limit_to_200() {
    list_with_limit(Some(201), 201).await;
    list_with_limit(Some(u64::from(u32::MAX) + 1), 201).await;
    list_with_limit(Some(u64::MAX), 201).await;
}

#[tokio::test]
async fn a_room_past_the_limit_says_more_follow_and_is_not_listed() {
    let mut h = Harness::new();
    let listed = vec![
        summary(public_room("r1"), &MEMBERS, 0),
        summary(public_room("r2"), &MEMBERS, 0),
        summary(public_room("r3"), &MEMBERS, 0),
    ];
    expect_list(&mut h, "sam", "", Some("r0"), 3, listed.clone());
    let got = h
        .build()
        .list_rooms(
            &caller("sam", "sam-1"),
            "",
            Some(&ConversationId::new("r0")),
            page(Some(2)),
        )
        .await
        .unwrap();
    assert_eq!(got.rooms, listed[..2]);
    assert!(got.has_more);
}

#[tokio::test]
async fn listing_rooms_passes_the_prefix_and_the_caller_through_and_returns_the_stores_list() {
    let mut h = Harness::new();
    let listed = vec![
        summary(public_room("r1"), &MEMBERS, 0),
        summary(private_room("r2"), &["sam"], 3),
    ];
    expect_list(&mut h, "sam", "Ge", None, 11, listed.clone());
    let got = h
        .build()
        .list_rooms(&caller("sam", "sam-1"), "Ge", None, page(Some(10)))
        .await
        .unwrap();
    assert_eq!(got.rooms, listed, "in the store's order, unchanged");
    assert!(!got.has_more);
}

#[tokio::test]
async fn listing_rooms_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_list_rooms()
        .times(1)
        .returning(|_, _, _, _| Err(store_error()));
    let err = h
        .build()
        .list_rooms(&caller("sam", "sam-1"), "", None, page(None))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ edit_message

/// The message "r1-m5", sent by `sender`.
fn msg_by(sender: &str) -> Message {
    message("r1", 5, &user(sender), "first draft")
}

fn msg_id() -> MessageId {
    MessageId::new("r1-m5")
}

fn deleted(m: Message) -> Message {
    Message {
        body: String::new(),
        deleted: true,
        ..m
    }
}

fn edited(m: Message, text: &str) -> Message {
    Message {
        body: text.to_owned(),
        edited_at: Some(NOW),
        ..m
    }
}

/// `message(conversation, "r1-m5")` once, answering `found`.
fn expect_lookup(h: &mut Harness, conversation: &str, found: Option<Message>) {
    let c = conv_id(conversation);
    h.messages
        .expect_message()
        .withf(move |conv, id| *conv == c && *id == msg_id())
        .times(1)
        .return_once(move |_, _| Ok(found));
}

/// `update_message(conversation, "r1-m5", change)` once, answering `result`.
fn expect_update(
    h: &mut Harness,
    seq: &mut Sequence,
    conversation: &str,
    change: MessageChange,
    result: Option<Message>,
) {
    let c = conv_id(conversation);
    h.messages
        .expect_update_message()
        .withf(move |conv, id, ch| *conv == c && *id == msg_id() && *ch == change)
        .times(1)
        .in_sequence(seq)
        .return_once(move |_, _, _| Ok(result));
}

/// Nothing is changed and nobody hears anything.
fn expect_no_update(h: &mut Harness) {
    h.messages.expect_update_message().never();
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
}

fn edit(
    service: &ChatService,
    who: &Caller,
    conversation: &str,
) -> impl Future<Output = Result<Message, ChangeMessageError>> {
    let (who, c) = (who.clone(), conv_id(conversation));
    async move {
        service
            .edit_message(&who, &c, &msg_id(), body("second draft"))
            .await
    }
}

#[tokio::test]
async fn the_sender_editing_stores_the_new_body_at_the_clocks_time_and_every_member_but_the_editing_session_hears_it()
 {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in MEMBER_ROLES {
            let me = role.name();
            let mut h = Harness::new();
            let mut seq = Sequence::new();
            h.expect_access("r1", me, role.access(conv.clone()));
            expect_lookup(&mut h, "r1", Some(msg_by(me)));
            let updated = edited(msg_by(me), "second draft");
            expect_update(
                &mut h,
                &mut seq,
                "r1",
                MessageChange::Edit {
                    body: body("second draft"),
                    at: NOW,
                },
                Some(updated.clone()),
            );
            // The editor is listed: their other sessions see the edit too.
            expect_members_in(&mut h, &mut seq, "r1", &MEMBERS);
            expect_delivery_in(
                &mut h,
                &mut seq,
                all_but(&MEMBERS, &session(&role.session_raw())),
                Event::MessageUpdated(updated.clone()),
            );
            let service = h.build();
            let acked = edit(&service, &role.caller(), "r1").await.unwrap();
            assert_eq!(
                acked, updated,
                "{role:?} in {conv:?}: the ack is the edited message"
            );
        }
    }
}

#[tokio::test]
async fn a_member_editing_someone_elses_message_is_forbidden_and_changes_nothing() {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in MEMBER_ROLES {
            let mut h = Harness::new();
            h.expect_access("r1", role.name(), role.access(conv.clone()));
            // Sent by another member, or by someone who has since left.
            let sender = if role == Role::Owner { "mia" } else { "fred" };
            expect_lookup(&mut h, "r1", Some(msg_by(sender)));
            expect_no_update(&mut h);
            let service = h.build();
            let err = edit(&service, &role.caller(), "r1").await.unwrap_err();
            assert_forbidden(&err, Denied::NotSender);
        }
    }
}

#[tokio::test]
async fn a_non_member_editing_is_forbidden_before_the_message_is_looked_up() {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in NON_MEMBER_ROLES {
            let mut h = Harness::new();
            h.expect_access("r1", role.name(), role.access(conv.clone()));
            // Even a former member editing their own old message.
            h.messages.expect_message().never();
            expect_no_update(&mut h);
            let service = h.build();
            let err = edit(&service, &role.caller(), "r1").await.unwrap_err();
            assert_forbidden(&err, Denied::NotMember);
        }
    }
}

#[tokio::test]
async fn editing_in_an_unknown_conversation_is_not_found_before_the_message_is_looked_up() {
    let mut h = Harness::new();
    h.expect_access("nope", "mia", Access::NoSuchConversation);
    h.messages.expect_message().never();
    expect_no_update(&mut h);
    let service = h.build();
    let err = edit(&service, &Role::Member.caller(), "nope")
        .await
        .unwrap_err();
    assert_not_found(&err, NO_CONVERSATION);
}

#[tokio::test]
async fn editing_an_unknown_message_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", None);
    expect_no_update(&mut h);
    let service = h.build();
    let err = edit(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap_err();
    assert_not_found(&err, NO_MESSAGE);
}

#[tokio::test]
async fn editing_a_deleted_message_is_a_bad_request_and_changes_nothing() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", Some(deleted(msg_by("mia"))));
    expect_no_update(&mut h);
    let service = h.build();
    let err = edit(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeMessageError::Deleted), "{err:?}");
}

#[tokio::test]
async fn editing_someone_elses_deleted_message_is_forbidden_since_the_sender_is_checked_first() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", Some(deleted(msg_by("olga"))));
    expect_no_update(&mut h);
    let service = h.build();
    let err = edit(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap_err();
    assert_forbidden(&err, Denied::NotSender);
}

#[tokio::test]
async fn an_edit_whose_message_vanished_before_the_update_is_not_found_and_tells_nobody() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", Some(msg_by("mia")));
    expect_update(
        &mut h,
        &mut seq,
        "r1",
        MessageChange::Edit {
            body: body("second draft"),
            at: NOW,
        },
        None,
    );
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let service = h.build();
    let err = edit(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap_err();
    assert_not_found(&err, NO_MESSAGE);
}

#[tokio::test]
async fn editing_fails_internally_and_tells_nobody_when_the_store_fails() {
    // The message cannot be read.
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    h.messages
        .expect_message()
        .times(1)
        .returning(|_, _| Err(store_error()));
    expect_no_update(&mut h);
    let service = h.build();
    assert_internal(
        &edit(&service, &Role::Member.caller(), "r1")
            .await
            .unwrap_err(),
    );

    // The update fails.
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", Some(msg_by("mia")));
    h.messages
        .expect_update_message()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let service = h.build();
    assert_internal(
        &edit(&service, &Role::Member.caller(), "r1")
            .await
            .unwrap_err(),
    );
}

// ------------------------------------------------------------ delete_message

fn delete(
    service: &ChatService,
    who: &Caller,
    conversation: &str,
) -> impl Future<Output = Result<Message, ChangeMessageError>> {
    let (who, c) = (who.clone(), conv_id(conversation));
    async move { service.delete_message(&who, &c, &msg_id()).await }
}

#[tokio::test]
async fn the_sender_deleting_empties_the_message_and_every_member_but_the_deleting_session_hears_it()
 {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in MEMBER_ROLES {
            let me = role.name();
            let mut h = Harness::new();
            let mut seq = Sequence::new();
            h.expect_access("r1", me, role.access(conv.clone()));
            expect_lookup(&mut h, "r1", Some(msg_by(me)));
            let gone = deleted(msg_by(me));
            expect_update(
                &mut h,
                &mut seq,
                "r1",
                MessageChange::Delete,
                Some(gone.clone()),
            );
            expect_members_in(&mut h, &mut seq, "r1", &MEMBERS);
            expect_delivery_in(
                &mut h,
                &mut seq,
                all_but(&MEMBERS, &session(&role.session_raw())),
                Event::MessageUpdated(gone.clone()),
            );
            let service = h.build();
            let acked = delete(&service, &role.caller(), "r1").await.unwrap();
            assert_eq!(acked, gone, "{role:?} in {conv:?}");
        }
    }
}

#[tokio::test]
async fn deleting_a_deleted_message_again_returns_it_unchanged_and_tells_nobody() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    let gone = Message {
        edited_at: Some(t(1_000)),
        ..deleted(msg_by("mia"))
    };
    expect_lookup(&mut h, "r1", Some(gone.clone()));
    expect_no_update(&mut h);
    let service = h.build();
    let acked = delete(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap();
    assert_eq!(acked, gone, "the same message, as it stands");
}

#[tokio::test]
async fn a_member_deleting_someone_elses_message_is_forbidden_and_changes_nothing() {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in MEMBER_ROLES {
            for message in [msg_by("fred"), deleted(msg_by("fred"))] {
                let mut h = Harness::new();
                h.expect_access("r1", role.name(), role.access(conv.clone()));
                expect_lookup(&mut h, "r1", Some(message));
                expect_no_update(&mut h);
                let service = h.build();
                let err = delete(&service, &role.caller(), "r1").await.unwrap_err();
                assert_forbidden(&err, Denied::NotSender);
            }
        }
    }
}

#[tokio::test]
async fn a_non_member_deleting_is_forbidden_before_the_message_is_looked_up() {
    for conv in [public_room("r1"), private_room("r1"), direct("r1")] {
        for role in NON_MEMBER_ROLES {
            let mut h = Harness::new();
            h.expect_access("r1", role.name(), role.access(conv.clone()));
            h.messages.expect_message().never();
            expect_no_update(&mut h);
            let service = h.build();
            let err = delete(&service, &role.caller(), "r1").await.unwrap_err();
            assert_forbidden(&err, Denied::NotMember);
        }
    }
}

#[tokio::test]
async fn deleting_in_an_unknown_conversation_or_an_unknown_message_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("nope", "mia", Access::NoSuchConversation);
    h.messages.expect_message().never();
    expect_no_update(&mut h);
    let service = h.build();
    let err = delete(&service, &Role::Member.caller(), "nope")
        .await
        .unwrap_err();
    assert_not_found(&err, NO_CONVERSATION);

    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", None);
    expect_no_update(&mut h);
    let service = h.build();
    let err = delete(&service, &Role::Member.caller(), "r1")
        .await
        .unwrap_err();
    assert_not_found(&err, NO_MESSAGE);
}

// ------------------------------------------------------------ ordering

/// A transport that holds the first event it is handed until released, and
/// records every event when it lets it through. While the first event is
/// held, its use case holds whatever lock it delivers under.
#[derive(Default)]
struct GatedTransport {
    gate_used: AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
    events: std::sync::Mutex<Vec<Event>>,
}

#[async_trait]
impl Transport for GatedTransport {
    async fn deliver(&self, _delivery: Delivery, event: Event) {
        if !self.gate_used.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.events.lock().unwrap().push(event);
    }
}

/// Runs `first` until it is handing its event to the transport, then starts
/// `second` and gives it every chance to overtake before letting `first`
/// finish. Returns the events in the order they were let through.
async fn second_started_while_first_delivers<A, FA, B, FB>(
    h: Harness,
    first: A,
    second: B,
) -> Vec<Event>
where
    A: FnOnce(Arc<ChatService>) -> FA,
    FA: Future<Output = ()> + Send + 'static,
    B: FnOnce(Arc<ChatService>) -> FB,
    FB: Future<Output = ()> + Send + 'static,
{
    let transport = Arc::new(GatedTransport::default());
    let service = Arc::new(h.build_with_transport(transport.clone()));
    let first = tokio::spawn(first(service.clone()));
    tokio::time::timeout(Duration::from_secs(5), transport.entered.notified())
        .await
        .expect("the first use case delivered an event");
    let second = tokio::spawn(second(service.clone()));
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    transport.release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), async {
        first.await.unwrap();
        second.await.unwrap();
    })
    .await
    .expect("both use cases finished");
    transport.events.lock().unwrap().clone()
}

/// olga's message "hi" in r1, stored with seq 10 for every member.
fn expect_olgas_send(h: &mut Harness) -> Message {
    let stored = message("r1", 10, &user("olga"), "hi");
    let appended = stored.clone();
    h.messages
        .expect_append()
        .withf(|new| new.conversation_id == conv_id("r1") && new.sender == user("olga"))
        .times(1)
        .return_once(move |_| {
            Ok(AppendOutcome::Stored {
                message: appended,
                members: uids(&["olga", "mia", "ivan", "sam"]),
            })
        });
    stored
}

async fn olga_sends(service: Arc<ChatService>) {
    service
        .send_message(&caller("olga", "olga-1"), &conv_id("r1"), body("hi"), None)
        .await
        .unwrap();
}

/// sam joins the public room r1, as a non-member whose add succeeds.
fn expect_sams_join(h: &mut Harness) {
    h.expect_access("r1", "sam", Access::NotMember(public_room("r1")));
    h.messages
        .expect_add_member()
        .times(1)
        .returning(|_, _, _| Ok(true));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Ok(uids(&["olga", "mia", "ivan", "sam"])));
    expect_summary(
        h,
        "r1",
        "sam",
        Some(summary(public_room("r1"), &MEMBERS, 9)),
    );
}

async fn sam_joins(service: Arc<ChatService>) {
    service
        .join_room(&caller("sam", "sam-1"), &conv_id("r1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_member_event_of_a_join_leaves_before_the_message_of_a_send_started_during_it() {
    let mut h = Harness::new();
    expect_sams_join(&mut h);
    let sent = expect_olgas_send(&mut h);
    let events = second_started_while_first_delivers(h, sam_joins, olga_sends).await;
    assert_eq!(
        events,
        vec![
            member_ev("r1", "sam", MemberAction::Joined),
            Event::Message(sent)
        ],
        "a join and a send into one conversation share its ordering lock"
    );
}

#[tokio::test]
async fn the_message_of_a_send_leaves_before_the_member_event_of_a_join_started_during_it() {
    let mut h = Harness::new();
    let sent = expect_olgas_send(&mut h);
    expect_sams_join(&mut h);
    let events = second_started_while_first_delivers(h, olga_sends, sam_joins).await;
    assert_eq!(
        events,
        vec![
            Event::Message(sent),
            member_ev("r1", "sam", MemberAction::Joined)
        ],
        "a join waits for the send that holds the conversation's lock"
    );
}

#[tokio::test]
async fn the_member_event_of_a_leave_leaves_before_the_message_of_a_send_started_during_it() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    h.messages
        .expect_remove_member()
        .times(1)
        .returning(|_, _| Ok(true));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Ok(uids(&["olga", "ivan"])));
    let sent = expect_olgas_send(&mut h);
    let leave = |service: Arc<ChatService>| async move {
        service
            .leave_room(&caller("mia", "mia-1"), &conv_id("r1"))
            .await
            .unwrap();
    };
    let events = second_started_while_first_delivers(h, leave, olga_sends).await;
    assert_eq!(
        events,
        vec![
            member_ev("r1", "mia", MemberAction::Left),
            Event::Message(sent)
        ],
        "a leave and a send into one conversation share its ordering lock"
    );
}

#[tokio::test]
async fn the_member_event_of_an_invite_leaves_before_the_message_of_a_send_started_during_it() {
    let mut h = Harness::new();
    h.expect_access("r1", "mia", Role::Member.access(private_room("r1")));
    expect_user_lookup(&mut h, "vic", true);
    h.messages
        .expect_add_member()
        .times(1)
        .returning(|_, _, _| Ok(true));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Ok(uids(&["olga", "mia", "ivan", "vic"])));
    expect_summary(
        &mut h,
        "r1",
        "mia",
        Some(summary(private_room("r1"), &MEMBERS, 4)),
    );
    let sent = expect_olgas_send(&mut h);
    let invite = |service: Arc<ChatService>| async move {
        service
            .invite_to_room(&caller("mia", "mia-1"), &conv_id("r1"), &uid("vic"))
            .await
            .unwrap();
    };
    let events = second_started_while_first_delivers(h, invite, olga_sends).await;
    assert_eq!(
        events,
        vec![
            member_ev("r1", "vic", MemberAction::Invited),
            Event::Message(sent)
        ],
        "an invite and a send into one conversation share its ordering lock"
    );
}

#[tokio::test]
async fn the_update_of_an_edit_started_during_a_send_leaves_after_that_sends_message() {
    let mut h = Harness::new();
    let sent = expect_olgas_send(&mut h);
    h.expect_access("r1", "mia", Role::Member.access(public_room("r1")));
    expect_lookup(&mut h, "r1", Some(msg_by("mia")));
    let updated = edited(msg_by("mia"), "second draft");
    let stored = updated.clone();
    h.messages
        .expect_update_message()
        .times(1)
        .return_once(move |_, _, _| Ok(Some(stored)));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Ok(uids(&MEMBERS)));
    let edit_it = |service: Arc<ChatService>| async move {
        edit(&service, &caller("mia", "mia-1"), "r1").await.unwrap();
    };
    let events = second_started_while_first_delivers(h, olga_sends, edit_it).await;
    assert_eq!(
        events,
        vec![Event::Message(sent), Event::MessageUpdated(updated)],
        "an edit and a send into one conversation share its ordering lock"
    );
}
