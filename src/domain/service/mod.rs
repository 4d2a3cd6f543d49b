//! The use cases: every request a client can make, carried out against the
//! ports. This is the only place that decides what happens; the adapters
//! parse, call one method here, and render the answer.
//!
//! One file per capability: [`accounts`], [`messages`], [`rooms`],
//! [`presence`] (sessions and who is online), [`blocks`]; [`lanes`] keeps
//! each conversation's commits and deliveries in order. [`UseCases`] is
//! the same use cases as a trait, for the inbound adapters.

use std::sync::Arc;

use super::conversation::{Conversation, Membership};
use super::error::ConversationError;
use super::event::Event;
use super::file::FileLimits;
use super::ids::{ConversationId, DeviceId, FileId, SessionId, UserId};
use super::membership::{Action, Allowed, Denied, authorize};
use super::message::{ClientMsgId, MessageBody};
use super::ports::{
    Access, Authenticator, BlockStore, Clock, DeviceStore, FileStore, IssuedToken, MessageStore,
    PresenceRegistry, Revoker, Transport, UserStore,
};
use super::time::Timestamp;
use super::user::User;

mod accounts;
mod blocks;
mod devices;
mod files;
mod lanes;
mod messages;
mod presence;
mod rooms;
mod usecases;

use lanes::{LANES, Lane};
#[cfg(test)]
pub use usecases::MockUseCases;
pub use usecases::UseCases;

/// Default and largest page of `GET /users`.
pub const USERS_PAGE: (usize, usize) = (20, 100);
/// Default and largest page of `listRooms`.
pub const ROOMS_PAGE: (usize, usize) = (50, 200);
/// Default and largest page of `getConnectedUsers`.
pub const CONNECTED_PAGE: (usize, usize) = (100, 1000);
/// Most ids one `getPresence` may ask about.
pub const MAX_PRESENCE_IDS: usize = 1000;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The direct conversation with this user, created on first use.
    User(UserId),
    /// A conversation the sender is in.
    Conversation(ConversationId),
}

/// One message to send, as a client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Where it goes.
    pub to: Recipient,
    /// What it says.
    pub body: MessageBody,
    /// The client's idempotency key.
    pub client_msg_id: Option<ClientMsgId>,
    /// Files the sender uploaded, to carry.
    pub attachments: Vec<FileId>,
}

/// The adapters the core runs on.
pub struct Ports {
    /// Users and credentials.
    pub users: Arc<dyn UserStore>,
    /// Conversations and messages.
    pub messages: Arc<dyn MessageStore>,
    /// Who blocks whom.
    pub blocks: Arc<dyn BlockStore>,
    /// Passwords and tokens.
    pub auth: Arc<dyn Authenticator>,
    /// Device sessions, refresh tokens, password changes.
    pub devices: Arc<dyn DeviceStore>,
    /// Closes the connections of ended device sessions, on every node.
    pub revoker: Arc<dyn Revoker>,
    /// Uploaded files and who may read them.
    pub files: Arc<dyn FileStore>,
    /// Who is online.
    pub presence: Arc<dyn PresenceRegistry>,
    /// Event delivery to sessions.
    pub transport: Arc<dyn Transport>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

/// Limits the core enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most WebSocket connections one user may hold open.
    pub max_sessions_per_user: usize,
    /// Most live device sessions one user may have; one more ends the
    /// least recently used.
    pub max_devices_per_user: usize,
    /// How long a refresh token is accepted, in milliseconds.
    pub refresh_ttl_ms: i64,
    /// How long after its rotation a refresh token presented again is
    /// taken for a race, not a theft, in milliseconds.
    pub refresh_grace_ms: i64,
    /// File sizes and quotas.
    pub files: FileLimits,
}

/// The caller of a WebSocket request: a user on one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub user: User,
    /// On which session.
    pub session: SessionId,
}

/// A user with fresh tokens, the answer to register, login and refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// Their access token.
    pub token: IssuedToken,
    /// The device session the tokens belong to.
    pub device: DeviceId,
    /// The refresh token, which buys the next pair once.
    pub refresh: IssuedToken,
}

/// A token that checked out, with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user it belongs to (who still exists).
    pub user: User,
    /// The device session it belongs to (still live).
    pub device: DeviceId,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// An answer for the caller, and an event for the caller's own session to
/// receive right after it (the rest of the audience already has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// What the ack carries.
    pub value: T,
    /// The event the calling session gets after the ack, if any.
    pub then: Option<Event>,
}

impl<T> Answer<T> {
    fn quiet(value: T) -> Self {
        Self { value, then: None }
    }
}

/// The chat service: every use case of the contract.
pub struct ChatService {
    ports: Ports,
    limits: Limits,
    lanes: Box<[Lane]>,
}

impl ChatService {
    /// Wires the core to its adapters.
    pub fn new(ports: Ports, limits: Limits) -> Self {
        let lanes = (0..LANES).map(|_| Lane::default()).collect();
        Self {
            ports,
            limits,
            lanes,
        }
    }

    /// Whether the store answers.
    pub async fn healthy(&self) -> bool {
        self.ports.messages.ping().await.is_ok()
    }

    /// The current time, for the adapters' `serverTime` fields.
    pub fn now(&self) -> Timestamp {
        self.ports.clock.now()
    }

    /// Checks that the caller is a member allowed to take `action`.
    async fn member_of(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        action: Action,
    ) -> Result<(Conversation, Membership), ConversationError> {
        let (conv, membership) = self.standing(caller, conversation).await?;
        authorize(&conv.kind, membership.is_some(), action)?;
        let membership = membership.ok_or(Denied::NotMember)?;
        Ok((conv, membership))
    }

    /// Checks that the caller may take `action`, member or not.
    async fn allowed(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        action: Action,
    ) -> Result<(Conversation, Allowed), ConversationError> {
        let (conv, membership) = self.standing(caller, conversation).await?;
        let allowed = authorize(&conv.kind, membership.is_some(), action)?;
        Ok((conv, allowed))
    }

    /// The conversation and the caller's membership in it, if any.
    async fn standing(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<(Conversation, Option<Membership>), ConversationError> {
        match self
            .ports
            .messages
            .access(conversation, &caller.user.id)
            .await?
        {
            Access::Member(c, m) => Ok((c, Some(m))),
            Access::NotMember(c) => Ok((c, None)),
            Access::NoSuchConversation => Err(ConversationError::NoSuchConversation),
        }
    }
}

#[cfg(test)]
mod tests;
