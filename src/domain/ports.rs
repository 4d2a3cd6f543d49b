//! Ports: the traits through which the core reaches storage, credentials,
//! the clock and the sessions. Adapters implement them; the use cases in
//! [`super::service`] hold them as `Arc<dyn Port>`.
//!
//! Every port is `Send + Sync`. Every async method may be called from many
//! tasks at once.

use std::collections::HashMap;

use async_trait::async_trait;

use super::conversation::{Conversation, ConversationSummary, Membership, RoomName, Visibility};
use super::device::{
    CreatedDevice, Device, NewDevice, RefreshHash, Revocation, Rotate, Rotation, TokenState,
};
use super::error::PortError;
use super::event::Event;
use super::file::{FileCreated, FileInfo, Upload};
use super::ids::{ConversationId, DeviceId, FileId, MessageId, SessionId, UploadId, UserId};
use super::membership::Denied;
use super::message::{
    AppendOutcome, HistoryPage, HistoryQuery, Message, MessageChange, NewMessage,
};
use super::presence::{ActiveStatus, LiveStatus, TooManySessions};
use super::routing::Delivery;
use super::time::Timestamp;
use super::user::{Password, PasswordHash, User, Username};

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// The name is taken, without regard to case.
    #[error("username is taken")]
    Duplicate,
    /// The store failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why a message could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// No conversation has that id.
    #[error("conversation not found")]
    NoSuchConversation,
    /// The sender is not a member of it.
    #[error("not a member of this conversation")]
    NotMember,
    /// It is a direct conversation whose other member blocks the sender
    /// ([`super::membership::authorize_send`]).
    #[error("the other member blocks the sender")]
    Blocked,
    /// The store failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

impl From<Denied> for AppendError {
    /// A refusal of [`super::membership::authorize_send`], which refuses
    /// only these two ways, as the store reports it.
    fn from(d: Denied) -> Self {
        match d {
            Denied::Blocked => Self::Blocked,
            _ => Self::NotMember,
        }
    }
}

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum OpenSessionError {
    /// The user is at the per-user session limit.
    #[error(transparent)]
    TooMany(#[from] TooManySessions),
    /// The registry failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// What a user may do in a conversation, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No conversation has that id.
    NoSuchConversation,
    /// It exists; the user is not in it.
    NotMember(Conversation),
    /// The user is a member.
    Member(Conversation, Membership),
}

/// Users and their credentials.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user.
    ///
    /// # Errors
    /// MUST return [`CreateUserError::Duplicate`] when a user with the same
    /// name ignoring ASCII case exists, even under concurrent registrations.
    async fn create_user(
        &self,
        username: &Username,
        hash: &PasswordHash,
        now: Timestamp,
    ) -> Result<User, CreateUserError>;

    /// The user registered under `username` (any case) and their password hash.
    async fn credentials(
        &self,
        username: &Username,
    ) -> Result<Option<(User, PasswordHash)>, PortError>;

    /// The user with this id.
    async fn user(&self, id: &UserId) -> Result<Option<User>, PortError>;

    /// The users among `ids` that exist, with when each was last seen
    /// (persisted when their last session closed). Unknown ids are skipped.
    async fn users_last_seen(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<(User, Option<Timestamp>)>, PortError>;

    /// Up to `limit` users whose name starts with `prefix` ignoring ASCII
    /// case, ordered by name.
    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError>;

    /// Records when a user's last session closed.
    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError>;
}

/// Conversations, members and messages.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Succeeds only when the store answers queries.
    async fn ping(&self) -> Result<(), PortError>;

    /// Whether `conversation` exists and whether `user` is in it.
    async fn access(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Access, PortError>;

    /// The one direct conversation between `a` and `b` (who may be the same
    /// user), created with both as members if it does not exist yet. MUST
    /// return the same id for (a, b) and (b, a), even when both race.
    async fn direct_conversation(
        &self,
        a: &UserId,
        b: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError>;

    /// Every member of the conversation.
    async fn member_ids(&self, conversation: &ConversationId) -> Result<Vec<UserId>, PortError>;

    /// Stores a message in one transaction, with the conversation's next
    /// seq. MUST be durable when it returns `Ok`. MUST NOT store anything
    /// when the same sender already stored the same clientMsgId in the same
    /// conversation: it returns [`AppendOutcome::Duplicate`] with the original.
    ///
    /// # Errors
    /// [`AppendError::NoSuchConversation`], or [`AppendError::NotMember`]
    /// or [`AppendError::Blocked`] as [`super::membership::authorize_send`]
    /// decides (the store supplies the facts, from the members and the
    /// blocks stored through [`BlockStore`], and decides nothing itself),
    /// checked inside the same transaction.
    async fn append(&self, message: NewMessage) -> Result<AppendOutcome, AppendError>;

    /// Appends several messages in order, each exactly as [`Self::append`]
    /// would (each succeeds or fails on its own), with one result each in
    /// the same order. A store that can should commit them together: the
    /// core hands over everything sent to a conversation while its previous
    /// commit was under way, so a busy conversation pays for one commit per
    /// burst instead of one per message.
    async fn append_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.append(message).await);
        }
        results
    }

    /// One page of history. Without `after_seq`: the newest `limit`
    /// messages below `before_seq` (or the end), `has_more` when older ones
    /// exist. With it: the first `limit` messages after it (and below
    /// `before_seq`), `has_more` when newer ones exist. Oldest first.
    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError>;

    /// Every conversation `user` is in, most recently active first.
    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationSummary>, PortError>;

    /// Moves `user`'s read marker to `seq` if it is below it. Returns
    /// whether it moved (false when a concurrent call got there first).
    async fn advance_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        seq: u64,
    ) -> Result<bool, PortError>;

    /// Every user who shares at least one conversation with `user`.
    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError>;

    /// Creates a room with `creator` as its only member.
    async fn create_room(
        &self,
        name: &RoomName,
        visibility: Visibility,
        creator: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError>;

    /// Adds `user` to a conversation, their read marker at its newest
    /// message. Returns false (and changes nothing) when already a member.
    async fn add_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError>;

    /// Removes `user` from a conversation. Returns false when not a member.
    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, PortError>;

    /// A conversation as `viewer` sees it; for a non-member the read marker
    /// is 0 and there is no last message. `None` when it does not exist.
    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError>;

    /// Up to `limit` rooms whose name starts with `prefix` ignoring case,
    /// ordered by name (its case-folded form, then id): the rooms that
    /// [`super::membership::listed`] shows `viewer` (every public room, and
    /// the private rooms `viewer` is in), each as `viewer` sees it: the
    /// query filters by [`super::membership::listing`], not a rule of its own.
    /// With `after`, only the rooms that come after that room in this
    /// order; an `after` that names no room is ignored.
    async fn list_rooms(
        &self,
        viewer: &UserId,
        prefix: &str,
        after: Option<ConversationId>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, PortError>;

    /// One message of a conversation.
    async fn message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
    ) -> Result<Option<Message>, PortError>;

    /// Edits or deletes a message; returns it as it now is.
    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError>;
}

/// Who blocks whom. A block is a pair (blocker, blocked) of existing users.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait BlockStore: Send + Sync {
    /// Records that `blocker` blocks `blocked`. Returns true when it is new
    /// and false when it was recorded already (nothing changes then). MUST
    /// be durable when it returns, and from then on every
    /// [`MessageStore::append`] on the same database, in any process, MUST
    /// see it.
    async fn block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError>;

    /// Removes a block. Returns false (and changes nothing) when there was
    /// none. Durable and seen by every later append, as [`Self::block`].
    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, PortError>;

    /// The users `blocker` blocks, the earliest blocked first.
    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<User>, PortError>;

    /// The users who block `user`, each once, in no particular order.
    async fn blockers_of(&self, user: &UserId) -> Result<Vec<UserId>, PortError>;
}

/// A token handed to a client at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The bearer token.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The user it was issued to.
    pub user_id: UserId,
    /// The device session it belongs to.
    pub device: DeviceId,
    /// The user's generation when it was issued.
    pub generation: u64,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// A token that is missing, malformed, tampered with, wrongly signed or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missing, invalid or expired token")]
pub struct InvalidToken;

/// Passwords and tokens.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Hashes a password for storage (slow by design; MUST NOT block the caller's executor).
    async fn hash_password(&self, password: &Password) -> Result<PasswordHash, PortError>;

    /// Whether `password` matches `hash`. With no hash (unknown user) it
    /// MUST spend about the same time and return false, so that timing does
    /// not tell which usernames exist.
    async fn verify_password(
        &self,
        password: &str,
        hash: Option<PasswordHash>,
    ) -> Result<bool, PortError>;

    /// Issues an access token for `user` on `device` in their
    /// `generation`, valid from `now` for the configured lifetime.
    fn issue_token(
        &self,
        user: &User,
        device: &DeviceId,
        generation: u64,
        now: Timestamp,
    ) -> Result<IssuedToken, PortError>;

    /// Checks a token's signature, algorithm and expiry at `now`, and that
    /// it names a device session.
    fn verify_token(&self, token: &str, now: Timestamp) -> Result<TokenClaims, InvalidToken>;

    /// A new refresh token, unguessable, and the hash the store keeps of it.
    fn new_refresh_token(&self) -> (String, RefreshHash);

    /// The hash of a refresh token a client presented.
    fn refresh_hash(&self, token: &str) -> RefreshHash;
}

/// Device sessions and their refresh tokens: the source of truth for
/// which tokens and connections are still good.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Stores a new device session with its first refresh token, after
    /// ending the user's least recently used live sessions beyond
    /// `max - 1`.
    async fn create_device(
        &self,
        device: NewDevice,
        max: usize,
    ) -> Result<CreatedDevice, PortError>;

    /// What a token of `user` on `device` needs checked at `now`; `None`
    /// when no such device session of that user exists.
    async fn token_state(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<Option<TokenState>, PortError>;

    /// Spends a refresh token for its successor, exactly once however many
    /// present it at the same time; ends its device session when it was
    /// spent before the grace window.
    async fn rotate_refresh(&self, rotate: Rotate) -> Result<Rotation, PortError>;

    /// The user's live device sessions, most recently used first.
    async fn devices(&self, user: &UserId, now: Timestamp) -> Result<Vec<Device>, PortError>;

    /// Records that a device session was used. Best effort.
    async fn touch_device(
        &self,
        device: &DeviceId,
        now: Timestamp,
        address: Option<String>,
    ) -> Result<(), PortError>;

    /// Ends one live device session of `user`; false when there is none
    /// by that id (ended, expired, or someone else's).
    async fn end_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<bool, PortError>;

    /// Ends every live device session of `user` but `keep`; with
    /// `bump_generation`, also voids every token issued so far.
    async fn end_devices(
        &self,
        user: &UserId,
        keep: Option<DeviceId>,
        bump_generation: bool,
        now: Timestamp,
    ) -> Result<(), PortError>;

    /// Those of `devices` that are no longer live at `now`.
    async fn ended_among(
        &self,
        devices: &[DeviceId],
        now: Timestamp,
    ) -> Result<Vec<DeviceId>, PortError>;

    /// The user's password hash, when they exist and are not deleted.
    async fn password_hash(&self, user: &UserId) -> Result<Option<PasswordHash>, PortError>;

    /// Replaces the user's password and ends every other device session,
    /// in one transaction.
    async fn set_password(
        &self,
        user: &UserId,
        hash: PasswordHash,
        keep: DeviceId,
        now: Timestamp,
    ) -> Result<(), PortError>;

    /// Deletes an account: the row stays (the name stays taken, messages
    /// keep their sender), with no usable password, every device session
    /// ended and every token voided.
    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<(), PortError>;
}

/// Uploaded files, the messages that carry them, and resumable uploads
/// under way. The bytes are elsewhere (the adapters' blob store); these
/// are the rows that say whose they are and who may read them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores a new file's row unless the uploader's files, this one
    /// included, would exceed `quota` bytes: checked in the same
    /// transaction, so that concurrent uploads cannot pass it together.
    async fn create_file(&self, file: &FileInfo, quota: u64) -> Result<FileCreated, PortError>;

    /// One file.
    async fn file(&self, id: &FileId) -> Result<Option<FileInfo>, PortError>;

    /// The files among `ids` that exist, in no particular order.
    async fn files(&self, ids: &[FileId]) -> Result<Vec<FileInfo>, PortError>;

    /// How many bytes `user` keeps: their files, and the announced length
    /// of their resumable uploads under way (reserved until they finish).
    async fn used_bytes(&self, user: &UserId) -> Result<u64, PortError>;

    /// Stores the file a resumable upload made, as [`Self::create_file`]
    /// does (the upload's own reservation not counted twice), and marks the
    /// upload complete with it, in one transaction.
    async fn complete_upload(
        &self,
        file: &FileInfo,
        quota: u64,
        upload: &UploadId,
    ) -> Result<FileCreated, PortError>;

    /// Whether `user` is a member of a conversation holding a message (not
    /// deleted) that carries the file: who may read that message may read
    /// the file.
    async fn referenced_for(&self, file: &FileId, user: &UserId) -> Result<bool, PortError>;

    /// Up to `limit` files created before `before` that no message carries
    /// (never attached, or every message that carried them was deleted).
    async fn unreferenced_files(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<FileInfo>, PortError>;

    /// Deletes the rows of `ids` that still no message carries; returns
    /// the ones it deleted.
    async fn delete_files(&self, ids: &[FileId]) -> Result<Vec<FileInfo>, PortError>;

    /// Which of the content hashes `shas` a file still names (as its bytes
    /// or its thumbnail): the blobs that must stay.
    async fn referenced_blobs(&self, shas: &[String]) -> Result<Vec<String>, PortError>;

    /// Records a resumable upload.
    async fn create_upload(&self, upload: &Upload) -> Result<(), PortError>;

    /// One resumable upload.
    async fn upload(&self, id: &UploadId) -> Result<Option<Upload>, PortError>;

    /// Moves an upload's offset from `from` to `to`; false (nothing
    /// changed) when it no longer stands at `from`: another request moved it.
    async fn advance_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<bool, PortError>;

    /// Forgets an upload; false when there was none.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool, PortError>;

    /// Up to `limit` uploads that expired before `now`.
    async fn expired_uploads(&self, now: Timestamp, limit: u32) -> Result<Vec<Upload>, PortError>;
}

/// Closes the connections a revocation ends, on every node that has one.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Revoker: Send + Sync {
    /// Told after the store committed `what`. MUST NOT wait for slow
    /// sessions or an unreachable peer: nodes that miss it catch up from
    /// the store.
    async fn revoked(&self, what: Revocation);
}

/// Who is connected, with how many sessions, and their chosen status.
/// The single source of truth for the per-user session limit.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PresenceRegistry: Send + Sync {
    /// Registers a session. Returns true when the user just came online.
    ///
    /// # Errors
    /// [`OpenSessionError::TooMany`] when the user already has `limit`
    /// sessions; nothing is registered then.
    async fn open(
        &self,
        user: &User,
        session: &SessionId,
        now: Timestamp,
        limit: usize,
    ) -> Result<bool, OpenSessionError>;

    /// Unregisters a session. Returns true when it was the user's last.
    async fn close(&self, user: &UserId, session: &SessionId) -> Result<bool, PortError>;

    /// Sets a connected user's status: the new state and whether it changed,
    /// or `None` when the user has no session.
    async fn set_status(
        &self,
        user: &UserId,
        status: ActiveStatus,
        now: Timestamp,
    ) -> Result<Option<(LiveStatus, bool)>, PortError>;

    /// Records activity, for `lastSeen`.
    async fn touch(&self, user: &UserId, now: Timestamp) -> Result<(), PortError>;

    /// The live status of those of `users` who are connected.
    async fn live(&self, users: &[UserId]) -> Result<HashMap<UserId, LiveStatus>, PortError>;

    /// Up to `limit` connected users.
    async fn online_users(&self, limit: usize) -> Result<Vec<User>, PortError>;
}

/// Carries events to the sessions of users, wherever those sessions live.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Transport: Send + Sync {
    /// Queues `event` for every session in `delivery`. MUST NOT wait for
    /// slow sessions: a session that cannot keep up is closed instead, and
    /// catches up from the store when it reconnects. Calls made in order for
    /// one conversation MUST reach each session in that order.
    async fn deliver(&self, delivery: Delivery, event: Event);
}

/// The current time.
#[cfg_attr(test, mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> Timestamp;
}
