//! The lanes: every conversation hashes to one, whose turn keeps its
//! commits and deliveries in seq order, and whose queue lets the turn
//! holder commit everything sent meanwhile at once (group commit).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use async_lock::Mutex;
use futures::channel::oneshot;

use super::{Caller, ChatService, Draft};
use crate::domain::error::{PortError, SendError};
use crate::domain::event::Event;
use crate::domain::file::Attachment;
use crate::domain::ids::{ConversationId, SessionId};
use crate::domain::membership::Denied;
use crate::domain::message::{AppendOutcome, Message, NewMessage};
use crate::domain::ports::AppendError;
use crate::domain::routing;

/// Lanes that keep each conversation's commits and deliveries in seq order.
/// Sharding bounds the memory whatever the number of conversations; the
/// locks are fair, so a busy conversation sharing a lane cannot starve the
/// others.
pub(super) const LANES: usize = 1024;

/// Most waiting messages one store call takes: each recipient session gets
/// a batch's events at once, and this many fit any session's outbound
/// queue (1024 frames by default), so a burst alone never makes a reading
/// client look slow.
const MAX_SHARED_COMMIT: usize = 256;

/// One shard of conversations: the turn that keeps their commits and
/// deliveries in order, and the messages waiting for it.
#[derive(Default)]
pub(super) struct Lane {
    pub(super) turn: Mutex<()>,
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
    reply: oneshot::Sender<Result<Message, SendError>>,
}

/// Where a queued message's sender hears how it went.
pub(super) type Outcome = oneshot::Receiver<Result<Message, SendError>>;

impl ChatService {
    /// Puts a message in its conversation's lane.
    pub(super) fn queue(
        &self,
        caller: &Caller,
        conversation: ConversationId,
        send: Draft,
        attachments: Vec<Attachment>,
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
                attachments,
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
    pub(super) async fn take_turn(
        &self,
        lane: &Lane,
        mut answer: Outcome,
    ) -> Result<Message, SendError> {
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
                let interrupted = anyhow::anyhow!("the send was interrupted");
                return Err(SendError::Unknown(PortError(interrupted)));
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
                Err(AppendError::NoSuchConversation) => Err(SendError::NoSuchConversation),
                Err(AppendError::NotMember) => Err(SendError::Refused(Denied::NotMember)),
                Err(AppendError::Blocked) => Err(SendError::Refused(Denied::Blocked)),
                Err(AppendError::Unknown(e)) => Err(SendError::Unknown(e)),
            };
            let _ = reply.send(result);
        }
    }

    pub(super) fn lane(&self, conversation: &ConversationId) -> &Lane {
        let mut h = DefaultHasher::new();
        conversation.hash(&mut h);
        &self.lanes[(h.finish() as usize) % self.lanes.len()]
    }
}
