//! Unit tests of the use cases, with every port mocked.
//!
//! Each test starts from a [`Harness`] whose mocks expect nothing: any port
//! call a test did not ask for panics, so a use case that does more than the
//! contract says fails its test. Expectations use `times`, `never` and
//! `withf` so that breaking a routing rule or an error path breaks a test.
use super::*;

use crate::domain::conversation::{ConversationSummary, RoomName, Visibility};
use crate::domain::event::MemberAction;
use crate::domain::message::{
    AppendOutcome, HistoryPage, HistoryQuery, Message, MessageChange, NewMessage,
};
use crate::domain::ports::{AppendError, CreateUserError, OpenSessionError};
use crate::domain::presence::{ActiveStatus, LiveStatus, Presence, Status};
use crate::domain::user::{Password, Username};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mockall::Sequence;

use crate::domain::conversation::ConversationKind;
use crate::domain::device::{
    CreatedDevice, DeviceInfo, DeviceName, RefreshHash, Revocation, Rotate, Rotation, TokenState,
};
use crate::domain::error::{
    AuthenticateError, BlockError, ChangeMessageError, ConversationError, InviteError, LoginError,
    PortError, PresenceError, RegisterError, SendError,
};
use crate::domain::file::FileLimits;
use crate::domain::ids::DeviceId;
use crate::domain::ids::MessageId;
use crate::domain::page::PageLimit;
use crate::domain::ports::{
    InvalidToken, MockAuthenticator, MockBlockStore, MockClock, MockDeviceStore, MockFileStore,
    MockMessageStore, MockPresenceRegistry, MockRevoker, MockTransport, MockUserStore, TokenClaims,
};
use crate::domain::presence::TooManySessions;
use crate::domain::routing::Delivery;
use crate::domain::user::PasswordHash;

// ------------------------------------------------------------ fixtures

/// The fixed time of every test's clock.
const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);
/// When the tokens the stub authenticator issues expire.
const EXPIRES: Timestamp = Timestamp::from_millis(NOW.millis() + 86_400_000);
/// The per-user session limit of every test's service.
const MAX_SESSIONS: usize = 3;
/// The per-user device session limit of every test's service.
const MAX_DEVICES: usize = 5;
/// How long refresh tokens live in every test's service.
const REFRESH_TTL_MS: i64 = 30 * 86_400_000;
/// When refresh tokens issued at [`NOW`] expire.
const REFRESH_EXPIRES: Timestamp = Timestamp::from_millis(NOW.millis() + REFRESH_TTL_MS);
/// The refresh grace window of every test's service.
const GRACE_MS: i64 = 30_000;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn user(name: &str) -> User {
    User {
        id: uid(name),
        username: Username::parse(name).unwrap(),
    }
}

fn username(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn password(raw: &str) -> Password {
    Password::parse(raw).unwrap()
}

fn page(limit: Option<u64>) -> PageLimit {
    PageLimit::parse(limit).unwrap()
}

fn uid(name: &str) -> UserId {
    UserId::new(format!("id-{name}"))
}

fn uids(names: &[&str]) -> Vec<UserId> {
    names.iter().map(|n| uid(n)).collect()
}

fn session(raw: &str) -> SessionId {
    SessionId::new(raw)
}

fn caller(name: &str, on: &str) -> Caller {
    Caller {
        user: user(name),
        session: session(on),
    }
}

fn conv_id(raw: &str) -> ConversationId {
    ConversationId::new(raw)
}

fn conversation(id: &str, last_seq: u64) -> Conversation {
    Conversation {
        id: conv_id(id),
        kind: ConversationKind::Direct,
        last_seq,
    }
}

/// `Access::Member` of a conversation whose newest seq is `last_seq`, for a
/// member whose read marker is at `last_read_seq`.
fn member(id: &str, last_seq: u64, last_read_seq: u64) -> Access {
    Access::Member(conversation(id, last_seq), Membership { last_read_seq })
}

fn body(text: &str) -> MessageBody {
    MessageBody::parse(text).unwrap()
}

fn client_id(raw: &str) -> ClientMsgId {
    ClientMsgId::parse(raw).unwrap()
}

fn message(conversation: &str, seq: u64, sender: &User, text: &str) -> Message {
    Message {
        id: MessageId::new(format!("{conversation}-m{seq}")),
        conversation_id: conv_id(conversation),
        seq,
        sender_id: sender.id.clone(),
        sender: sender.username.clone(),
        body: text.to_owned(),
        client_msg_id: None,
        created_at: NOW,
        edited_at: None,
        deleted: false,
        attachments: Vec::new(),
    }
}

/// The message a store would make of `new` with `seq`.
fn stored_from(new: &NewMessage, seq: u64) -> Message {
    Message {
        client_msg_id: new.client_msg_id.clone(),
        created_at: new.created_at,
        attachments: new.attachments.clone(),
        ..message(
            new.conversation_id.as_str(),
            seq,
            &new.sender,
            new.body.as_str(),
        )
    }
}

fn store_error() -> PortError {
    PortError(anyhow::anyhow!("the store is down: /var/lib/confab.db"))
}

fn hash() -> PasswordHash {
    PasswordHash("$argon2id$v=19$m=19456,t=2,p=1$stub".to_owned())
}

/// The device every test signs in from.
fn device() -> DeviceInfo {
    DeviceInfo {
        name: DeviceName::parse("test phone").unwrap(),
        address: Some("192.0.2.1".to_owned()),
    }
}

/// What signing `user` in on "dev-1" answers.
fn signed_in(user: &User) -> SignedIn {
    SignedIn {
        user: user.clone(),
        token: token(user),
        device: DeviceId::new("dev-1"),
        refresh: IssuedToken {
            token: "refresh-1".to_owned(),
            expires_at: REFRESH_EXPIRES,
        },
    }
}

fn token(user: &User) -> IssuedToken {
    IssuedToken {
        token: format!("token-for-{}", user.id),
        expires_at: EXPIRES,
    }
}

fn presence(user: User, status: Status, last_seen: Option<Timestamp>) -> Presence {
    Presence {
        user,
        status,
        last_seen,
    }
}

/// Asserts that a port failed (the adapters answer `internal`, without
/// the cause).
#[track_caller]
fn assert_internal(e: &impl Failure) {
    assert!(e.unknown(), "expected Unknown, got {e:?}");
}

// ------------------------------------------------------------ failures

/// What was missing, for the tests of every use case that can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    Conversation,
    User,
    Message,
}

/// What the tests read of a use case's error, whatever its type.
pub(super) trait Failure: std::fmt::Debug {
    /// The rule that refused, if one did.
    fn refused(&self) -> Option<Denied> {
        None
    }
    /// What did not exist, if anything.
    fn missing(&self) -> Option<Missing> {
        None
    }
    /// Whether a port failed.
    fn unknown(&self) -> bool;
}

impl Failure for PortError {
    fn unknown(&self) -> bool {
        true
    }
}

impl Failure for ConversationError {
    fn refused(&self) -> Option<Denied> {
        match self {
            Self::Refused(d) => Some(*d),
            _ => None,
        }
    }
    fn missing(&self) -> Option<Missing> {
        matches!(self, Self::NoSuchConversation).then_some(Missing::Conversation)
    }
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for SendError {
    fn refused(&self) -> Option<Denied> {
        match self {
            Self::Refused(d) => Some(*d),
            _ => None,
        }
    }
    fn missing(&self) -> Option<Missing> {
        match self {
            Self::NoSuchConversation => Some(Missing::Conversation),
            Self::NoSuchUser => Some(Missing::User),
            _ => None,
        }
    }
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for InviteError {
    fn refused(&self) -> Option<Denied> {
        match self {
            Self::Refused(d) => Some(*d),
            _ => None,
        }
    }
    fn missing(&self) -> Option<Missing> {
        match self {
            Self::NoSuchConversation => Some(Missing::Conversation),
            Self::NoSuchUser => Some(Missing::User),
            _ => None,
        }
    }
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for ChangeMessageError {
    fn refused(&self) -> Option<Denied> {
        match self {
            Self::Refused(d) => Some(*d),
            _ => None,
        }
    }
    fn missing(&self) -> Option<Missing> {
        match self {
            Self::NoSuchConversation => Some(Missing::Conversation),
            Self::NoSuchMessage => Some(Missing::Message),
            _ => None,
        }
    }
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for BlockError {
    fn missing(&self) -> Option<Missing> {
        matches!(self, Self::NoSuchUser).then_some(Missing::User)
    }
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for RegisterError {
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for LoginError {
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for AuthenticateError {
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for OpenSessionError {
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

impl Failure for PresenceError {
    fn unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

// ------------------------------------------------------------ sends

/// The two ways a client sends, as the tests spell them.
impl ChatService {
    async fn send_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        body: MessageBody,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<Message, SendError> {
        let to = Recipient::Conversation(conversation.clone());
        self.send(
            caller,
            Draft {
                to,
                body,
                client_msg_id,
                attachments: Vec::new(),
            },
        )
        .await
    }

    async fn send_private_message(
        &self,
        caller: &Caller,
        to: &UserId,
        body: MessageBody,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<Message, SendError> {
        let to = Recipient::User(to.clone());
        self.send(
            caller,
            Draft {
                to,
                body,
                client_msg_id,
                attachments: Vec::new(),
            },
        )
        .await
    }
}

// ------------------------------------------------------------ harness

/// Builds a [`ChatService`] from mocks. Every mock but the clock starts with
/// no expectation, so any call a test did not set up fails it.
struct Harness {
    users: MockUserStore,
    messages: MockMessageStore,
    /// Answers that nobody blocks anybody unless a test expects otherwise
    /// (its expectations come first, and mockall takes the first match).
    blocks: MockBlockStore,
    auth: MockAuthenticator,
    devices: MockDeviceStore,
    revoker: MockRevoker,
    files: MockFileStore,
    presence: MockPresenceRegistry,
    transport: MockTransport,
    clock: MockClock,
    limits: Limits,
}

impl Harness {
    fn new() -> Self {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        Self {
            users: MockUserStore::new(),
            messages: MockMessageStore::new(),
            blocks: MockBlockStore::new(),
            auth: MockAuthenticator::new(),
            presence: MockPresenceRegistry::new(),
            transport: MockTransport::new(),
            clock,
            limits: Limits {
                max_sessions_per_user: MAX_SESSIONS,
                max_devices_per_user: MAX_DEVICES,
                refresh_ttl_ms: REFRESH_TTL_MS,
                refresh_grace_ms: GRACE_MS,
                files: FileLimits {
                    max_file_bytes: 100,
                    quota_bytes: 250,
                },
            },
            devices: MockDeviceStore::new(),
            revoker: MockRevoker::new(),
            files: MockFileStore::new(),
        }
    }

    fn build(mut self) -> ChatService {
        let transport = Arc::new(std::mem::replace(&mut self.transport, MockTransport::new()));
        self.build_with_transport(transport)
    }

    /// Builds with a hand-written transport instead of the mock.
    fn build_with_transport(mut self, transport: Arc<dyn Transport>) -> ChatService {
        self.blocks
            .expect_blocked_by()
            .returning(|_| Ok(Vec::new()));
        self.blocks
            .expect_blockers_of()
            .returning(|_| Ok(Vec::new()));
        ChatService::new(
            Ports {
                users: Arc::new(self.users),
                messages: Arc::new(self.messages),
                blocks: Arc::new(self.blocks),
                auth: Arc::new(self.auth),
                devices: Arc::new(self.devices),
                revoker: Arc::new(self.revoker),
                files: Arc::new(self.files),
                presence: Arc::new(self.presence),
                transport,
                clock: Arc::new(self.clock),
            },
            self.limits,
        )
    }

    /// Exactly one delivery, of exactly this event to exactly this audience.
    fn expect_delivery(&mut self, delivery: Delivery, event: Event) {
        self.transport
            .expect_deliver()
            .withf(move |d, e| *d == delivery && *e == event)
            .times(1)
            .return_const(());
    }

    fn expect_no_delivery(&mut self) {
        self.transport.expect_deliver().never();
    }

    /// One device session "dev-1" created for a user in generation 4,
    /// with refresh token "refresh-1".
    fn expect_device_created(&mut self) {
        self.auth
            .expect_new_refresh_token()
            .times(1)
            .returning(|| ("refresh-1".to_owned(), RefreshHash("h1".to_owned())));
        self.devices
            .expect_create_device()
            .withf(|d, max| {
                d.refresh == RefreshHash("h1".to_owned())
                    && d.now == NOW
                    && d.refresh_expires_at == REFRESH_EXPIRES
                    && d.info == device()
                    && *max == MAX_DEVICES
            })
            .times(1)
            .returning(|_, _| {
                Ok(CreatedDevice {
                    id: DeviceId::new("dev-1"),
                    generation: 4,
                    ended: Vec::new(),
                })
            });
    }

    /// A device session created for `user` and its tokens issued at the
    /// clock's time.
    fn expect_token_for(&mut self, user: &User) {
        self.expect_device_created();
        let expected = user.clone();
        self.auth
            .expect_issue_token()
            .withf(move |u, d, generation, now| {
                *u == expected && d.as_str() == "dev-1" && *generation == 4 && *now == NOW
            })
            .times(1)
            .returning(|u, _, _, _| Ok(token(u)));
    }

    /// The store answers `access(conversation, user)` once with `access`.
    fn expect_access(&mut self, conversation: &str, user: &str, access: Access) {
        let (c, u) = (conv_id(conversation), uid(user));
        self.messages
            .expect_access()
            .withf(move |conv, who| *conv == c && *who == u)
            .times(1)
            .return_once(move |_, _| Ok(access));
    }

    fn expect_members(&mut self, conversation: &str, names: &[&str]) {
        let c = conv_id(conversation);
        let members = uids(names);
        self.messages
            .expect_member_ids()
            .withf(move |conv| *conv == c)
            .times(1)
            .return_once(move |_| Ok(members));
    }

    fn expect_contacts(&mut self, of: &str, names: &[&str]) {
        let who = uid(of);
        let contacts = uids(names);
        self.messages
            .expect_contacts()
            .withf(move |u| *u == who)
            .times(1)
            .return_once(move |_| Ok(contacts));
    }
}

#[test]
fn now_is_the_clocks_time() {
    assert_eq!(Harness::new().build().now(), NOW);
}

#[tokio::test]
async fn the_service_is_healthy_when_the_store_answers_a_ping() {
    let mut h = Harness::new();
    h.messages.expect_ping().times(1).returning(|| Ok(()));
    assert!(h.build().healthy().await);
}

#[tokio::test]
async fn the_service_is_unhealthy_when_the_store_ping_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_ping()
        .times(1)
        .returning(|| Err(store_error()));
    assert!(!h.build().healthy().await);
}

// ------------------------------------------------------------ register

#[tokio::test]
async fn register_with_a_name_taken_by_the_pre_check_is_a_conflict_and_computes_no_hash() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .withf(|name| name.as_str() == "Alice")
        .times(1)
        .returning(|_| Ok(Some((user("alice"), hash()))));
    h.auth.expect_hash_password().never();
    h.users.expect_create_user().never();
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .register(username("Alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterError::Taken), "{err:?}");
}

#[tokio::test]
async fn register_losing_the_race_to_create_the_name_is_a_conflict() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Ok(None));
    h.auth
        .expect_hash_password()
        .times(1)
        .returning(|_| Ok(hash()));
    h.users
        .expect_create_user()
        .times(1)
        .returning(|_, _, _| Err(CreateUserError::Duplicate));
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .register(username("alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterError::Taken), "{err:?}");
}

#[tokio::test]
async fn register_hashes_the_password_stores_the_user_at_the_clocks_time_and_signs_them_in() {
    let mut h = Harness::new();
    let alice = user("Alice.W-1");
    h.users
        .expect_credentials()
        .withf(|name| name.as_str() == "Alice.W-1")
        .times(1)
        .returning(|_| Ok(None));
    h.auth
        .expect_hash_password()
        .withf(|p| p.expose() == "a good password")
        .times(1)
        .returning(|_| Ok(hash()));
    let created = alice.clone();
    h.users
        .expect_create_user()
        .withf(|name, stored, now| name.as_str() == "Alice.W-1" && *stored == hash() && *now == NOW)
        .times(1)
        .return_once(move |_, _, _| Ok(created));
    h.expect_token_for(&alice);
    let signed = h
        .build()
        .register(username("Alice.W-1"), password("a good password"), device())
        .await
        .unwrap();
    assert_eq!(signed, signed_in(&alice));
}

#[tokio::test]
async fn register_fails_internally_and_hashes_nothing_when_the_pre_check_fails() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Err(store_error()));
    h.auth.expect_hash_password().never();
    h.users.expect_create_user().never();
    let err = h
        .build()
        .register(username("alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn register_fails_internally_when_hashing_fails_and_stores_nothing() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Ok(None));
    h.auth
        .expect_hash_password()
        .times(1)
        .returning(|_| Err(store_error()));
    h.users.expect_create_user().never();
    let err = h
        .build()
        .register(username("alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn register_fails_internally_when_the_store_cannot_create_the_user() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Ok(None));
    h.auth
        .expect_hash_password()
        .times(1)
        .returning(|_| Ok(hash()));
    h.users
        .expect_create_user()
        .times(1)
        .returning(|_, _, _| Err(CreateUserError::Unknown(store_error())));
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .register(username("alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn register_fails_internally_when_no_token_can_be_issued() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Ok(None));
    h.auth
        .expect_hash_password()
        .times(1)
        .returning(|_| Ok(hash()));
    h.users
        .expect_create_user()
        .times(1)
        .returning(|_, _, _| Ok(user("alice")));
    h.expect_device_created();
    h.auth
        .expect_issue_token()
        .times(1)
        .returning(|_, _, _, _| Err(store_error()));
    let err = h
        .build()
        .register(username("alice"), password("a good password"), device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ login

/// A harness whose store knows `alice` with [`hash`] and whose authenticator
/// answers `matches` for her password, expecting one verification.
fn login_harness(known: bool, matches: bool) -> Harness {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .withf(|name| name.as_str() == "alice")
        .times(1)
        .returning(move |_| Ok(known.then(|| (user("alice"), hash()))));
    h.auth
        .expect_verify_password()
        .withf(move |password, stored| password == "the password" && *stored == known.then(hash))
        .times(1)
        .returning(move |_, _| Ok(matches));
    h
}

#[tokio::test]
async fn login_with_a_wrong_password_is_unauthorized_and_issues_no_token() {
    let mut h = login_harness(true, false);
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::InvalidCredentials), "{err:?}");
}

#[tokio::test]
async fn login_as_an_unknown_user_still_verifies_a_password_without_a_hash() {
    let mut h = login_harness(false, false);
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::InvalidCredentials), "{err:?}");
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let unknown = login_harness(false, false)
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    let wrong = login_harness(true, false)
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert!(
        matches!(
            (&unknown, &wrong),
            (
                LoginError::InvalidCredentials,
                LoginError::InvalidCredentials
            )
        ),
        "both must be InvalidCredentials: {unknown:?} / {wrong:?}"
    );
}

#[tokio::test]
async fn login_with_an_invalid_username_verifies_a_password_without_asking_the_store() {
    let mut h = Harness::new();
    h.users.expect_credentials().never();
    h.auth
        .expect_verify_password()
        .withf(|password, stored| password == "the password" && stored.is_none())
        .times(1)
        .returning(|_, _| Ok(false));
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("a b", "the password", device())
        .await
        .unwrap_err();
    let same = login_harness(true, false)
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::InvalidCredentials), "{err:?}");
    assert!(
        matches!(same, LoginError::InvalidCredentials),
        "the same answer as a wrong password"
    );
}

#[tokio::test]
async fn login_as_an_unknown_user_is_refused_even_if_the_authenticator_says_yes() {
    let mut h = login_harness(false, true);
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert!(matches!(err, LoginError::InvalidCredentials), "{err:?}");
}

#[tokio::test]
async fn login_with_the_right_password_issues_a_token_at_the_clocks_time() {
    let mut h = login_harness(true, true);
    let alice = user("alice");
    h.expect_token_for(&alice);
    let signed = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap();
    assert_eq!(signed, signed_in(&alice));
}

#[tokio::test]
async fn login_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Err(store_error()));
    h.auth
        .expect_verify_password()
        .times(0..=1)
        .returning(|_, _| Ok(false));
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn login_fails_internally_when_password_verification_fails() {
    let mut h = Harness::new();
    h.users
        .expect_credentials()
        .times(1)
        .returning(|_| Ok(Some((user("alice"), hash()))));
    h.auth
        .expect_verify_password()
        .times(1)
        .returning(|_, _| Err(store_error()));
    h.auth.expect_issue_token().never();
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn login_fails_internally_when_no_token_can_be_issued() {
    let mut h = login_harness(true, true);
    h.expect_device_created();
    h.auth
        .expect_issue_token()
        .times(1)
        .returning(|_, _, _, _| Err(store_error()));
    let err = h
        .build()
        .login("alice", "the password", device())
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ authenticate

#[tokio::test]
async fn authenticate_without_a_token_is_unauthorized_and_checks_nothing() {
    let mut h = Harness::new();
    h.auth.expect_verify_token().never();
    h.devices.expect_token_state().never();
    let err = h.build().authenticate(None).await.unwrap_err();
    assert!(matches!(err, AuthenticateError::InvalidToken), "{err:?}");
}

#[tokio::test]
async fn authenticate_with_an_invalid_token_is_unauthorized() {
    let mut h = Harness::new();
    h.auth
        .expect_verify_token()
        .withf(|token, now| token == "forged" && *now == NOW)
        .times(1)
        .returning(|_, _| Err(InvalidToken));
    h.devices.expect_token_state().never();
    let err = h.build().authenticate(Some("forged")).await.unwrap_err();
    assert!(matches!(err, AuthenticateError::InvalidToken), "{err:?}");
}

/// An authenticator that accepts `token` as a token of `user` on "dev-1"
/// in generation 4.
fn expect_valid_token(h: &mut Harness, token: &'static str, user: &str) {
    let id = uid(user);
    h.auth
        .expect_verify_token()
        .withf(move |t, now| t == token && *now == NOW)
        .times(1)
        .returning(move |_, _| {
            Ok(TokenClaims {
                user_id: id.clone(),
                device: DeviceId::new("dev-1"),
                generation: 4,
                expires_at: EXPIRES,
            })
        });
}

/// The store's answer for `user` on "dev-1": `live`, in `generation`,
/// last used at the clock's time.
fn expect_token_state(h: &mut Harness, user_name: &'static str, live: bool, generation: u64) {
    let who = user_name.to_owned();
    h.devices
        .expect_token_state()
        .withf(move |u, d, now| *u == uid(&who) && d.as_str() == "dev-1" && *now == NOW)
        .times(1)
        .returning(move |_, _, _| {
            Ok(Some(TokenState {
                user: user(user_name),
                generation,
                live,
                last_used_at: NOW,
            }))
        });
}

#[tokio::test]
async fn authenticate_with_the_token_of_an_unknown_device_session_is_unauthorized() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "ghost");
    h.devices
        .expect_token_state()
        .times(1)
        .returning(|_, _, _| Ok(None));
    let err = h.build().authenticate(Some("good")).await.unwrap_err();
    assert!(matches!(err, AuthenticateError::InvalidToken), "{err:?}");
}

#[tokio::test]
async fn authenticate_with_the_token_of_an_ended_device_session_is_unauthorized() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "alice");
    expect_token_state(&mut h, "alice", false, 4);
    let err = h.build().authenticate(Some("good")).await.unwrap_err();
    assert!(matches!(err, AuthenticateError::InvalidToken), "{err:?}");
}

#[tokio::test]
async fn authenticate_with_a_token_of_an_earlier_generation_is_unauthorized() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "alice");
    expect_token_state(&mut h, "alice", true, 5);
    let err = h.build().authenticate(Some("good")).await.unwrap_err();
    assert!(matches!(err, AuthenticateError::InvalidToken), "{err:?}");
}

#[tokio::test]
async fn authenticate_with_a_valid_token_returns_the_user_device_and_expiry() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "alice");
    expect_token_state(&mut h, "alice", true, 4);
    h.devices.expect_touch_device().never();
    let auth = h.build().authenticate(Some("good")).await.unwrap();
    assert_eq!(
        auth,
        Authenticated {
            user: user("alice"),
            device: DeviceId::new("dev-1"),
            expires_at: EXPIRES,
        }
    );
}

#[tokio::test]
async fn authenticate_records_the_use_of_a_device_session_idle_for_a_minute() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "alice");
    h.devices
        .expect_token_state()
        .times(1)
        .returning(|_, _, _| {
            Ok(Some(TokenState {
                user: user("alice"),
                generation: 4,
                live: true,
                last_used_at: t(NOW.millis() - 60_000),
            }))
        });
    h.devices
        .expect_touch_device()
        .withf(|d, now, _| d.as_str() == "dev-1" && *now == NOW)
        .times(1)
        .returning(|_, _, _| Ok(()));
    h.build().authenticate(Some("good")).await.unwrap();
}

#[tokio::test]
async fn authenticate_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    expect_valid_token(&mut h, "good", "alice");
    h.devices
        .expect_token_state()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    let err = h.build().authenticate(Some("good")).await.unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ find_users

/// Expects one prefix search for "al" with `limit`, answering nobody.
fn expect_user_search(h: &mut Harness, limit: u32) {
    h.users
        .expect_users_by_prefix()
        .withf(move |prefix, l| prefix == "al" && *l == limit)
        .times(1)
        .returning(|_, _| Ok(vec![]));
    h.presence
        .expect_live()
        .times(0..=1)
        .returning(|_| Ok(HashMap::new()));
}

#[tokio::test]
async fn find_users_asks_for_20_users_by_default() {
    let mut h = Harness::new();
    expect_user_search(&mut h, 20);
    assert!(
        h.build()
            .find_users(&uid("viewer"), "al", page(None))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn find_users_passes_a_limit_within_range_through() {
    for limit in [1, 37, 100] {
        let mut h = Harness::new();
        expect_user_search(&mut h, limit);
        h.build()
            .find_users(&uid("viewer"), "al", page(Some(u64::from(limit))))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn find_users_clamps_the_limit_to_100() {
    for asked in [101, 5000, u64::from(u32::MAX) + 1, u64::MAX] {
        let mut h = Harness::new();
        expect_user_search(&mut h, 100);
        h.build()
            .find_users(&uid("viewer"), "al", page(Some(asked)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn find_users_marks_online_exactly_the_users_the_registry_knows_in_store_order() {
    let mut h = Harness::new();
    h.users
        .expect_users_by_prefix()
        .times(1)
        .returning(|_, _| Ok(vec![user("alf"), user("alice"), user("alfred")]));
    h.presence
        .expect_live()
        .withf(|ids| ids == uids(&["alf", "alice", "alfred"]).as_slice())
        .times(1)
        .returning(|_| {
            let live = LiveStatus {
                status: ActiveStatus::Away,
                last_active: NOW,
            };
            Ok(HashMap::from([(uid("alice"), live)]))
        });
    let found = h
        .build()
        .find_users(&uid("viewer"), "al", page(None))
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![
            (user("alf"), false),
            (user("alice"), true),
            (user("alfred"), false),
        ]
    );
}

#[tokio::test]
async fn find_users_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.users
        .expect_users_by_prefix()
        .times(1)
        .returning(|_, _| Err(store_error()));
    h.presence.expect_live().never();
    let err = h
        .build()
        .find_users(&uid("viewer"), "al", page(None))
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn find_users_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    h.users
        .expect_users_by_prefix()
        .times(1)
        .returning(|_, _| Ok(vec![user("alice")]));
    h.presence
        .expect_live()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h
        .build()
        .find_users(&uid("viewer"), "al", page(None))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ open_session

/// Expects the registry to open `ann-1` for ann at the clock's time with the
/// configured limit, answering `result`.
fn expect_open(h: &mut Harness, result: Result<bool, OpenSessionError>) {
    h.presence
        .expect_open()
        .withf(|u, s, now, limit| {
            *u == user("ann") && *s == session("ann-1") && *now == NOW && *limit == MAX_SESSIONS
        })
        .times(1)
        .return_once(move |_, _, _, _| result);
}

#[tokio::test]
async fn the_first_session_announces_online_to_each_contact_once_and_never_to_the_user() {
    let mut h = Harness::new();
    expect_open(&mut h, Ok(true));
    h.expect_contacts("ann", &["cid", "bob", "ann", "cid"]);
    h.expect_delivery(
        Delivery {
            users: uids(&["bob", "cid"]),
            except: None,
        },
        Event::Presence(presence(user("ann"), Status::Online, Some(NOW))),
    );
    h.build()
        .open_session(&caller("ann", "ann-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_session_does_not_announce_anything() {
    let mut h = Harness::new();
    expect_open(&mut h, Ok(false));
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    h.build()
        .open_session(&caller("ann", "ann-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_beyond_the_limit_is_rate_limited_and_announces_nothing() {
    let mut h = Harness::new();
    expect_open(
        &mut h,
        Err(OpenSessionError::TooMany(TooManySessions {
            limit: MAX_SESSIONS,
        })),
    );
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .open_session(&caller("ann", "ann-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpenSessionError::TooMany(t) if t.limit == 3),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_user_without_contacts_comes_online_without_any_delivery() {
    for contacts in [&[][..], &["ann"][..], &["ann", "ann"][..]] {
        let mut h = Harness::new();
        expect_open(&mut h, Ok(true));
        h.expect_contacts("ann", contacts);
        h.expect_no_delivery();
        h.build()
            .open_session(&caller("ann", "ann-1"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn opening_a_session_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    expect_open(&mut h, Err(OpenSessionError::Unknown(store_error())));
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .open_session(&caller("ann", "ann-1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

/// The HTTP adapter calls `open_session` before it registers the socket and
/// only calls `close_session` for sessions that got that far. So an error
/// from `open_session` after the registry accepted the session leaks it:
/// the user stays online forever and holds one of their session slots.
#[tokio::test]
async fn a_failed_online_announcement_leaves_no_session_registered() {
    let mut h = Harness::new();
    expect_open(&mut h, Ok(true));
    h.messages
        .expect_contacts()
        .returning(|_| Err(store_error()));
    // Either fix is fine: carry on without the announcement, or undo the open.
    let closed = Arc::new(AtomicBool::new(false));
    let closed_flag = closed.clone();
    h.presence
        .expect_close()
        .withf(|u, s| *u == uid("ann") && *s == session("ann-1"))
        .times(0..=1)
        .returning(move |_, _| {
            closed_flag.store(true, Ordering::SeqCst);
            Ok(true)
        });
    h.users
        .expect_set_last_seen()
        .times(0..=1)
        .returning(|_, _| Ok(()));
    h.expect_no_delivery();
    let result = h.build().open_session(&caller("ann", "ann-1")).await;
    assert!(
        result.is_ok() || closed.load(Ordering::SeqCst),
        "open_session answered {result:?} but left the session registered"
    );
}

// ------------------------------------------------------------ close_session

fn expect_close(h: &mut Harness, result: Result<bool, PortError>) {
    h.presence
        .expect_close()
        .withf(|u, s| *u == uid("ann") && *s == session("ann-1"))
        .times(1)
        .return_once(move |_, _| result);
}

#[tokio::test]
async fn closing_the_last_session_records_last_seen_then_announces_offline_to_contacts() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    expect_close(&mut h, Ok(true));
    h.users
        .expect_set_last_seen()
        .withf(|u, at| *u == uid("ann") && *at == NOW)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    h.expect_contacts("ann", &["bob", "ann", "bob"]);
    h.transport
        .expect_deliver()
        .withf(|d, e| {
            *d == Delivery {
                users: uids(&["bob"]),
                except: None,
            } && *e == Event::Presence(presence(user("ann"), Status::Offline, Some(NOW)))
        })
        .times(1)
        .in_sequence(&mut seq)
        .return_const(());
    h.build()
        .close_session(&caller("ann", "ann-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn closing_a_session_that_is_not_the_last_announces_nothing() {
    let mut h = Harness::new();
    expect_close(&mut h, Ok(false));
    // Last seen is recorded at every close: cheap, and never stale.
    h.users
        .expect_set_last_seen()
        .withf(|u, at| *u == uid("ann") && *at == NOW)
        .times(1)
        .returning(|_, _| Ok(()));
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    h.build()
        .close_session(&caller("ann", "ann-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn closing_the_last_session_of_a_user_without_contacts_delivers_nothing() {
    let mut h = Harness::new();
    expect_close(&mut h, Ok(true));
    h.users
        .expect_set_last_seen()
        .times(1)
        .returning(|_, _| Ok(()));
    h.expect_contacts("ann", &["ann"]);
    h.expect_no_delivery();
    h.build()
        .close_session(&caller("ann", "ann-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn closing_a_session_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    expect_close(&mut h, Err(store_error()));
    h.users
        .expect_set_last_seen()
        .times(1)
        .returning(|_, _| Ok(()));
    h.expect_no_delivery();
    let err = h
        .build()
        .close_session(&caller("ann", "ann-1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn closing_the_last_session_fails_internally_when_last_seen_cannot_be_stored() {
    let mut h = Harness::new();
    expect_close(&mut h, Ok(true));
    h.users
        .expect_set_last_seen()
        .times(1)
        .returning(|_, _| Err(store_error()));
    // Whether contacts still hear of it is left open here.
    h.messages
        .expect_contacts()
        .times(0..=1)
        .returning(|_| Ok(vec![]));
    let err = h
        .build()
        .close_session(&caller("ann", "ann-1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ touch

#[tokio::test]
async fn touch_records_activity_at_the_clocks_time() {
    let mut h = Harness::new();
    h.presence
        .expect_touch()
        .withf(|u, now| *u == uid("ann") && *now == NOW)
        .times(1)
        .returning(|_, _| Ok(()));
    h.build().touch(&caller("ann", "ann-1")).await.unwrap();
}

#[tokio::test]
async fn touch_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    h.presence
        .expect_touch()
        .times(1)
        .returning(|_, _| Err(store_error()));
    let err = h.build().touch(&caller("ann", "ann-1")).await.unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ send_message

/// Expects one append of exactly `expected`, answering `result`.
fn expect_append(
    h: &mut Harness,
    expected: NewMessage,
    result: Result<AppendOutcome, AppendError>,
) {
    h.messages
        .expect_append()
        .withf(move |new| *new == expected)
        .times(1)
        .return_once(move |_| result);
}

fn new_message(conversation: &str, sender: &str, text: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        conversation_id: conv_id(conversation),
        sender: user(sender),
        body: body(text),
        client_msg_id: key.map(client_id),
        created_at: NOW,
        attachments: Vec::new(),
    }
}

#[tokio::test]
async fn a_message_goes_to_every_member_except_the_sending_session() {
    let mut h = Harness::new();
    let stored = message("c1", 7, &user("ann"), "hi");
    expect_append(
        &mut h,
        new_message("c1", "ann", "hi", None),
        Ok(AppendOutcome::Stored {
            message: stored.clone(),
            members: uids(&["ann", "bob", "cid"]),
        }),
    );
    // ann is listed: her other sessions get the event, only ann-1 is skipped.
    h.expect_delivery(
        Delivery {
            users: uids(&["ann", "bob", "cid"]),
            except: Some(session("ann-1")),
        },
        Event::Message(stored.clone()),
    );
    let acked = h
        .build()
        .send_message(&caller("ann", "ann-1"), &conv_id("c1"), body("hi"), None)
        .await
        .unwrap();
    assert_eq!(acked, stored, "the ack carries the stored message");
}

#[tokio::test]
async fn the_new_message_carries_the_clocks_time_the_caller_as_sender_and_the_request_as_sent() {
    let mut h = Harness::new();
    let expected = NewMessage {
        conversation_id: conv_id("c1"),
        sender: user("ann"),
        body: body("  hello there \n"),
        client_msg_id: Some(client_id("k-1")),
        created_at: NOW,
        attachments: Vec::new(),
    };
    let stored = stored_from(&expected, 1);
    expect_append(
        &mut h,
        expected,
        Ok(AppendOutcome::Stored {
            message: stored.clone(),
            members: uids(&["ann"]),
        }),
    );
    h.transport.expect_deliver().times(1).return_const(());
    let acked = h
        .build()
        .send_message(
            &caller("ann", "ann-1"),
            &conv_id("c1"),
            body("  hello there \n"),
            Some(client_id("k-1")),
        )
        .await
        .unwrap();
    assert_eq!(acked, stored);
}

#[tokio::test]
async fn a_retried_send_returns_the_original_and_delivers_nothing() {
    let mut h = Harness::new();
    let original = Message {
        client_msg_id: Some(client_id("k-1")),
        created_at: t(1_000),
        ..message("c1", 3, &user("ann"), "hi")
    };
    expect_append(
        &mut h,
        new_message("c1", "ann", "hi", Some("k-1")),
        Ok(AppendOutcome::Duplicate(original.clone())),
    );
    h.expect_no_delivery();
    let acked = h
        .build()
        .send_message(
            &caller("ann", "ann-2"),
            &conv_id("c1"),
            body("hi"),
            Some(client_id("k-1")),
        )
        .await
        .unwrap();
    assert_eq!(acked, original);
}

/// Sends "hi" from ann-1 into c1 with the store answering `error`.
async fn send_failing_with(error: AppendError) -> SendError {
    let mut h = Harness::new();
    expect_append(&mut h, new_message("c1", "ann", "hi", None), Err(error));
    h.expect_no_delivery();
    h.build()
        .send_message(&caller("ann", "ann-1"), &conv_id("c1"), body("hi"), None)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn sending_to_an_unknown_conversation_is_not_found() {
    let err = send_failing_with(AppendError::NoSuchConversation).await;
    assert!(err.missing() == Some(Missing::Conversation), "{err:?}");
}

#[tokio::test]
async fn sending_to_a_conversation_one_is_not_in_is_forbidden() {
    let err = send_failing_with(AppendError::NotMember).await;
    assert!(err.refused() == Some(Denied::NotMember), "{err:?}");
}

#[tokio::test]
async fn sending_fails_internally_when_the_store_fails() {
    let err = send_failing_with(AppendError::Unknown(store_error())).await;
    assert_internal(&err);
}

#[tokio::test]
async fn a_failed_or_duplicate_send_does_not_hold_up_the_next_send_to_the_same_conversation() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    let original = message("c1", 1, &user("ann"), "hi");
    let stored = message("c1", 2, &user("ann"), "hi");
    h.messages
        .expect_append()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(AppendError::NotMember));
    h.messages
        .expect_append()
        .times(1)
        .in_sequence(&mut seq)
        .return_once(move |_| Ok(AppendOutcome::Duplicate(original)));
    let delivered = stored.clone();
    h.messages
        .expect_append()
        .times(1)
        .in_sequence(&mut seq)
        .return_once(move |_| {
            Ok(AppendOutcome::Stored {
                message: delivered,
                members: uids(&["ann"]),
            })
        });
    h.transport.expect_deliver().times(1).return_const(());
    let service = h.build();
    let ann = caller("ann", "ann-1");
    let c1 = conv_id("c1");
    let send = || service.send_message(&ann, &c1, body("hi"), None);
    assert!(send().await.is_err());
    assert_eq!(send().await.unwrap().seq, 1);
    let third = tokio::time::timeout(Duration::from_secs(5), send())
        .await
        .expect("the conversation's lock was released");
    assert_eq!(third.unwrap(), stored);
}

// ------------------------------------------------------------ send_private_message

fn expect_recipient(h: &mut Harness, name: &str, exists: bool) {
    let id = uid(name);
    let found = exists.then(|| user(name));
    h.users
        .expect_user()
        .withf(move |u| *u == id)
        .times(1)
        .return_once(move |_| Ok(found));
}

fn expect_direct(h: &mut Harness, a: &str, b: &str, conversation: &str) {
    let (a, b, c) = (uid(a), uid(b), conv_id(conversation));
    h.messages
        .expect_direct_conversation()
        .withf(move |x, y, now| *x == a && *y == b && *now == NOW)
        .times(1)
        .return_once(move |_, _, _| Ok(c));
}

#[tokio::test]
async fn a_private_message_to_an_unknown_user_is_not_found_and_creates_no_conversation() {
    let mut h = Harness::new();
    expect_recipient(&mut h, "ghost", false);
    h.messages.expect_direct_conversation().never();
    h.messages.expect_append().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .send_private_message(&caller("ann", "ann-1"), &uid("ghost"), body("hi"), None)
        .await
        .unwrap_err();
    assert!(err.missing() == Some(Missing::User), "{err:?}");
}

#[tokio::test]
async fn a_private_message_is_sent_in_the_direct_conversation_of_the_caller_and_the_recipient() {
    let mut h = Harness::new();
    let mut order = Sequence::new();
    expect_recipient(&mut h, "bob", true);
    let (a, b) = (uid("ann"), uid("bob"));
    h.messages
        .expect_direct_conversation()
        .withf(move |x, y, now| *x == a && *y == b && *now == NOW)
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _, _| Ok(conv_id("d-ann-bob")));
    let stored = message("d-ann-bob", 1, &user("ann"), "hi");
    let answer = stored.clone();
    let expected = new_message("d-ann-bob", "ann", "hi", Some("k-1"));
    h.messages
        .expect_append()
        .withf(move |new| *new == expected)
        .times(1)
        .in_sequence(&mut order)
        .return_once(move |_| {
            Ok(AppendOutcome::Stored {
                message: answer,
                members: uids(&["ann", "bob"]),
            })
        });
    h.expect_delivery(
        Delivery {
            users: uids(&["ann", "bob"]),
            except: Some(session("ann-1")),
        },
        Event::Message(stored.clone()),
    );
    let acked = h
        .build()
        .send_private_message(
            &caller("ann", "ann-1"),
            &uid("bob"),
            body("hi"),
            Some(client_id("k-1")),
        )
        .await
        .unwrap();
    assert_eq!(acked, stored);
}

#[tokio::test]
async fn a_user_may_send_a_private_message_to_themself_and_their_other_sessions_get_it() {
    let mut h = Harness::new();
    expect_recipient(&mut h, "ann", true);
    expect_direct(&mut h, "ann", "ann", "d-ann");
    let stored = message("d-ann", 1, &user("ann"), "note to self");
    expect_append(
        &mut h,
        new_message("d-ann", "ann", "note to self", None),
        Ok(AppendOutcome::Stored {
            message: stored.clone(),
            members: uids(&["ann"]),
        }),
    );
    h.expect_delivery(
        Delivery {
            users: uids(&["ann"]),
            except: Some(session("ann-1")),
        },
        Event::Message(stored.clone()),
    );
    let acked = h
        .build()
        .send_private_message(
            &caller("ann", "ann-1"),
            &uid("ann"),
            body("note to self"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(acked, stored);
}

#[tokio::test]
async fn a_retried_private_message_returns_the_original_and_delivers_nothing() {
    let mut h = Harness::new();
    expect_recipient(&mut h, "bob", true);
    expect_direct(&mut h, "ann", "bob", "d-ann-bob");
    let original = message("d-ann-bob", 4, &user("ann"), "hi");
    expect_append(
        &mut h,
        new_message("d-ann-bob", "ann", "hi", Some("k-1")),
        Ok(AppendOutcome::Duplicate(original.clone())),
    );
    h.expect_no_delivery();
    let acked = h
        .build()
        .send_private_message(
            &caller("ann", "ann-1"),
            &uid("bob"),
            body("hi"),
            Some(client_id("k-1")),
        )
        .await
        .unwrap();
    assert_eq!(acked, original);
}

#[tokio::test]
async fn a_private_message_fails_internally_when_the_recipient_cannot_be_looked_up() {
    let mut h = Harness::new();
    h.users
        .expect_user()
        .times(1)
        .returning(|_| Err(store_error()));
    h.messages.expect_direct_conversation().never();
    h.messages.expect_append().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .send_private_message(&caller("ann", "ann-1"), &uid("bob"), body("hi"), None)
        .await
        .unwrap_err();
    assert_internal(&err);
}

#[tokio::test]
async fn a_private_message_fails_internally_when_the_direct_conversation_cannot_be_made() {
    let mut h = Harness::new();
    expect_recipient(&mut h, "bob", true);
    h.messages
        .expect_direct_conversation()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.messages.expect_append().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .send_private_message(&caller("ann", "ann-1"), &uid("bob"), body("hi"), None)
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ history

fn a_query() -> HistoryQuery {
    HistoryQuery {
        before_seq: Some(40),
        after_seq: Some(10),
        limit: 17,
    }
}

#[tokio::test]
async fn a_member_gets_the_stores_page_for_the_query_as_asked() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", member("c1", 50, 0));
    let page = HistoryPage {
        messages: vec![
            message("c1", 11, &user("bob"), "one"),
            message("c1", 12, &user("ann"), "two"),
        ],
        has_more: true,
    };
    let answer = page.clone();
    h.messages
        .expect_history()
        .withf(|c, q| *c == conv_id("c1") && *q == a_query())
        .times(1)
        .return_once(move |_, _| Ok(answer));
    let got = h
        .build()
        .history(&caller("ann", "ann-1"), &conv_id("c1"), a_query())
        .await
        .unwrap();
    assert_eq!(got, page);
}

#[tokio::test]
async fn history_of_a_conversation_one_is_not_in_is_forbidden_and_reads_nothing() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", Access::NotMember(conversation("c1", 5)));
    h.messages.expect_history().never();
    let err = h
        .build()
        .history(&caller("ann", "ann-1"), &conv_id("c1"), a_query())
        .await
        .unwrap_err();
    assert!(err.refused() == Some(Denied::NotMember), "{err:?}");
}

#[tokio::test]
async fn history_of_an_unknown_conversation_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("nope", "ann", Access::NoSuchConversation);
    h.messages.expect_history().never();
    let err = h
        .build()
        .history(&caller("ann", "ann-1"), &conv_id("nope"), a_query())
        .await
        .unwrap_err();
    assert!(err.missing() == Some(Missing::Conversation), "{err:?}");
}

#[tokio::test]
async fn history_fails_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_access()
        .times(1)
        .returning(|_, _| Err(store_error()));
    h.messages.expect_history().never();
    let err = h
        .build()
        .history(&caller("ann", "ann-1"), &conv_id("c1"), a_query())
        .await
        .unwrap_err();
    assert_internal(&err);

    let mut h = Harness::new();
    h.expect_access("c1", "ann", member("c1", 5, 0));
    h.messages
        .expect_history()
        .times(1)
        .returning(|_, _| Err(store_error()));
    let err = h
        .build()
        .history(&caller("ann", "ann-1"), &conv_id("c1"), a_query())
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ conversations

#[tokio::test]
async fn conversations_are_the_stores_list_for_the_caller() {
    let mut h = Harness::new();
    let list = vec![ConversationSummary {
        conversation: conversation("c1", 9),
        members: vec![user("ann"), user("bob")],
        member_count: 2,
        last_read_seq: 4,
        last_message: Some(message("c1", 9, &user("bob"), "latest")),
    }];
    let answer = list.clone();
    h.messages
        .expect_conversations_of()
        .withf(|u| *u == uid("ann"))
        .times(1)
        .return_once(move |_| Ok(answer));
    let got = h
        .build()
        .conversations(&caller("ann", "ann-1"))
        .await
        .unwrap();
    assert_eq!(got, list);
}

#[tokio::test]
async fn conversations_fail_internally_when_the_store_fails() {
    let mut h = Harness::new();
    h.messages
        .expect_conversations_of()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h
        .build()
        .conversations(&caller("ann", "ann-1"))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ mark_read

fn expect_advance(h: &mut Harness, seq: &mut Sequence, to: u64, moved: bool) {
    h.messages
        .expect_advance_read_marker()
        .withf(move |c, u, s| *c == conv_id("c1") && *u == uid("ann") && *s == to)
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _, _| Ok(moved));
}

fn receipt(seq: u64) -> Event {
    Event::Receipt {
        conversation_id: conv_id("c1"),
        user_id: uid("ann"),
        seq,
    }
}

/// mark_read with nothing expected past the access check.
async fn mark_read_that_stays(last_seq: u64, last_read: u64, asked: u64) -> u64 {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", member("c1", last_seq, last_read));
    h.messages.expect_advance_read_marker().never();
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    h.build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), asked)
        .await
        .unwrap()
}

#[tokio::test]
async fn marking_read_forward_moves_the_marker_and_tells_every_member_except_the_reading_session() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("c1", "ann", member("c1", 10, 3));
    expect_advance(&mut h, &mut seq, 7, true);
    h.expect_members("c1", &["ann", "bob"]);
    // ann is listed: her other sessions learn the marker moved, ann-1 has the ack.
    h.transport
        .expect_deliver()
        .withf(|d, e| {
            *d == Delivery {
                users: uids(&["ann", "bob"]),
                except: Some(session("ann-1")),
            } && *e == receipt(7)
        })
        .times(1)
        .in_sequence(&mut seq)
        .return_const(());
    let marker = h
        .build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), 7)
        .await
        .unwrap();
    assert_eq!(marker, 7);
}

#[tokio::test]
async fn marking_read_backwards_writes_nothing_sends_nothing_and_returns_the_current_marker() {
    assert_eq!(mark_read_that_stays(10, 5, 3).await, 5);
    assert_eq!(mark_read_that_stays(10, 5, 0).await, 5);
}

#[tokio::test]
async fn marking_read_at_the_current_marker_writes_nothing_and_sends_nothing() {
    assert_eq!(mark_read_that_stays(10, 5, 5).await, 5);
}

#[tokio::test]
async fn marking_read_in_an_empty_conversation_stays_at_0() {
    assert_eq!(mark_read_that_stays(0, 0, 1).await, 0);
}

#[tokio::test]
async fn marking_read_beyond_the_newest_message_when_already_there_writes_nothing() {
    assert_eq!(mark_read_that_stays(10, 10, 99).await, 10);
}

#[tokio::test]
async fn marking_read_beyond_the_newest_message_is_clamped_to_it() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.expect_access("c1", "ann", member("c1", 10, 3));
    expect_advance(&mut h, &mut seq, 10, true);
    h.expect_members("c1", &["ann", "bob"]);
    h.expect_delivery(
        Delivery {
            users: uids(&["ann", "bob"]),
            except: Some(session("ann-1")),
        },
        receipt(10),
    );
    let marker = h
        .build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), u64::MAX)
        .await
        .unwrap();
    assert_eq!(marker, 10);
}

#[tokio::test]
async fn a_read_marker_that_a_concurrent_call_already_moved_sends_no_receipt() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    // Another session of ann's marked 9 read between the check and the write;
    // the answer is the marker as it now stands.
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    h.messages
        .expect_access()
        .withf(|conv, who| *conv == conv_id("c1") && *who == uid("ann"))
        .times(2)
        .returning(move |_, _| {
            let first = reads.fetch_add(1, Ordering::SeqCst) == 0;
            Ok(member("c1", 10, if first { 3 } else { 9 }))
        });
    expect_advance(&mut h, &mut seq, 7, false);
    h.messages
        .expect_member_ids()
        .times(0..=1)
        .returning(|_| Ok(uids(&["ann", "bob"])));
    h.expect_no_delivery();
    let marker = h
        .build()
        .mark_read(&caller("ann", "ann-2"), &conv_id("c1"), 7)
        .await
        .unwrap();
    assert_eq!(marker, 9);
}

#[tokio::test]
async fn marking_read_in_a_conversation_one_is_not_in_is_forbidden() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", Access::NotMember(conversation("c1", 10)));
    h.messages.expect_advance_read_marker().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), 5)
        .await
        .unwrap_err();
    assert!(err.refused() == Some(Denied::NotMember), "{err:?}");
}

#[tokio::test]
async fn marking_read_in_an_unknown_conversation_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", Access::NoSuchConversation);
    h.messages.expect_advance_read_marker().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), 5)
        .await
        .unwrap_err();
    assert!(err.missing() == Some(Missing::Conversation), "{err:?}");
}

#[tokio::test]
async fn marking_read_fails_internally_and_sends_nothing_when_the_store_fails() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", member("c1", 10, 3));
    h.messages
        .expect_advance_read_marker()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.expect_no_delivery();
    let err = h
        .build()
        .mark_read(&caller("ann", "ann-1"), &conv_id("c1"), 5)
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ typing

#[tokio::test]
async fn typing_reaches_the_other_members_but_none_of_the_typists_sessions() {
    for active in [true, false] {
        let mut h = Harness::new();
        h.expect_access("c1", "bob", member("c1", 3, 3));
        h.expect_members("c1", &["ann", "bob", "cid"]);
        h.expect_delivery(
            Delivery {
                users: uids(&["ann", "cid"]),
                except: None,
            },
            Event::Typing {
                conversation_id: conv_id("c1"),
                user_id: uid("bob"),
                active,
            },
        );
        h.build()
            .typing(&caller("bob", "bob-1"), &conv_id("c1"), active)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn typing_alone_in_a_conversation_delivers_nothing() {
    let mut h = Harness::new();
    h.expect_access("d-ann", "ann", member("d-ann", 3, 3));
    h.expect_members("d-ann", &["ann"]);
    h.expect_no_delivery();
    h.build()
        .typing(&caller("ann", "ann-1"), &conv_id("d-ann"), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn typing_in_a_conversation_one_is_not_in_is_forbidden() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", Access::NotMember(conversation("c1", 3)));
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .typing(&caller("ann", "ann-1"), &conv_id("c1"), true)
        .await
        .unwrap_err();
    assert!(err.refused() == Some(Denied::NotMember), "{err:?}");
}

#[tokio::test]
async fn typing_in_an_unknown_conversation_is_not_found() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", Access::NoSuchConversation);
    h.messages.expect_member_ids().never();
    h.expect_no_delivery();
    let err = h
        .build()
        .typing(&caller("ann", "ann-1"), &conv_id("c1"), true)
        .await
        .unwrap_err();
    assert!(err.missing() == Some(Missing::Conversation), "{err:?}");
}

#[tokio::test]
async fn typing_fails_internally_when_the_members_cannot_be_read() {
    let mut h = Harness::new();
    h.expect_access("c1", "ann", member("c1", 3, 3));
    h.messages
        .expect_member_ids()
        .times(1)
        .returning(|_| Err(store_error()));
    h.expect_no_delivery();
    let err = h
        .build()
        .typing(&caller("ann", "ann-1"), &conv_id("c1"), true)
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ connected_users

fn expect_online_users(h: &mut Harness, limit: usize) {
    h.presence
        .expect_online_users()
        .withf(move |l| *l == limit)
        .times(1)
        .returning(|_| Ok(vec![user("ann"), user("bob")]));
}

#[tokio::test]
async fn connected_users_lists_100_by_default() {
    let mut h = Harness::new();
    expect_online_users(&mut h, 100);
    let users = h
        .build()
        .connected_users(&caller("viewer", "v-1"), page(None))
        .await
        .unwrap();
    assert_eq!(users, vec![user("ann"), user("bob")]);
}

#[tokio::test]
async fn connected_users_passes_a_limit_within_range_through() {
    for limit in [1, 250, 1000] {
        let mut h = Harness::new();
        expect_online_users(&mut h, limit);
        h.build()
            .connected_users(&caller("viewer", "v-1"), page(Some(limit as u64)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn connected_users_clamps_the_limit_to_1000() {
    for asked in [1001, u64::MAX] {
        let mut h = Harness::new();
        expect_online_users(&mut h, 1000);
        h.build()
            .connected_users(&caller("viewer", "v-1"), page(Some(asked)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn connected_users_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    h.presence
        .expect_online_users()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h
        .build()
        .connected_users(&caller("viewer", "v-1"), page(None))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ presence_of

/// Expects one lookup of exactly `asked` in the store and in the registry.
fn expect_presence_lookup(
    h: &mut Harness,
    asked: Vec<UserId>,
    known: Vec<(User, Option<Timestamp>)>,
    live: HashMap<UserId, LiveStatus>,
) {
    let also_asked = asked.clone();
    h.users
        .expect_users_last_seen()
        .withf(move |ids| ids == asked.as_slice())
        .times(1)
        .return_once(move |_| Ok(known));
    let contacts = also_asked.clone();
    h.presence
        .expect_live()
        .withf(move |ids| ids == also_asked.as_slice())
        .times(1)
        .return_once(move |_| Ok(live));
    // The viewer shares a conversation with everyone asked about.
    h.messages
        .expect_contacts()
        .withf(|u| *u == uid("viewer"))
        .times(1)
        .return_once(move |_| Ok(contacts));
}

#[tokio::test]
async fn presence_of_more_than_1000_ids_is_a_bad_request_and_reads_nothing() {
    let mut h = Harness::new();
    h.users.expect_users_last_seen().never();
    h.presence.expect_live().never();
    let ids = (0..1001).map(|i| uid(&format!("u{i}"))).collect();
    let err = h
        .build()
        .presence_of(&caller("viewer", "v-1"), ids)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PresenceError::TooManyIds { max: 1000 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn presence_of_exactly_1000_ids_is_answered() {
    let mut h = Harness::new();
    let ids: Vec<UserId> = (0..1000).map(|i| uid(&format!("u{i}"))).collect();
    expect_presence_lookup(&mut h, ids.clone(), vec![], HashMap::new());
    assert!(
        h.build()
            .presence_of(&caller("viewer", "v-1"), ids)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn presence_of_asks_about_each_id_once_and_answers_each_once() {
    let mut h = Harness::new();
    expect_presence_lookup(
        &mut h,
        uids(&["bob", "ann", "cid"]),
        vec![
            (user("ann"), None),
            (user("bob"), None),
            (user("cid"), None),
        ],
        HashMap::new(),
    );
    let got = h
        .build()
        .presence_of(
            &caller("viewer", "v-1"),
            uids(&["bob", "ann", "bob", "cid", "ann"]),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            presence(user("bob"), Status::Offline, None),
            presence(user("ann"), Status::Offline, None),
            presence(user("cid"), Status::Offline, None),
        ]
    );
}

#[tokio::test]
async fn presence_of_skips_unknown_ids_and_keeps_the_order_asked() {
    let mut h = Harness::new();
    let asked = uids(&["cid", "ghost", "ann", "bob"]);
    // The store answers in its own order.
    expect_presence_lookup(
        &mut h,
        asked.clone(),
        vec![
            (user("ann"), None),
            (user("bob"), None),
            (user("cid"), None),
        ],
        HashMap::new(),
    );
    let got = h
        .build()
        .presence_of(&caller("viewer", "v-1"), asked)
        .await
        .unwrap();
    let names: Vec<&str> = got.iter().map(|p| p.user.username.as_str()).collect();
    assert_eq!(names, ["cid", "ann", "bob"]);
}

#[tokio::test]
async fn an_online_user_shows_the_live_status_and_last_activity() {
    let mut h = Harness::new();
    let live = HashMap::from([
        (
            uid("ann"),
            LiveStatus {
                status: ActiveStatus::Away,
                last_active: t(5_000),
            },
        ),
        (
            uid("bob"),
            LiveStatus {
                status: ActiveStatus::Online,
                last_active: t(6_000),
            },
        ),
    ]);
    expect_presence_lookup(
        &mut h,
        uids(&["ann", "bob"]),
        vec![(user("ann"), Some(t(1_000))), (user("bob"), None)],
        live,
    );
    let got = h
        .build()
        .presence_of(&caller("viewer", "v-1"), uids(&["ann", "bob"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            presence(user("ann"), Status::Away, Some(t(5_000))),
            presence(user("bob"), Status::Online, Some(t(6_000))),
        ]
    );
}

#[tokio::test]
async fn an_offline_user_shows_offline_and_the_stored_last_seen() {
    let mut h = Harness::new();
    expect_presence_lookup(
        &mut h,
        uids(&["ann", "bob"]),
        vec![(user("ann"), Some(t(2_000))), (user("bob"), None)],
        HashMap::new(),
    );
    let got = h
        .build()
        .presence_of(&caller("viewer", "v-1"), uids(&["ann", "bob"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            presence(user("ann"), Status::Offline, Some(t(2_000))),
            presence(user("bob"), Status::Offline, None),
        ]
    );
}

#[tokio::test]
async fn presence_of_fails_internally_when_the_store_or_the_registry_fails() {
    let mut h = Harness::new();
    h.users
        .expect_users_last_seen()
        .times(1)
        .returning(|_| Err(store_error()));
    h.presence
        .expect_live()
        .times(0..=1)
        .returning(|_| Ok(HashMap::new()));
    let err = h
        .build()
        .presence_of(&caller("viewer", "v-1"), uids(&["ann"]))
        .await
        .unwrap_err();
    assert_internal(&err);

    let mut h = Harness::new();
    h.users
        .expect_users_last_seen()
        .times(0..=1)
        .returning(|_| Ok(vec![(user("ann"), None)]));
    h.presence
        .expect_live()
        .times(1)
        .returning(|_| Err(store_error()));
    let err = h
        .build()
        .presence_of(&caller("viewer", "v-1"), uids(&["ann"]))
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ set_status

fn expect_set_status(h: &mut Harness, status: ActiveStatus, result: Option<(LiveStatus, bool)>) {
    h.presence
        .expect_set_status()
        .withf(move |u, s, now| *u == uid("ann") && *s == status && *now == NOW)
        .times(1)
        .return_once(move |_, _, _| Ok(result));
}

#[tokio::test]
async fn a_status_change_is_announced_to_contacts_and_returned() {
    for (chosen, shown) in [
        (ActiveStatus::Away, Status::Away),
        (ActiveStatus::Online, Status::Online),
    ] {
        let mut h = Harness::new();
        let live = LiveStatus {
            status: chosen,
            last_active: NOW,
        };
        expect_set_status(&mut h, chosen, Some((live, true)));
        h.expect_contacts("ann", &["cid", "ann", "bob"]);
        let expected = presence(user("ann"), shown, Some(NOW));
        h.expect_delivery(
            Delivery {
                users: uids(&["bob", "cid"]),
                except: None,
            },
            Event::Presence(expected.clone()),
        );
        let got = h
            .build()
            .set_status(&caller("ann", "ann-1"), chosen)
            .await
            .unwrap();
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn an_unchanged_status_is_not_announced() {
    let mut h = Harness::new();
    let live = LiveStatus {
        status: ActiveStatus::Away,
        last_active: NOW,
    };
    expect_set_status(&mut h, ActiveStatus::Away, Some((live, false)));
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    let got = h
        .build()
        .set_status(&caller("ann", "ann-1"), ActiveStatus::Away)
        .await
        .unwrap();
    assert_eq!(got, presence(user("ann"), Status::Away, Some(NOW)));
}

#[tokio::test]
async fn a_changed_status_to_a_user_without_contacts_delivers_nothing() {
    let mut h = Harness::new();
    let live = LiveStatus {
        status: ActiveStatus::Away,
        last_active: NOW,
    };
    expect_set_status(&mut h, ActiveStatus::Away, Some((live, true)));
    h.expect_contacts("ann", &[]);
    h.expect_no_delivery();
    let got = h
        .build()
        .set_status(&caller("ann", "ann-1"), ActiveStatus::Away)
        .await
        .unwrap();
    assert_eq!(got, presence(user("ann"), Status::Away, Some(NOW)));
}

#[tokio::test]
async fn setting_a_status_after_a_racing_close_answers_the_chosen_status_without_announcing() {
    let mut h = Harness::new();
    expect_set_status(&mut h, ActiveStatus::Away, None);
    h.messages.expect_contacts().never();
    h.expect_no_delivery();
    let got = h
        .build()
        .set_status(&caller("ann", "ann-1"), ActiveStatus::Away)
        .await
        .unwrap();
    assert_eq!(got, presence(user("ann"), Status::Away, Some(NOW)));
}

#[tokio::test]
async fn setting_a_status_fails_internally_when_the_registry_fails() {
    let mut h = Harness::new();
    h.presence
        .expect_set_status()
        .times(1)
        .returning(|_, _, _| Err(store_error()));
    h.expect_no_delivery();
    let err = h
        .build()
        .set_status(&caller("ann", "ann-1"), ActiveStatus::Away)
        .await
        .unwrap_err();
    assert_internal(&err);
}

// ------------------------------------------------------------ ordering

/// A transport that records the seq of each message event it is handed.
/// Odd seqs take a few extra scheduler turns before they are recorded, so a
/// service that handed events off outside the conversation's lock would let
/// the next seq overtake them.
#[derive(Default)]
struct RecordingTransport {
    seqs: std::sync::Mutex<Vec<u64>>,
}

#[async_trait]
impl Transport for RecordingTransport {
    async fn deliver(&self, _delivery: Delivery, event: Event) {
        let Event::Message(message) = event else {
            panic!("only message events expected, got {event:?}");
        };
        if message.seq % 2 == 1 {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        self.seqs.lock().unwrap().push(message.seq);
    }
}

/// What [`send_concurrently`] saw.
struct Raced {
    /// The seqs acked, sorted.
    acked: Vec<u64>,
    /// The seqs in the order the transport was handed their events.
    delivered: Vec<u64>,
    /// How many messages each store call carried.
    store_calls: Vec<usize>,
}

/// Spawns `n` concurrent sends into one conversation, whose store assigns
/// seqs in the order the appends run.
async fn send_concurrently(n: u64) -> Raced {
    let mut h = Harness::new();
    let next = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stored = {
        let next = next.clone();
        move |new: &NewMessage| {
            let seq = next.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(AppendOutcome::Stored {
                message: stored_from(new, seq),
                members: uids(&["ann", "bob"]),
            })
        }
    };
    let (one, all) = (stored.clone(), stored);
    let (c1, c2) = (calls.clone(), calls.clone());
    h.messages.expect_append().returning(move |new| {
        c1.lock().unwrap().push(1);
        one(&new)
    });
    h.messages.expect_append_all().returning(move |batch| {
        c2.lock().unwrap().push(batch.len());
        batch.iter().map(&all).collect()
    });
    let transport = Arc::new(RecordingTransport::default());
    let service = Arc::new(h.build_with_transport(transport.clone()));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                let who = if i % 2 == 0 { "ann" } else { "bob" };
                let me = caller(who, &format!("{who}-{i}"));
                service
                    .send_message(&me, &conv_id("c1"), body("hi"), None)
                    .await
                    .unwrap()
                    .seq
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.unwrap());
    }
    acked.sort_unstable();
    let delivered = transport.seqs.lock().unwrap().clone();
    let store_calls = calls.lock().unwrap().clone();
    Raced {
        acked,
        delivered,
        store_calls,
    }
}

#[tokio::test]
async fn concurrent_sends_to_one_conversation_deliver_events_in_the_order_their_appends_returned() {
    let raced = send_concurrently(64).await;
    let all: Vec<u64> = (1..=64).collect();
    assert_eq!(raced.acked, all);
    assert_eq!(raced.delivered, all, "events must leave in seq order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_on_many_threads_deliver_events_in_the_order_their_appends_returned() {
    let raced = send_concurrently(200).await;
    let all: Vec<u64> = (1..=200).collect();
    assert_eq!(raced.acked, all);
    assert_eq!(raced.delivered, all, "events must leave in seq order");
}

#[tokio::test]
async fn sends_that_wait_for_a_busy_conversation_share_one_store_call() {
    let raced = send_concurrently(64).await;
    assert_eq!(
        raced.store_calls.iter().sum::<usize>(),
        64,
        "each message once"
    );
    // The first send finds the conversation idle and goes alone; the rest
    // queue while its event is handed over, and go together.
    assert!(
        raced.store_calls.len() < 64 && raced.store_calls.iter().any(|&n| n > 1),
        "store calls carried {:?} messages",
        raced.store_calls
    );
}

#[tokio::test]
async fn one_failing_message_of_a_shared_store_call_fails_alone() {
    let mut h = Harness::new();
    // Two sends queue behind a third that holds the conversation's turn
    // while its event is handed over; they reach the store together.
    h.messages.expect_append().times(1).returning(|new| {
        Ok(AppendOutcome::Stored {
            message: stored_from(&new, 1),
            members: uids(&["ann", "bob"]),
        })
    });
    h.messages.expect_append_all().times(1).returning(|batch| {
        assert_eq!(batch.len(), 2);
        vec![
            Err(AppendError::NotMember),
            Ok(AppendOutcome::Stored {
                message: stored_from(&batch[1], 2),
                members: uids(&["ann", "bob"]),
            }),
        ]
    });
    let transport = Arc::new(RecordingTransport::default());
    let service = Arc::new(h.build_with_transport(transport.clone()));
    let send = |who: &'static str, session: &'static str| {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .send_message(&caller(who, session), &conv_id("c1"), body("hi"), None)
                .await
        })
    };
    let (first, second, third) = (
        send("ann", "ann-1"),
        send("cid", "cid-1"),
        send("bob", "bob-1"),
    );
    assert_eq!(first.await.unwrap().unwrap().seq, 1);
    let refused = second.await.unwrap().unwrap_err();
    assert!(refused.refused().is_some(), "{refused:?}");
    assert_eq!(third.await.unwrap().unwrap().seq, 2);
    assert_eq!(*transport.seqs.lock().unwrap(), vec![1, 2]);
}

fn draft(to: Recipient, text: &str) -> Draft {
    Draft {
        to,
        body: body(text),
        client_msg_id: None,
        attachments: Vec::new(),
    }
}

#[tokio::test]
async fn sends_given_together_keep_their_order_and_share_one_store_call() {
    let mut h = Harness::new();
    let texts = ["m1", "m2", "m3", "m4", "m5"];
    h.messages.expect_append().never();
    h.messages
        .expect_append_all()
        .times(1)
        .returning(move |batch| {
            let bodies: Vec<&str> = batch.iter().map(|m| m.body.as_str()).collect();
            assert_eq!(bodies, texts, "the store gets them in the order given");
            let stored = |(i, new)| {
                Ok(AppendOutcome::Stored {
                    message: stored_from(new, i as u64 + 1),
                    members: uids(&["ann", "bob"]),
                })
            };
            batch.iter().enumerate().map(stored).collect()
        });
    let transport = Arc::new(RecordingTransport::default());
    let service = h.build_with_transport(transport.clone());
    let drafts = texts
        .iter()
        .map(|t| draft(Recipient::Conversation(conv_id("c1")), t))
        .collect();
    let results = service.send_all(&caller("ann", "ann-1"), drafts).await;
    let seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(*transport.seqs.lock().unwrap(), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_store_call_takes_at_most_256_waiting_messages_and_the_rest_follow_in_order() {
    let mut h = Harness::new();
    let next = Arc::new(AtomicU64::new(0));
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (n, s) = (next.clone(), sizes.clone());
    h.messages.expect_append_all().returning(move |batch| {
        s.lock().unwrap().push(batch.len());
        let stored = |new: &NewMessage| {
            Ok(AppendOutcome::Stored {
                message: stored_from(new, n.fetch_add(1, Ordering::SeqCst) + 1),
                members: uids(&["ann", "bob"]),
            })
        };
        batch.iter().map(stored).collect()
    });
    let transport = Arc::new(RecordingTransport::default());
    let service = h.build_with_transport(transport.clone());
    let drafts = (0..600)
        .map(|i| draft(Recipient::Conversation(conv_id("c1")), &format!("m{i}")))
        .collect();
    let results = service.send_all(&caller("ann", "ann-1"), drafts).await;
    let seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
    assert_eq!(*sizes.lock().unwrap(), [256, 256, 88]);
    assert_eq!(*transport.seqs.lock().unwrap(), seqs, "events in seq order");
}

#[tokio::test]
async fn an_upload_is_its_owners_alone_and_gone_once_expired() {
    use crate::domain::error::FileError;
    use crate::domain::file::Upload;
    use crate::domain::ids::UploadId;
    let upload = |id: &str, owner: &str, expires_at: Timestamp| Upload {
        id: UploadId::new(id),
        user: uid(owner),
        length: 10,
        offset: 0,
        name: String::new(),
        created_at: t(NOW.millis() - 1000),
        expires_at,
        file: None,
    };
    let mut h = Harness::new();
    let live = upload("live", "ann", t(NOW.millis() + 1));
    let late = upload("late", "ann", NOW);
    let rows = [live.clone(), late];
    h.files
        .expect_upload()
        .returning(move |id| Ok(rows.iter().find(|u| u.id == *id).cloned()));
    let s = h.build();
    let of = |who: &str, id: &str| {
        let (who, id) = (uid(who), UploadId::new(id));
        let s = &s;
        async move { s.upload_of(&who, &id).await }
    };
    assert_eq!(of("ann", "live").await.unwrap(), live);
    assert!(matches!(
        of("ann", "late").await,
        Err(FileError::UploadExpired)
    ));
    // Someone else's, expired or not, and none at all look alike.
    for (who, id) in [("bob", "live"), ("bob", "late"), ("ann", "none")] {
        assert!(
            matches!(of(who, id).await, Err(FileError::NotFound)),
            "{who} {id}"
        );
    }
}

#[tokio::test]
async fn each_send_given_together_gets_its_own_answer() {
    let mut h = Harness::new();
    h.users
        .expect_user()
        .withf(|id| *id == uid("ghost"))
        .times(1)
        .returning(|_| Ok(None));
    h.users
        .expect_user()
        .withf(|id| *id == uid("bob"))
        .times(1)
        .returning(|_| Ok(Some(user("bob"))));
    h.messages
        .expect_direct_conversation()
        .withf(|a, b, _| *a == uid("ann") && *b == uid("bob"))
        .times(1)
        .returning(|_, _, _| Ok(conv_id("d1")));
    // Two conversations: one store call each, in the order given.
    let mut order = Sequence::new();
    h.messages
        .expect_append()
        .withf(|new| new.conversation_id == conv_id("c1"))
        .times(1)
        .in_sequence(&mut order)
        .returning(|_| Err(AppendError::NotMember));
    h.messages
        .expect_append()
        .withf(|new| new.conversation_id == conv_id("d1"))
        .times(1)
        .in_sequence(&mut order)
        .returning(|new| {
            Ok(AppendOutcome::Stored {
                message: stored_from(&new, 4),
                members: uids(&["ann", "bob"]),
            })
        });
    h.transport.expect_deliver().times(1).return_const(());
    let drafts = vec![
        draft(Recipient::User(uid("ghost")), "a"),
        draft(Recipient::Conversation(conv_id("c1")), "b"),
        draft(Recipient::User(uid("bob")), "c"),
    ];
    let results = h.build().send_all(&caller("ann", "ann-1"), drafts).await;
    let [ghost, stranger, bob] = &results[..] else {
        panic!("three answers expected, got {results:?}");
    };
    assert!(matches!(ghost, Err(SendError::NoSuchUser)), "{ghost:?}");
    assert!(
        matches!(stranger, Err(SendError::Refused(_))),
        "{stranger:?}"
    );
    assert_eq!(bob.as_ref().unwrap().seq, 4);
}

mod rooms;

mod blocks;

mod devices;

mod files;

// ------------------------------------------------------------ the trait

#[test]
fn the_service_answers_through_its_trait() {
    let service: Arc<dyn UseCases> = Arc::new(Harness::new().build());
    assert_eq!(service.now(), NOW);
}
