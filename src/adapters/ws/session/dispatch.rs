//! Requests to use cases: each text frame admitted (counted, rate-limited,
//! parsed), handed to the core, and answered with exactly one ack or error.

use std::future::Future;
use std::pin::Pin;

use hyper_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};
use serde_json::json;
use tracing::{debug, error};

use super::{Loop, Session};
use crate::adapters::failure::ChatError;
use crate::adapters::wire::{
    self, ConversationDto, ConversationsContent, HistoryContent, Inbound, MAX_REPLY_BYTES,
    MessageContent, MessageDto, PresenceDto, Request, RoomsContent, UserDto,
};
use crate::domain::message::HistoryQuery;
use crate::domain::page::PageLimit;
use crate::domain::service::Draft;
use crate::domain::{ConversationId, ConversationSummary, Event, Message, User};

/// A request's reply, and the event its own session gets right after it.
pub(super) type Answer = (Utf8Bytes, Option<Event>);

/// Requests being answered, as one run.
pub(super) type Answering<'a> = Pin<Box<dyn Future<Output = Vec<Answer>> + Send + 'a>>;

/// A send waiting to go to the core with the others of its run: where its
/// answer goes, and the request's id.
type Queued = (usize, Option<String>, Draft);

impl Session<'_> {
    /// Starts answering a run of text frames.
    pub(super) fn answer<'s>(&'s self, st: &mut Loop<'s>, texts: Vec<Utf8Bytes>) {
        // Boxed: it is large, and in flight only now and then.
        st.answering = Some(Box::pin(self.answer_all(texts)));
    }

    /// Queues a run's answers, each followed by its event.
    pub(super) fn queue(&self, answers: Vec<Answer>) {
        for (reply, then) in answers {
            self.handle().push(Frame::Text(reply));
            if let Some(event) = then {
                self.handle().push(Frame::Text(wire::encode_event(&event)));
            }
        }
    }

    /// Answers a run of text frames: exactly one ack or error each, in
    /// order, each with the event this session gets right after that ack,
    /// if any. Consecutive sends go to the core together; any other request
    /// waits for the sends before it, so it sees them done.
    pub(super) async fn answer_all(&self, texts: Vec<Utf8Bytes>) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(texts.len());
        let mut sends: Vec<Queued> = Vec::new();
        let mut touched = false;
        for text in texts {
            let at = answers.len();
            answers.push(None);
            let (id, inbound) = match self.admit(&text) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    answers[at] = Some((refusal, None));
                    continue;
                }
            };
            if !std::mem::replace(&mut touched, true)
                && let Err(e) = self.env.service.touch(self.caller()).await
            {
                debug!(error = ?e, "presence not refreshed");
            }
            match inbound {
                Inbound::Send(draft) => sends.push((at, id, draft)),
                Inbound::Other(request) => {
                    self.send_all(&mut sends, &mut answers).await;
                    let id = id.as_deref();
                    answers[at] = Some(match self.dispatch(id, request).await {
                        Ok(answer) => answer,
                        Err(e) => (self.failed(id, &e), None),
                    });
                }
            }
        }
        self.send_all(&mut sends, &mut answers).await;
        answers
            .into_iter()
            .map(|answer| answer.expect("every request is answered"))
            .collect()
    }

    /// Counts, rate-limits and parses one frame; the refusal to send back
    /// when it cannot be served.
    fn admit(&self, text: &str) -> Result<(Option<String>, Inbound), Utf8Bytes> {
        self.env.metrics.requests.inc();
        let allowed = self.limiter.check().is_ok();
        let (id, inbound) =
            wire::parse_frame(text).map_err(|bad| self.refuse(bad.id.as_deref(), &bad.message))?;
        if !allowed {
            self.env.metrics.error("rate_limited");
            let id = id.as_deref();
            return Err(wire::error(
                id,
                "rate_limited",
                "too many requests; slow down",
            ));
        }
        Ok((id, inbound))
    }

    /// Sends the queued messages in one call to the core and fills in
    /// their answers.
    async fn send_all(&self, sends: &mut Vec<Queued>, answers: &mut [Option<Answer>]) {
        if sends.is_empty() {
            return;
        }
        let (asked, drafts): (Vec<_>, Vec<_>) = sends
            .drain(..)
            .map(|(at, id, draft)| ((at, id), draft))
            .unzip();
        let results = self.env.service.send_all(self.caller(), drafts).await;
        for ((at, id), result) in asked.into_iter().zip(results) {
            let id = id.as_deref();
            answers[at] = Some(match result {
                Ok(message) => {
                    self.env.metrics.messages_acked.inc();
                    (message_ack(id, &message), None)
                }
                Err(e) => (self.failed(id, &e.into()), None),
            });
        }
    }

    /// The `bad_request` reply to a frame that is not a request.
    pub(super) fn refuse(&self, id: Option<&str>, message: &str) -> Utf8Bytes {
        self.env.metrics.error("bad_request");
        wire::error(id, "bad_request", message)
    }

    /// The error reply for a request the core refused.
    fn failed(&self, id: Option<&str>, e: &ChatError) -> Utf8Bytes {
        let (code, message) = wire::error_code(e);
        if let ChatError::Internal(cause) = e {
            error!(session = %self.caller().session, error = ?cause, "request failed");
        }
        self.env.metrics.error(code);
        wire::error(id, code, &message)
    }

    /// Calls the use case `request` names and writes its ack. Every request
    /// type has its arm here (see `wire::Request`).
    async fn dispatch(&self, id: Option<&str>, request: Request) -> Result<Answer, ChatError> {
        let service = &self.env.service;
        let caller = self.caller();
        // Set by the requests whose own session hears of them after the ack.
        let mut then = None;
        let ack = match request {
            Request::EditMessage {
                conversation_id,
                message_id,
                body,
            } => {
                let m = service
                    .edit_message(caller, &conversation_id, &message_id, body)
                    .await?;
                message_ack(id, &m)
            }
            Request::DeleteMessage {
                conversation_id,
                message_id,
            } => {
                let m = service
                    .delete_message(caller, &conversation_id, &message_id)
                    .await?;
                message_ack(id, &m)
            }
            Request::GetHistory {
                conversation_id,
                query,
            } => self.history(id, &conversation_id, query).await?,
            Request::GetConversations { cursor } => self.conversations(id, cursor).await?,
            Request::MarkRead {
                conversation_id,
                seq,
            } => {
                let seq = service.mark_read(caller, &conversation_id, seq).await?;
                wire::ack(
                    id,
                    json!({ "conversationId": conversation_id.as_str(), "seq": seq }),
                )
            }
            Request::Typing {
                conversation_id,
                active,
            } => {
                service.typing(caller, &conversation_id, active).await?;
                empty_ack(id)
            }
            Request::CreateRoom { name, visibility } => {
                conversation_ack(id, &service.create_room(caller, name, visibility).await?)
            }
            Request::JoinRoom { conversation_id } => {
                let answer = service.join_room(caller, &conversation_id).await?;
                then = answer.then;
                conversation_ack(id, &answer.value)
            }
            Request::InviteToRoom {
                conversation_id,
                user_id,
            } => {
                let answer = service
                    .invite_to_room(caller, &conversation_id, &user_id)
                    .await?;
                then = answer.then;
                conversation_ack(id, &answer.value)
            }
            Request::LeaveRoom { conversation_id } => {
                then = service.leave_room(caller, &conversation_id).await?.then;
                empty_ack(id)
            }
            Request::ListRooms {
                prefix,
                cursor,
                limit,
            } => self.rooms(id, &prefix, cursor, limit).await?,
            Request::GetConnectedUsers { limit } => {
                users_ack(id, &service.connected_users(caller, limit).await?)
            }
            Request::GetPresence { user_ids } => {
                let list = service.presence_of(caller, user_ids).await?;
                let presence: Vec<PresenceDto> = list.iter().map(Into::into).collect();
                wire::ack(id, json!({ "presence": presence }))
            }
            Request::SetStatus { status } => {
                let p = service.set_status(caller, status).await?;
                wire::ack(id, json!({ "presence": PresenceDto::from(&p) }))
            }
            Request::Ping => {
                let now = wire::rfc3339(service.now());
                wire::ack(id, json!({ "serverTime": now }))
            }
            Request::Reauth { token } => {
                let device = self.handle().device();
                let expires_at = service
                    .reauthenticate(&caller.user.id, device, &token)
                    .await?;
                self.extend(expires_at);
                wire::ack(id, json!({ "expiresAt": wire::rfc3339(expires_at) }))
            }
            Request::BlockUser { user_id } => {
                service.block_user(caller, &user_id).await?;
                empty_ack(id)
            }
            Request::UnblockUser { user_id } => {
                service.unblock_user(caller, &user_id).await?;
                empty_ack(id)
            }
            Request::GetBlocked => users_ack(id, &service.blocked_users(caller).await?),
        };
        Ok((ack, then))
    }

    /// `getHistory`: a page of messages, as many as one reply holds.
    async fn history(
        &self,
        id: Option<&str>,
        conversation_id: &ConversationId,
        query: HistoryQuery,
    ) -> Result<Utf8Bytes, ChatError> {
        // A page cut short keeps the messages next to where it was asked
        // from: the newest when it reads back from the end or `beforeSeq`,
        // the oldest when it reads on from `afterSeq`, so that paging on
        // from it misses nothing.
        let backwards = query.after_seq.is_none();
        let page = self
            .env
            .service
            .history(self.caller(), conversation_id, query)
            .await?;
        let dtos = page.messages.iter().map(MessageDto::from);
        let (messages, cut) = if backwards {
            let (mut newest, cut) = wire::fit(dtos.rev(), MAX_REPLY_BYTES);
            newest.reverse();
            (newest, cut)
        } else {
            wire::fit(dtos, MAX_REPLY_BYTES)
        };
        let has_more = page.has_more || cut;
        Ok(wire::ack(id, HistoryContent { messages, has_more }))
    }

    /// `listRooms`: the page of rooms whose name starts with `prefix`.
    async fn rooms(
        &self,
        id: Option<&str>,
        prefix: &str,
        cursor: Option<ConversationId>,
        limit: PageLimit,
    ) -> Result<Utf8Bytes, ChatError> {
        let page = self
            .env
            .service
            .list_rooms(self.caller(), prefix, cursor.as_ref(), limit)
            .await?;
        let (rooms, has_more, next_cursor) = wire::conversation_page(&page.rooms, page.has_more);
        Ok(wire::ack(
            id,
            RoomsContent {
                rooms,
                has_more,
                next_cursor,
            },
        ))
    }

    /// `getConversations`: the page after `cursor`.
    async fn conversations(
        &self,
        id: Option<&str>,
        cursor: Option<ConversationId>,
    ) -> Result<Utf8Bytes, ChatError> {
        let list = self.env.service.conversations(self.caller()).await?;
        // The page after the cursor's conversation in the list as it stands
        // now; from the start when the caller is no longer in it. Activity
        // only moves a conversation to the front, so a walk misses none that
        // was there when it began (one that became active meanwhile was
        // announced by its event).
        let start = cursor.map_or(0, |after| {
            list.iter()
                .position(|s| s.conversation.id == after)
                .map_or(0, |at| at + 1)
        });
        let (conversations, has_more, next_cursor) = wire::conversation_page(&list[start..], false);
        Ok(wire::ack(
            id,
            ConversationsContent {
                conversations,
                has_more,
                next_cursor,
            },
        ))
    }
}

/// `{message}`: the ack of sends, edits and deletes.
fn message_ack(id: Option<&str>, message: &Message) -> Utf8Bytes {
    wire::ack(
        id,
        MessageContent {
            message: message.into(),
        },
    )
}

/// `{conversation}`: the ack of the room requests that answer with one.
fn conversation_ack(id: Option<&str>, summary: &ConversationSummary) -> Utf8Bytes {
    wire::ack(
        id,
        json!({ "conversation": ConversationDto::from(summary) }),
    )
}

/// `{users}`: the ack of the requests that list users.
fn users_ack(id: Option<&str>, users: &[User]) -> Utf8Bytes {
    let users: Vec<UserDto> = users.iter().map(Into::into).collect();
    wire::ack(id, json!({ "users": users }))
}

/// `{}`: the ack of requests that answer with nothing but their success.
fn empty_ack(id: Option<&str>) -> Utf8Bytes {
    wire::ack(id, json!({}))
}
