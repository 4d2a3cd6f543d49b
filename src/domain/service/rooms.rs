//! Rooms: creating, joining, inviting, leaving and listing them.

use super::{Answer, Caller, ChatService, ROOMS_PAGE};
use crate::domain::blocking;
use crate::domain::conversation::{ConversationSummary, RoomName, RoomsPage, Visibility};
use crate::domain::error::{ConversationError, InviteError, PortError};
use crate::domain::event::{Event, MemberAction};
use crate::domain::ids::{ConversationId, UserId};
use crate::domain::membership::{Action, Allowed, Denied};
use crate::domain::page::PageLimit;
use crate::domain::routing;
use crate::domain::user::User;

impl ChatService {
    /// Creates a room with the caller as its first member; the caller's
    /// other sessions hear that they joined it.
    pub async fn create_room(
        &self,
        caller: &Caller,
        name: RoomName,
        visibility: Visibility,
    ) -> Result<ConversationSummary, PortError> {
        let messages = &self.ports.messages;
        let id = messages
            .create_room(&name, visibility, &caller.user.id, self.now())
            .await?;
        let summary = messages.summary(&id, &caller.user.id).await?;
        let summary =
            summary.ok_or_else(|| PortError(anyhow::anyhow!("a room just created is missing")))?;
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
    /// [`ConversationError`]: no such conversation, or a private room or a
    /// direct conversation.
    pub async fn join_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<ConversationSummary>, ConversationError> {
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
    /// [`InviteError`]: no such room or user, or a non-member caller, a
    /// direct conversation or an invitee who blocks the caller.
    pub async fn invite_to_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        invitee: &UserId,
    ) -> Result<Answer<ConversationSummary>, InviteError> {
        let _in_order = self.lane(conversation).turn.lock().await;
        self.allowed(caller, conversation, Action::Invite).await?;
        let invitee = self.ports.users.user(invitee).await?;
        let invitee = invitee.ok_or(InviteError::NoSuchUser)?;
        let blockers = self.ports.blocks.blockers_of(&caller.user.id).await?;
        if !blocking::may_invite(&invitee.id, &blockers) {
            return Err(Denied::Blocked.into());
        }
        let answer = self
            .admit(caller, conversation, &invitee, MemberAction::Invited)
            .await?;
        Ok(answer)
    }

    /// Adds `who` to the room and tells every member (nothing when `who`
    /// was in already); answers with the room as the caller sees it.
    async fn admit(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        who: &User,
        action: MemberAction,
    ) -> Result<Answer<ConversationSummary>, ConversationError> {
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
    /// [`ConversationError`]: no such conversation, or a non-member or a
    /// direct conversation.
    pub async fn leave_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<()>, ConversationError> {
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
    pub async fn list_rooms(
        &self,
        caller: &Caller,
        prefix: &str,
        after: Option<&ConversationId>,
        limit: PageLimit,
    ) -> Result<RoomsPage, PortError> {
        let limit = limit.within(ROOMS_PAGE.0, ROOMS_PAGE.1);
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
    ) -> Result<(), PortError> {
        let mut members = self.ports.messages.member_ids(conversation).await?;
        members.extend(also.cloned());
        let delivery = routing::to_members_but_actor_session(members, &caller.session);
        self.ports.transport.deliver(delivery, event).await;
        Ok(())
    }

    /// The conversation as `viewer` sees it.
    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<ConversationSummary, ConversationError> {
        self.ports
            .messages
            .summary(conversation, viewer)
            .await?
            .ok_or(ConversationError::NoSuchConversation)
    }
}

fn member_event(conversation: &ConversationId, user: &User, action: MemberAction) -> Event {
    Event::Member {
        conversation_id: conversation.clone(),
        user: user.clone(),
        action,
    }
}
