//! Messages: sending, reading history, read markers, typing, edits and
//! deletions.

use super::{Caller, ChatService, Draft, Recipient};
use crate::domain::blocking;
use crate::domain::conversation::{ConversationKind, ConversationSummary, next_read_marker};
use crate::domain::error::{ChangeMessageError, ConversationError, PortError, SendError};
use crate::domain::event::Event;
use crate::domain::file::Attachment;
use crate::domain::ids::{ConversationId, MessageId};
use crate::domain::membership::{Action, authorize};
use crate::domain::message::{HistoryPage, HistoryQuery, Message, MessageBody, MessageChange};
use crate::domain::routing;

impl ChatService {
    /// Sends a message: to a conversation the caller is in, or to a user,
    /// in their direct conversation (created on first use). The message is
    /// committed before this returns; a retry with the same clientMsgId
    /// returns the original and sends no second event.
    ///
    /// # Errors
    /// [`SendError`]: no such conversation or user, or the rules refuse
    /// (not a member, blocked by the other member).
    pub async fn send(&self, caller: &Caller, draft: Draft) -> Result<Message, SendError> {
        let mut results = self.send_all(caller, vec![draft]).await;
        results.pop().expect("one result per send")
    }

    /// Sends several messages of one session at once, each answered as
    /// [`Self::send`] would answer it, in their order. Messages to one conversation get seqs in the
    /// order given, and all of them may share one commit.
    pub async fn send_all(
        &self,
        caller: &Caller,
        sends: Vec<Draft>,
    ) -> Vec<Result<Message, SendError>> {
        // Targets are resolved one after the other, and every message
        // queued before any waits for its turn: a session's messages keep
        // their order, and a conversation's turn holder takes them all.
        let mut queued = Vec::with_capacity(sends.len());
        for send in sends {
            queued.push(match self.target_of(caller, &send).await {
                Ok((conversation, attachments)) => {
                    Ok(self.queue(caller, conversation, send, attachments))
                }
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

    /// Where a send goes, and the files it carries.
    async fn target_of(
        &self,
        caller: &Caller,
        send: &Draft,
    ) -> Result<(ConversationId, Vec<Attachment>), SendError> {
        let conversation = self.conversation_of(caller, &send.to).await?;
        let attachments = self
            .attachments_of(&caller.user.id, &send.attachments)
            .await?;
        Ok((conversation, attachments))
    }

    async fn conversation_of(
        &self,
        caller: &Caller,
        to: &Recipient,
    ) -> Result<ConversationId, SendError> {
        let to = match to {
            Recipient::Conversation(id) => return Ok(id.clone()),
            Recipient::User(to) => to,
        };
        let recipient = self.ports.users.user(to).await?;
        let recipient = recipient.ok_or(SendError::NoSuchUser)?;
        Ok(self
            .ports
            .messages
            .direct_conversation(&caller.user.id, &recipient.id, self.now())
            .await?)
    }

    /// A page of a conversation's history.
    ///
    /// # Errors
    /// [`ConversationError`]: no such conversation, or not a member.
    pub async fn history(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ConversationError> {
        self.allowed(caller, conversation, Action::ReadHistory)
            .await?;
        Ok(self.ports.messages.history(conversation, query).await?)
    }

    /// Every conversation of the caller, most recently active first.
    pub async fn conversations(
        &self,
        caller: &Caller,
    ) -> Result<Vec<ConversationSummary>, PortError> {
        self.ports.messages.conversations_of(&caller.user.id).await
    }

    /// Moves the caller's read marker forward (never back, never past the
    /// newest message) and tells the other sessions of every member.
    /// Returns the marker as it now stands.
    ///
    /// # Errors
    /// [`ConversationError`]: no such conversation, or not a member.
    pub async fn mark_read(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        seq: u64,
    ) -> Result<u64, ConversationError> {
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
    /// [`ConversationError`]: no such conversation, or not a member.
    pub async fn typing(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        active: bool,
    ) -> Result<(), ConversationError> {
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

    /// Replaces the text of one of the caller's messages; every session of
    /// every member but the caller's gets `messageUpdated`.
    ///
    /// # Errors
    /// [`ChangeMessageError`]: no such conversation or message, not a
    /// member or not the sender, or a deleted message.
    pub async fn edit_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
        body: MessageBody,
    ) -> Result<Message, ChangeMessageError> {
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
    ) -> Result<Message, ChangeMessageError> {
        self.change_message(caller, conversation, message, MessageChange::Delete)
            .await
    }

    async fn change_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Message, ChangeMessageError> {
        let (conv, _) = self
            .member_of(caller, conversation, Action::ReadHistory)
            .await?;
        let _in_order = self.lane(conversation).turn.lock().await;
        let current = self
            .ports
            .messages
            .message(conversation, id)
            .await?
            .ok_or(ChangeMessageError::NoSuchMessage)?;
        let own = current.sender_id == caller.user.id;
        let action = match change {
            MessageChange::Edit { .. } => Action::Edit { own },
            MessageChange::Delete => Action::Delete { own },
        };
        authorize(&conv.kind, true, action)?;
        match (&change, current.deleted) {
            (MessageChange::Edit { .. }, true) => {
                return Err(ChangeMessageError::Deleted);
            }
            (MessageChange::Delete, true) => return Ok(current),
            _ => {}
        }
        let updated = self
            .ports
            .messages
            .update_message(conversation, id, change)
            .await?
            .ok_or(ChangeMessageError::NoSuchMessage)?;
        let members = self.ports.messages.member_ids(conversation).await?;
        let delivery = routing::to_members_but_actor_session(members, &caller.session);
        self.ports
            .transport
            .deliver(delivery, Event::MessageUpdated(updated.clone()))
            .await;
        Ok(updated)
    }
}
