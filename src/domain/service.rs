//! The use cases: every request a client can make, carried out against the
//! ports. This is the only place that decides what happens; the adapters
//! parse, call one method here, and render the answer.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_lock::Mutex;
use futures::channel::oneshot;

use super::blocking;
use super::conversation::{
    Conversation, ConversationKind, ConversationSummary, Membership, RoomName, RoomsPage,
    Visibility, next_read_marker,
};
use super::error::ChatError;
use super::event::{Event, MemberAction};
use super::ids::{ConversationId, MessageId, SessionId, UserId};
use super::membership::{Action, Allowed, Denied, authorize};
use super::message::{
    AppendOutcome, ClientMsgId, HistoryPage, HistoryQuery, Message, MessageBody, MessageChange,
    NewMessage,
};
use super::ports::{
    Access, AppendError, Authenticator, BlockStore, Clock, CreateUserError, IssuedToken,
    MessageStore, OpenSessionError, PresenceRegistry, Transport, UserStore,
};
use super::presence::{ActiveStatus, LiveStatus, Presence, Status};
use super::routing;
use super::time::Timestamp;
use super::user::{Password, User, Username};

/// Default and largest page of `GET /users`.
pub const USERS_PAGE: (u32, u32) = (20, 100);
/// Default and largest page of `listRooms`.
pub const ROOMS_PAGE: (usize, usize) = (50, 200);
/// Default and largest page of `getConnectedUsers`.
pub const CONNECTED_PAGE: (usize, usize) = (100, 1000);
/// Most ids one `getPresence` may ask about.
pub const MAX_PRESENCE_IDS: usize = 1000;

/// Lanes that keep each conversation's commits and deliveries in seq order.
/// Sharding bounds the memory whatever the number of conversations; the
/// locks are fair, so a busy conversation sharing a lane cannot starve the
/// others.
const LANES: usize = 1024;

/// Most waiting messages one store call takes: each recipient session gets
/// a batch's events at once, and this many fit any session's outbound
/// queue (1024 frames by default), so a burst alone never makes a reading
/// client look slow.
const MAX_SHARED_COMMIT: usize = 256;

/// One shard of conversations: the turn that keeps their commits and
/// deliveries in order, and the messages waiting for it.
#[derive(Default)]
struct Lane {
    turn: Mutex<()>,
    // Held for a push or a take, never across an await.
    waiting: std::sync::Mutex<Vec<Waiting>>,
}

impl Lane {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A message waiting for its lane's turn, and where its sender waits.
struct Waiting {
    message: NewMessage,
    session: SessionId,
    reply: oneshot::Sender<Result<Message, ChatError>>,
}

/// Where a queued message's sender hears how it went.
type Outcome = oneshot::Receiver<Result<Message, ChatError>>;

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
    /// Most sessions (devices) one user may hold open.
    pub max_sessions_per_user: usize,
}

/// The caller of a WebSocket request: a user on one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub user: User,
    /// On which session.
    pub session: SessionId,
}

/// A user with a fresh token, the answer to register and login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// Their token.
    pub token: IssuedToken,
}

/// A token that checked out, with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user it belongs to (who still exists).
    pub user: User,
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

const INVALID_CREDENTIALS: &str = "invalid username or password";
const NO_CONVERSATION: &str = "conversation not found";

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

    // ------------------------------------------------------------ accounts

    /// Registers a new user and signs them in.
    ///
    /// # Errors
    /// `BadRequest` naming the broken rule, `Conflict` for a taken name.
    pub async fn register(&self, username: &str, password: &str) -> Result<SignedIn, ChatError> {
        let username = Username::parse(username).map_err(ChatError::bad_request)?;
        let password = Password::parse(password).map_err(ChatError::bad_request)?;
        const TAKEN: &str = "username is taken";
        // Cheap check first, so a taken name costs no password hash; the
        // store's unique constraint still settles races.
        if self.ports.users.credentials(&username).await?.is_some() {
            return Err(ChatError::Conflict(TAKEN));
        }
        let hash = self.ports.auth.hash_password(&password).await?;
        let user = match self
            .ports
            .users
            .create_user(&username, &hash, self.now())
            .await
        {
            Ok(user) => user,
            Err(CreateUserError::Duplicate) => return Err(ChatError::Conflict(TAKEN)),
            Err(CreateUserError::Unknown(e)) => return Err(e.into()),
        };
        self.sign_in(user)
    }

    /// Checks a username and password. Unknown users and wrong passwords get
    /// the same answer after about the same time.
    ///
    /// # Errors
    /// `Unauthorized` for any credentials that do not match a user.
    pub async fn login(&self, username: &str, password: &str) -> Result<SignedIn, ChatError> {
        let found = match Username::parse(username) {
            Ok(name) => self.ports.users.credentials(&name).await?,
            Err(_) => None,
        };
        let (user, hash) = found.unzip();
        // Verified even when the user is unknown, so that both misses take
        // about as long.
        let matches = self.ports.auth.verify_password(password, hash).await?;
        match user {
            Some(user) if matches => self.sign_in(user),
            _ => Err(ChatError::Unauthorized(INVALID_CREDENTIALS)),
        }
    }

    fn sign_in(&self, user: User) -> Result<SignedIn, ChatError> {
        let token = self.ports.auth.issue_token(&user, self.now())?;
        Ok(SignedIn { user, token })
    }

    /// Checks a bearer token and that its user still exists.
    ///
    /// # Errors
    /// `Unauthorized` for a missing, bad or expired token, or a deleted user.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Authenticated, ChatError> {
        const BAD_TOKEN: &str = "missing, invalid or expired token";
        let token = token.ok_or(ChatError::Unauthorized(BAD_TOKEN))?;
        let claims = self
            .ports
            .auth
            .verify_token(token, self.now())
            .map_err(|_| ChatError::Unauthorized(BAD_TOKEN))?;
        let user = self
            .ports
            .users
            .user(&claims.user_id)
            .await?
            .ok_or(ChatError::Unauthorized(BAD_TOKEN))?;
        Ok(Authenticated {
            user,
            expires_at: claims.expires_at,
        })
    }

    /// Users whose name starts with `prefix`, each with whether they are
    /// online as `viewer` may see it (never, for a user who blocks them).
    ///
    /// # Errors
    /// `BadRequest` for a limit of 0.
    pub async fn find_users(
        &self,
        viewer: &UserId,
        prefix: &str,
        limit: Option<u64>,
    ) -> Result<Vec<(User, bool)>, ChatError> {
        let limit = page_limit(limit, USERS_PAGE.0 as usize, USERS_PAGE.1 as usize)? as u32;
        let users = self.ports.users.users_by_prefix(prefix, limit).await?;
        let ids: Vec<UserId> = users.iter().map(|u| u.id.clone()).collect();
        let live = self.ports.presence.live(&ids).await?;
        let blockers = self.ports.blocks.blockers_of(viewer).await?;
        Ok(users
            .into_iter()
            .map(|u| {
                let online = blocking::shown_online(&u.id, live.contains_key(&u.id), &blockers);
                (u, online)
            })
            .collect())
    }

    // ------------------------------------------------------------ sessions

    /// Registers a new session before the WebSocket upgrade, and tells the
    /// user's contacts when it brings the user online.
    ///
    /// # Errors
    /// `RateLimited` when the user is at the session limit.
    pub async fn open_session(&self, caller: &Caller) -> Result<(), ChatError> {
        let limit = self.limits.max_sessions_per_user;
        let came_online = self
            .ports
            .presence
            .open(&caller.user, &caller.session, self.now(), limit)
            .await
            .map_err(|e| match e {
                OpenSessionError::TooMany(t) => ChatError::RateLimited(t.to_string()),
                OpenSessionError::Unknown(e) => e.into(),
            })?;
        if came_online {
            let announced = self
                .announce(&caller.user, Status::Online, Some(self.now()))
                .await;
            if let Err(e) = announced {
                // The caller will not get a session; do not leave one behind.
                let _ = self.close_session(caller).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unregisters a session; when it was the user's last, tells their
    /// contacts they went offline.
    pub async fn close_session(&self, caller: &Caller) -> Result<(), ChatError> {
        let now = self.now();
        // Recorded before the registry forgets the session, so that anyone
        // who sees the user offline also sees when they were last here.
        let recorded = self.ports.users.set_last_seen(&caller.user.id, now).await;
        let went_offline = self
            .ports
            .presence
            .close(&caller.user.id, &caller.session)
            .await?;
        if went_offline {
            self.announce(&caller.user, Status::Offline, Some(now))
                .await?;
        }
        Ok(recorded?)
    }

    /// Records that the caller did something, for `lastSeen`.
    pub async fn touch(&self, caller: &Caller) -> Result<(), ChatError> {
        Ok(self
            .ports
            .presence
            .touch(&caller.user.id, self.now())
            .await?)
    }

    async fn announce(
        &self,
        user: &User,
        status: Status,
        last_seen: Option<Timestamp>,
    ) -> Result<(), ChatError> {
        let contacts = self.ports.messages.contacts(&user.id).await?;
        let blocked = self.blocked_ids(&user.id).await?;
        let delivery = routing::to_contacts(contacts, &user.id, &blocked);
        if !delivery.is_empty() {
            let presence = Presence {
                user: user.clone(),
                status,
                last_seen,
            };
            self.ports
                .transport
                .deliver(delivery, Event::Presence(presence))
                .await;
        }
        Ok(())
    }

    // ------------------------------------------------------------ messages

    /// Sends a private message, creating the direct conversation on first use.
    ///
    /// # Errors
    /// `NotFound` when no user has the id `to`.
    pub async fn send_private_message(
        &self,
        caller: &Caller,
        to: &UserId,
        body: MessageBody,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<Message, ChatError> {
        let send = Draft {
            to: Recipient::User(to.clone()),
            body,
            client_msg_id,
        };
        self.send_one(caller, send).await
    }

    /// Sends a message to a conversation the caller is in. The message is
    /// committed before this returns; a retry with the same clientMsgId
    /// returns the original and sends no second event.
    ///
    /// # Errors
    /// `NotFound` for an unknown conversation, `Forbidden` for a non-member.
    pub async fn send_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        body: MessageBody,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<Message, ChatError> {
        let send = Draft {
            to: Recipient::Conversation(conversation.clone()),
            body,
            client_msg_id,
        };
        self.send_one(caller, send).await
    }

    async fn send_one(&self, caller: &Caller, send: Draft) -> Result<Message, ChatError> {
        let mut results = self.send_all(caller, vec![send]).await;
        results.pop().expect("one result per send")
    }

    /// Sends several messages of one session at once, each answered as
    /// [`Self::send_message`] or [`Self::send_private_message`] would answer
    /// it, in their order. Messages to one conversation get seqs in the
    /// order given, and all of them may share one commit.
    pub async fn send_all(
        &self,
        caller: &Caller,
        sends: Vec<Draft>,
    ) -> Vec<Result<Message, ChatError>> {
        // Targets are resolved one after the other, and every message
        // queued before any waits for its turn: a session's messages keep
        // their order, and a conversation's turn holder takes them all.
        let mut queued = Vec::with_capacity(sends.len());
        for send in sends {
            queued.push(match self.conversation_of(caller, &send.to).await {
                Ok(conversation) => Ok(self.queue(caller, conversation, send)),
                Err(e) => Err(e),
            });
        }
        let mut results = Vec::with_capacity(queued.len());
        for entry in queued {
            results.push(match entry {
                Ok((lane, answer)) => self.take_turn(lane, answer).await,
                Err(e) => Err(e),
            });
        }
        results
    }

    async fn conversation_of(
        &self,
        caller: &Caller,
        to: &Recipient,
    ) -> Result<ConversationId, ChatError> {
        let to = match to {
            Recipient::Conversation(id) => return Ok(id.clone()),
            Recipient::User(to) => to,
        };
        let recipient = self.existing_user(to).await?;
        Ok(self
            .ports
            .messages
            .direct_conversation(&caller.user.id, &recipient.id, self.now())
            .await?)
    }

    /// The user with this id; `NotFound` when there is none.
    async fn existing_user(&self, id: &UserId) -> Result<User, ChatError> {
        self.ports
            .users
            .user(id)
            .await?
            .ok_or(ChatError::NotFound("user not found"))
    }

    /// Puts a message in its conversation's lane.
    fn queue(
        &self,
        caller: &Caller,
        conversation: ConversationId,
        send: Draft,
    ) -> (&Lane, Outcome) {
        let lane = self.lane(&conversation);
        let (reply, answer) = oneshot::channel();
        lane.waiting().push(Waiting {
            message: NewMessage {
                conversation_id: conversation,
                sender: caller.user.clone(),
                body: send.body,
                client_msg_id: send.client_msg_id,
                created_at: self.now(),
            },
            session: caller.session.clone(),
            reply,
        });
        (lane, answer)
    }

    /// Waits for the lane's turn and the answer of one queued message.
    ///
    /// Commit and hand-off happen in the conversation's turn, so that events
    /// leave in seq order even when many senders race. Whoever gets the turn
    /// appends everything waiting in the lane, so senders to a busy
    /// conversation share one commit instead of queueing for one each (by
    /// the time a sender's turn comes, its message may already be done).
    async fn take_turn(&self, lane: &Lane, mut answer: Outcome) -> Result<Message, ChatError> {
        // Sends queued together are often all done by the first one's turn.
        if let Ok(Some(done)) = answer.try_recv() {
            return done;
        }
        let _turn = lane.turn.lock().await;
        loop {
            if let Ok(Some(done)) = answer.try_recv() {
                return done;
            }
            let batch: Vec<Waiting> = {
                let mut waiting = lane.waiting();
                let n = waiting.len().min(MAX_SHARED_COMMIT);
                waiting.drain(..n).collect()
            };
            if batch.is_empty() {
                // Only if a turn holder was cancelled half-way; the message
                // may or may not be stored, and a retry with its clientMsgId
                // tells.
                return Err(ChatError::Internal(anyhow::anyhow!(
                    "the send was interrupted"
                )));
            }
            self.append_in_order(batch).await;
        }
    }

    /// Appends waiting messages in their order, hands each stored one to
    /// the transport in seq order, and answers each sender.
    async fn append_in_order(&self, batch: Vec<Waiting>) {
        let (messages, senders): (Vec<NewMessage>, Vec<_>) = batch
            .into_iter()
            .map(|w| (w.message, (w.session, w.reply)))
            .unzip();
        let outcomes = match <[_; 1]>::try_from(messages) {
            Ok([only]) => vec![self.ports.messages.append(only).await],
            Err(messages) => self.ports.messages.append_all(messages).await,
        };
        // A sender left without a result (a store answering short) hears
        // that its send was interrupted.
        for ((session, reply), outcome) in senders.into_iter().zip(outcomes) {
            let result = match outcome {
                Ok(AppendOutcome::Stored { message, members }) => {
                    let delivery = routing::to_members_but_actor_session(members, &session);
                    self.ports
                        .transport
                        .deliver(delivery, Event::Message(message.clone()))
                        .await;
                    Ok(message)
                }
                Ok(AppendOutcome::Duplicate(original)) => Ok(original),
                Err(AppendError::NoSuchConversation) => Err(ChatError::NotFound(NO_CONVERSATION)),
                Err(AppendError::NotMember) => Err(Denied::NotMember.into()),
                Err(AppendError::Blocked) => Err(Denied::Blocked.into()),
                Err(AppendError::Unknown(e)) => Err(e.into()),
            };
            let _ = reply.send(result);
        }
    }

    fn lane(&self, conversation: &ConversationId) -> &Lane {
        let mut h = DefaultHasher::new();
        conversation.hash(&mut h);
        &self.lanes[(h.finish() as usize) % self.lanes.len()]
    }

    /// A page of a conversation's history.
    ///
    /// # Errors
    /// `NotFound` for an unknown conversation, `Forbidden` for a non-member.
    pub async fn history(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ChatError> {
        self.allowed(caller, conversation, Action::ReadHistory)
            .await?;
        Ok(self.ports.messages.history(conversation, query).await?)
    }

    /// Every conversation of the caller, most recently active first.
    pub async fn conversations(
        &self,
        caller: &Caller,
    ) -> Result<Vec<ConversationSummary>, ChatError> {
        Ok(self
            .ports
            .messages
            .conversations_of(&caller.user.id)
            .await?)
    }

    /// Moves the caller's read marker forward (never back, never past the
    /// newest message) and tells the other sessions of every member.
    /// Returns the marker as it now stands.
    ///
    /// # Errors
    /// `NotFound` for an unknown conversation, `Forbidden` for a non-member.
    pub async fn mark_read(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        seq: u64,
    ) -> Result<u64, ChatError> {
        let (conv, membership) = self
            .member_of(caller, conversation, Action::MarkRead)
            .await?;
        let Some(target) = next_read_marker(membership.last_read_seq, seq, conv.last_seq) else {
            return Ok(membership.last_read_seq);
        };
        let moved = self
            .ports
            .messages
            .advance_read_marker(conversation, &caller.user.id, target)
            .await?;
        if !moved {
            // Another session of the caller moved it first; answer with
            // where it stands now.
            let (_, now) = self
                .member_of(caller, conversation, Action::MarkRead)
                .await?;
            return Ok(now.last_read_seq);
        }
        {
            let members = self.ports.messages.member_ids(conversation).await?;
            let event = Event::Receipt {
                conversation_id: conversation.clone(),
                user_id: caller.user.id.clone(),
                seq: target,
            };
            let delivery = routing::to_members_but_actor_session(members, &caller.session);
            self.ports.transport.deliver(delivery, event).await;
        }
        Ok(target)
    }

    /// Tells the other members that the caller started or stopped typing.
    ///
    /// # Errors
    /// `NotFound` for an unknown conversation, `Forbidden` for a non-member.
    pub async fn typing(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        active: bool,
    ) -> Result<(), ChatError> {
        let (conv, _) = self.allowed(caller, conversation, Action::Typing).await?;
        let mut members = self.ports.messages.member_ids(conversation).await?;
        let direct = matches!(conv.kind, ConversationKind::Direct);
        if direct {
            // Typing is closed where sending is: a blocker does not see the
            // user they block typing to them.
            let blockers = self.ports.blocks.blockers_of(&caller.user.id).await?;
            members.retain(|m| blocking::may_send(direct, blockers.contains(m)));
        }
        let delivery = routing::to_other_members(members, &caller.user.id);
        if !delivery.is_empty() {
            let event = Event::Typing {
                conversation_id: conversation.clone(),
                user_id: caller.user.id.clone(),
                active,
            };
            self.ports.transport.deliver(delivery, event).await;
        }
        Ok(())
    }

    /// Checks that the caller is a member allowed to take `action`.
    async fn member_of(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        action: Action,
    ) -> Result<(Conversation, Membership), ChatError> {
        let (conv, membership) = self.standing(caller, conversation).await?;
        authorize(&conv.kind, membership.is_some(), action)?;
        let membership = membership.ok_or(super::membership::Denied::NotMember)?;
        Ok((conv, membership))
    }

    /// Checks that the caller may take `action`, member or not.
    async fn allowed(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        action: Action,
    ) -> Result<(Conversation, Allowed), ChatError> {
        let (conv, membership) = self.standing(caller, conversation).await?;
        let allowed = authorize(&conv.kind, membership.is_some(), action)?;
        Ok((conv, allowed))
    }

    /// The conversation and the caller's membership in it, if any.
    async fn standing(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<(Conversation, Option<Membership>), ChatError> {
        match self
            .ports
            .messages
            .access(conversation, &caller.user.id)
            .await?
        {
            Access::Member(c, m) => Ok((c, Some(m))),
            Access::NotMember(c) => Ok((c, None)),
            Access::NoSuchConversation => Err(ChatError::NotFound(NO_CONVERSATION)),
        }
    }

    // ------------------------------------------------------------ rooms

    /// Creates a room with the caller as its first member; the caller's
    /// other sessions hear that they joined it.
    pub async fn create_room(
        &self,
        caller: &Caller,
        name: RoomName,
        visibility: Visibility,
    ) -> Result<ConversationSummary, ChatError> {
        let messages = &self.ports.messages;
        let id = messages
            .create_room(&name, visibility, &caller.user.id, self.now())
            .await?;
        let summary = self.summary(&id, &caller.user.id).await?;
        let event = member_event(&id, &caller.user, MemberAction::Joined);
        let delivery =
            routing::to_members_but_actor_session(vec![caller.user.id.clone()], &caller.session);
        self.ports.transport.deliver(delivery, event).await;
        Ok(summary)
    }

    /// Joins a public room (a member joining again changes nothing). Every
    /// member hears of it, the joining user included.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Forbidden` for a private room or a
    /// direct conversation.
    pub async fn join_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<ConversationSummary>, ChatError> {
        let _in_order = self.lane(conversation).turn.lock().await;
        let (_, allowed) = self.allowed(caller, conversation, Action::Join).await?;
        if allowed == Allowed::AlreadyDone {
            let value = self.summary(conversation, &caller.user.id).await?;
            return Ok(Answer::quiet(value));
        }
        self.admit(caller, conversation, &caller.user, MemberAction::Joined)
            .await
    }

    /// Adds a user to a room the caller is in. Every member hears of it,
    /// the invited user included. Inviting a member changes nothing.
    ///
    /// # Errors
    /// `NotFound` for an unknown room or user; `Forbidden` for a non-member
    /// caller or a direct conversation.
    pub async fn invite_to_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        invitee: &UserId,
    ) -> Result<Answer<ConversationSummary>, ChatError> {
        let _in_order = self.lane(conversation).turn.lock().await;
        self.allowed(caller, conversation, Action::Invite).await?;
        let invitee = self.existing_user(invitee).await?;
        let blockers = self.ports.blocks.blockers_of(&caller.user.id).await?;
        if !blocking::may_invite(&invitee.id, &blockers) {
            return Err(Denied::Blocked.into());
        }
        self.admit(caller, conversation, &invitee, MemberAction::Invited)
            .await
    }

    /// Adds `who` to the room and tells every member (nothing when `who`
    /// was in already); answers with the room as the caller sees it.
    async fn admit(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        who: &User,
        action: MemberAction,
    ) -> Result<Answer<ConversationSummary>, ChatError> {
        let added = self
            .ports
            .messages
            .add_member(conversation, &who.id, self.now())
            .await?;
        let then = if added {
            let event = member_event(conversation, who, action);
            self.announce_membership(conversation, None, caller, event.clone())
                .await?;
            Some(event)
        } else {
            None
        };
        let value = self.summary(conversation, &caller.user.id).await?;
        Ok(Answer { value, then })
    }

    /// Leaves a room. The remaining members and the leaver's sessions hear
    /// of it; no further events of the room reach the leaver.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Forbidden` for a non-member or a
    /// direct conversation.
    pub async fn leave_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<()>, ChatError> {
        let _in_order = self.lane(conversation).turn.lock().await;
        self.allowed(caller, conversation, Action::Leave).await?;
        let removed = self
            .ports
            .messages
            .remove_member(conversation, &caller.user.id)
            .await?;
        if !removed {
            // A concurrent leave from another session got there first.
            return Ok(Answer::quiet(()));
        }
        let event = member_event(conversation, &caller.user, MemberAction::Left);
        self.announce_membership(conversation, Some(&caller.user.id), caller, event.clone())
            .await?;
        Ok(Answer {
            value: (),
            then: Some(event),
        })
    }

    /// Rooms the caller may see whose name starts with `prefix`, after the
    /// room `after` when given, and whether more follow.
    ///
    /// # Errors
    /// `BadRequest` for a limit of 0.
    pub async fn list_rooms(
        &self,
        caller: &Caller,
        prefix: &str,
        after: Option<&ConversationId>,
        limit: Option<u64>,
    ) -> Result<RoomsPage, ChatError> {
        let limit = page_limit(limit, ROOMS_PAGE.0, ROOMS_PAGE.1)?;
        // One more than asked for says whether more follow.
        let mut rooms = self
            .ports
            .messages
            .list_rooms(&caller.user.id, prefix, after.cloned(), limit as u32 + 1)
            .await?;
        let has_more = rooms.len() > limit;
        rooms.truncate(limit);
        Ok(RoomsPage { rooms, has_more })
    }

    /// Tells every member (and `also`, a member who just left) about a
    /// membership change; the acting session gets it after its ack.
    async fn announce_membership(
        &self,
        conversation: &ConversationId,
        also: Option<&UserId>,
        caller: &Caller,
        event: Event,
    ) -> Result<(), ChatError> {
        let mut members = self.ports.messages.member_ids(conversation).await?;
        members.extend(also.cloned());
        let delivery = routing::to_members_but_actor_session(members, &caller.session);
        self.ports.transport.deliver(delivery, event).await;
        Ok(())
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<ConversationSummary, ChatError> {
        self.ports
            .messages
            .summary(conversation, viewer)
            .await?
            .ok_or(ChatError::NotFound(NO_CONVERSATION))
    }

    // ------------------------------------------------------------ edits

    /// Replaces the text of one of the caller's messages; every session of
    /// every member but the caller's gets `messageUpdated`.
    ///
    /// # Errors
    /// `NotFound` for an unknown conversation or message, `Forbidden` for a
    /// non-member or someone else's message, `BadRequest` for a deleted one.
    pub async fn edit_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
        body: MessageBody,
    ) -> Result<Message, ChatError> {
        let change = MessageChange::Edit {
            body,
            at: self.now(),
        };
        self.change_message(caller, conversation, message, change)
            .await
    }

    /// Deletes one of the caller's messages: it keeps its seq, loses its
    /// text. Deleting it again answers the same and sends nothing.
    ///
    /// # Errors
    /// As [`Self::edit_message`], but a deleted message is not an error.
    pub async fn delete_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
    ) -> Result<Message, ChatError> {
        self.change_message(caller, conversation, message, MessageChange::Delete)
            .await
    }

    async fn change_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Message, ChatError> {
        const NO_MESSAGE: &str = "message not found";
        let (conv, _) = self
            .member_of(caller, conversation, Action::ReadHistory)
            .await?;
        let _in_order = self.lane(conversation).turn.lock().await;
        let current = self
            .ports
            .messages
            .message(conversation, id)
            .await?
            .ok_or(ChatError::NotFound(NO_MESSAGE))?;
        let own = current.sender_id == caller.user.id;
        let action = match change {
            MessageChange::Edit { .. } => Action::Edit { own },
            MessageChange::Delete => Action::Delete { own },
        };
        authorize(&conv.kind, true, action)?;
        match (&change, current.deleted) {
            (MessageChange::Edit { .. }, true) => {
                return Err(ChatError::bad_request("the message is deleted"));
            }
            (MessageChange::Delete, true) => return Ok(current),
            _ => {}
        }
        let updated = self
            .ports
            .messages
            .update_message(conversation, id, change)
            .await?
            .ok_or(ChatError::NotFound(NO_MESSAGE))?;
        let members = self.ports.messages.member_ids(conversation).await?;
        let delivery = routing::to_members_but_actor_session(members, &caller.session);
        self.ports
            .transport
            .deliver(delivery, Event::MessageUpdated(updated.clone()))
            .await;
        Ok(updated)
    }

    // ------------------------------------------------------------ presence

    /// Up to `limit` users who have a session open, as the caller may see
    /// them: without those who block the caller.
    ///
    /// # Errors
    /// `BadRequest` for a limit of 0.
    pub async fn connected_users(
        &self,
        caller: &Caller,
        limit: Option<u64>,
    ) -> Result<Vec<User>, ChatError> {
        let limit = page_limit(limit, CONNECTED_PAGE.0, CONNECTED_PAGE.1)?;
        let blockers = self.ports.blocks.blockers_of(&caller.user.id).await?;
        // Asked for as many more as could be left out, so that a full page
        // stays full.
        let mut users = self
            .ports
            .presence
            .online_users(limit.saturating_add(blockers.len()))
            .await?;
        users.retain(|u| blocking::shown_online(&u.id, true, &blockers));
        users.truncate(limit);
        Ok(users)
    }

    /// The presence of each existing user among `ids`, in the order asked,
    /// each once, as the caller may see it ([`blocking::as_seen`]); unknown
    /// ids are skipped.
    ///
    /// # Errors
    /// `BadRequest` for more than [`MAX_PRESENCE_IDS`] ids.
    pub async fn presence_of(
        &self,
        caller: &Caller,
        ids: Vec<UserId>,
    ) -> Result<Vec<Presence>, ChatError> {
        if ids.len() > MAX_PRESENCE_IDS {
            return Err(ChatError::bad_request(format!(
                "userIds must list at most {MAX_PRESENCE_IDS} ids"
            )));
        }
        self.presence_seen_by(&caller.user.id, ids).await
    }

    /// The presence of each existing user among `ids` as `viewer` may see it.
    async fn presence_seen_by(
        &self,
        viewer: &UserId,
        ids: Vec<UserId>,
    ) -> Result<Vec<Presence>, ChatError> {
        let mut ids = ids;
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        // Live state first: `close_session` records lastSeen before the
        // registry forgets the session, so whoever is not live here already
        // has their lastSeen stored for the read below. (The other order
        // could read the store just before a close and the registry just
        // after it: offline, and never seen.)
        let live = self.ports.presence.live(&ids).await?;
        let known = self.ports.users.users_last_seen(&ids).await?;
        let mut by_id: std::collections::HashMap<UserId, (User, Option<Timestamp>)> = known
            .into_iter()
            .map(|(u, seen)| (u.id.clone(), (u, seen)))
            .collect();
        let blockers = self.ports.blocks.blockers_of(viewer).await?;
        let contacts: std::collections::HashSet<UserId> = self
            .ports
            .messages
            .contacts(viewer)
            .await?
            .into_iter()
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|(user, last_seen)| {
                let blocks_viewer = blockers.contains(&user.id);
                let shares = user.id == *viewer || contacts.contains(&user.id);
                let presence = match live.get(&user.id) {
                    Some(l) => Presence {
                        user,
                        status: l.status.into(),
                        last_seen: Some(l.last_active),
                    },
                    None => Presence {
                        user,
                        status: Status::Offline,
                        last_seen,
                    },
                };
                blocking::as_seen(presence, blocks_viewer, shares)
            })
            .collect())
    }

    /// Sets the caller's status; contacts hear of it when it changed.
    pub async fn set_status(
        &self,
        caller: &Caller,
        status: ActiveStatus,
    ) -> Result<Presence, ChatError> {
        let now = self.now();
        let (live, changed) = self
            .ports
            .presence
            .set_status(&caller.user.id, status, now)
            .await?
            // The caller's own session is open, so the registry knows them;
            // answer sensibly even if a racing close removed it.
            .unwrap_or((
                LiveStatus {
                    status,
                    last_active: now,
                },
                false,
            ));
        let presence = Presence {
            user: caller.user.clone(),
            status: live.status.into(),
            last_seen: Some(live.last_active),
        };
        if changed {
            self.announce(&caller.user, presence.status, presence.last_seen)
                .await?;
        }
        Ok(presence)
    }
}

fn member_event(conversation: &ConversationId, user: &User, action: MemberAction) -> Event {
    Event::Member {
        conversation_id: conversation.clone(),
        user: user.clone(),
        action,
    }
}

/// A page size from an optional client value: default when absent, clamped
/// to the maximum, and 0 refused.
fn page_limit(limit: Option<u64>, default: usize, max: usize) -> Result<usize, ChatError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ChatError::bad_request("limit must be a positive integer")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(max).min(max)),
    }
}

#[path = "service_blocks.rs"]
mod blocks;

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
