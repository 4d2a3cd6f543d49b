//! One WebSocket session: reads requests, answers each in order, and writes
//! queued frames (answers and events) to the socket.
//!
//! Two tasks per connection: this module's reader, which handles requests
//! one at a time (so replies keep request order), and a writer that drains
//! the bounded outbound queue. A [`Closer`] ends both with a close code.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::{Error as WsError, Message as Frame, Utf8Bytes};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::registry::{
    Closer, DROP, GOING_AWAY, NORMAL, SLOW_CONSUMER, SessionHandle, SessionRegistry, TOKEN_EXPIRED,
    TOO_LARGE,
};
use crate::adapters::metrics::{CloseLabel, Metrics};
use crate::adapters::wire::{
    self, ConversationDto, MessageContent, MessageDto, PresenceDto, Request, UserDto,
};
use crate::domain::service::{Caller, ChatService};
use crate::domain::{ChatError, ConversationSummary, Event, Message, Timestamp};

/// How sessions behave; one copy shared by all.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Interval between server pings.
    pub heartbeat: Duration,
    /// Requests per second allowed per connection, sustained.
    pub rate_per_sec: NonZeroU32,
    /// Requests allowed in a burst.
    pub rate_burst: NonZeroU32,
    /// Frames a session's outbound queue holds before it counts as slow.
    pub queue_capacity: usize,
    /// How long a close handshake may take before the socket is dropped.
    pub close_timeout: Duration,
}

/// What every session needs from the rest of the server.
pub struct SessionEnv {
    /// The use cases.
    pub service: Arc<ChatService>,
    /// Where this session registers to receive events.
    pub registry: Arc<SessionRegistry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: WsSettings,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

/// A session accepted at the handshake, waiting for its upgrade to finish.
pub struct PendingSession {
    /// Who, on which session id.
    pub caller: Caller,
    /// When its token expires.
    pub expires_at: Timestamp,
    /// Its registry entry.
    pub handle: SessionHandle,
    /// The receiving end of its outbound queue.
    pub outbound: mpsc::Receiver<Frame>,
}

/// Runs a session to its end, then unregisters it.
pub async fn run(env: Arc<SessionEnv>, websocket: HyperWebsocket, pending: PendingSession) {
    let PendingSession {
        caller,
        expires_at,
        handle,
        outbound,
    } = pending;
    let closer = handle.closer.clone();
    match websocket.await {
        Ok(stream) => {
            info!(user = %caller.user.id, session = %caller.session, "session opened");
            env.metrics.sessions_opened.inc();
            let (sink, mut stream) = stream.split();
            let writer = tokio::spawn(write_loop(
                sink,
                outbound,
                closer.clone(),
                env.settings.close_timeout,
            ));
            let reader = Reader {
                env: &env,
                caller: &caller,
                handle: &handle,
                limiter: RateLimiter::direct(
                    Quota::per_second(env.settings.rate_per_sec)
                        .allow_burst(env.settings.rate_burst),
                ),
            };
            reader.read_loop(&mut stream, expires_at).await;
            if let Some((code, _)) = closer.reason() {
                env.metrics
                    .sessions_closed
                    .get_or_create(&CloseLabel { code })
                    .inc();
            }
            // The peer went away, or we asked to close: either way the writer stops.
            closer.close(NORMAL, "");
            let _ = writer.await;
            // Give the peer a moment to answer our close frame, for a clean handshake.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while stream.next().await.is_some() {}
            })
            .await;
            info!(
                user = %caller.user.id,
                session = %caller.session,
                code = closer.reason().map_or(NORMAL, |r| r.0),
                "session closed"
            );
        }
        Err(e) => debug!(error = %e, "WebSocket upgrade failed"),
    }
    env.registry.unregister(&caller.user.id, &caller.session);
    if let Err(e) = env.service.close_session(&caller).await {
        error!(error = ?e, "could not record the end of a session");
    }
}

type Sink = futures::stream::SplitSink<hyper_tungstenite::HyperWebsocketStream, Frame>;
type Stream = futures::stream::SplitStream<hyper_tungstenite::HyperWebsocketStream>;

async fn write_loop(
    mut sink: Sink,
    mut outbound: mpsc::Receiver<Frame>,
    closer: Closer,
    close_timeout: Duration,
) {
    loop {
        tokio::select! {
            biased;
            () = closer.requested() => break,
            frame = outbound.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    sent = sink.send(frame) => if sent.is_err() { return },
                    // A write stuck on a client that stopped reading must not
                    // keep us from closing it.
                    () = closer.requested() => break,
                }
            }
        }
    }
    let (code, reason) = closer.reason().unwrap_or((NORMAL, ""));
    if code == DROP {
        return;
    }
    let _ = tokio::time::timeout(close_timeout, async {
        if code != SLOW_CONSUMER {
            // Answers to requests that were in flight still go out first.
            while let Ok(frame) = outbound.try_recv() {
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = sink.send(Frame::Close(Some(frame))).await;
    })
    .await;
}

struct Reader<'a> {
    env: &'a SessionEnv,
    caller: &'a Caller,
    handle: &'a SessionHandle,
    limiter: DefaultDirectRateLimiter,
}

impl Reader<'_> {
    async fn read_loop(&self, stream: &mut Stream, expires_at: Timestamp) {
        let closer = &self.handle.closer;
        let period = self.env.settings.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unanswered_pings = 0u32;
        let left_ms = expires_at.millis() - self.env.service.now().millis();
        let expiry = tokio::time::sleep(Duration::from_millis(left_ms.max(0) as u64));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                () = closer.requested() => return,
                () = self.env.shutdown.cancelled() => {
                    closer.close(GOING_AWAY, "server going away");
                    return;
                }
                () = &mut expiry => {
                    closer.close(TOKEN_EXPIRED, "token expired");
                    return;
                }
                _ = heartbeat.tick() => {
                    if unanswered_pings >= 2 {
                        debug!(session = %self.caller.session, "two pings unanswered");
                        closer.close(DROP, "");
                        return;
                    }
                    unanswered_pings += 1;
                    self.handle.push(Frame::Ping(Default::default()));
                }
                frame = stream.next() => {
                    let Some(frame) = frame else { return };
                    unanswered_pings = 0;
                    match frame {
                        Ok(Frame::Text(text)) => {
                            let (reply, then) = self.answer(&text).await;
                            self.handle.push(Frame::Text(reply));
                            if let Some(event) = then {
                                self.handle.push(Frame::Text(wire::encode_event(&event)));
                            }
                        }
                        Ok(Frame::Binary(_)) => {
                            let reply = self.refuse(None, "binary frames are not supported");
                            self.handle.push(Frame::Text(reply));
                        }
                        // Pongs only prove liveness; pings are answered by
                        // tungstenite; a close is answered and then the stream ends.
                        Ok(_) => {}
                        Err(WsError::Capacity(_)) => {
                            closer.close(TOO_LARGE, "frame too large");
                            return;
                        }
                        Err(e) => {
                            debug!(session = %self.caller.session, error = %e, "read failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn refuse(&self, id: Option<&str>, message: &str) -> Utf8Bytes {
        self.env.metrics.error("bad_request");
        wire::error(id, "bad_request", message)
    }

    /// Answers one text frame: exactly one ack or error, and the event this
    /// session gets right after the ack, if any.
    async fn answer(&self, text: &str) -> (Utf8Bytes, Option<Event>) {
        self.env.metrics.requests.inc();
        let allowed = self.limiter.check().is_ok();
        let (id, request) = match wire::parse_frame(text) {
            Ok(parsed) => parsed,
            Err(bad) => return (self.refuse(bad.id.as_deref(), &bad.message), None),
        };
        let id = id.as_deref();
        if !allowed {
            self.env.metrics.error("rate_limited");
            return (
                wire::error(id, "rate_limited", "too many requests; slow down"),
                None,
            );
        }
        let service = &self.env.service;
        if let Err(e) = service.touch(self.caller).await {
            debug!(error = ?e, "presence not refreshed");
        }
        match self.dispatch(id, request).await {
            Ok(answer) => answer,
            Err(e) => {
                let (code, message) = wire::error_code(&e);
                if let ChatError::Internal(cause) = &e {
                    error!(session = %self.caller.session, error = ?cause, "request failed");
                }
                self.env.metrics.error(code);
                (wire::error(id, code, &message), None)
            }
        }
    }

    async fn dispatch(
        &self,
        id: Option<&str>,
        request: Request,
    ) -> Result<(Utf8Bytes, Option<Event>), ChatError> {
        let service = &self.env.service;
        let caller = self.caller;
        // Set by the requests whose own session hears of them after the ack.
        let mut then = None;
        let conversation_ack = |summary: &ConversationSummary| {
            wire::ack(
                id,
                json!({ "conversation": ConversationDto::from(summary) }),
            )
        };
        let ack = match request {
            Request::SendPrivateMessage {
                to,
                body,
                client_msg_id,
            } => {
                let m = service
                    .send_private_message(caller, &to, body, client_msg_id)
                    .await?;
                self.sent(id, &m)
            }
            Request::SendMessage {
                conversation_id,
                body,
                client_msg_id,
            } => {
                let m = service
                    .send_message(caller, &conversation_id, body, client_msg_id)
                    .await?;
                self.sent(id, &m)
            }
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
            } => {
                let page = service.history(caller, &conversation_id, query).await?;
                let messages: Vec<MessageDto> = page.messages.iter().map(Into::into).collect();
                wire::ack(
                    id,
                    json!({ "messages": messages, "hasMore": page.has_more }),
                )
            }
            Request::GetConversations => {
                let list = service.conversations(caller).await?;
                let conversations: Vec<ConversationDto> = list.iter().map(Into::into).collect();
                wire::ack(id, json!({ "conversations": conversations }))
            }
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
                wire::ack(id, json!({}))
            }
            Request::CreateRoom { name, visibility } => {
                conversation_ack(&service.create_room(caller, name, visibility).await?)
            }
            Request::JoinRoom { conversation_id } => {
                let answer = service.join_room(caller, &conversation_id).await?;
                then = answer.then;
                conversation_ack(&answer.value)
            }
            Request::InviteToRoom {
                conversation_id,
                user_id,
            } => {
                let answer = service
                    .invite_to_room(caller, &conversation_id, &user_id)
                    .await?;
                then = answer.then;
                conversation_ack(&answer.value)
            }
            Request::LeaveRoom { conversation_id } => {
                then = service.leave_room(caller, &conversation_id).await?.then;
                wire::ack(id, json!({}))
            }
            Request::ListRooms { prefix, limit } => {
                let rooms = service.list_rooms(caller, &prefix, limit).await?;
                let rooms: Vec<ConversationDto> = rooms.iter().map(Into::into).collect();
                wire::ack(id, json!({ "rooms": rooms }))
            }
            Request::GetConnectedUsers { limit } => {
                let users = service.connected_users(limit).await?;
                let users: Vec<UserDto> = users.iter().map(Into::into).collect();
                wire::ack(id, json!({ "users": users }))
            }
            Request::GetPresence { user_ids } => {
                let list = service.presence_of(user_ids).await?;
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
        };
        Ok((ack, then))
    }

    fn sent(&self, id: Option<&str>, message: &Message) -> Utf8Bytes {
        self.env.metrics.messages_acked.inc();
        message_ack(id, message)
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
