//! The blocking use cases (`blockUser`, `unblockUser`, `getBlocked`); the
//! rules are in [`crate::domain::blocking`], and the other use cases apply
//! them where presence shows and where messages and invitations go.

use super::{Caller, ChatService};
use crate::domain::blocking;
use crate::domain::error::{BlockError, PortError};
use crate::domain::event::Event;
use crate::domain::ids::UserId;
use crate::domain::presence::{Presence, Status};
use crate::domain::routing;
use crate::domain::user::User;

impl ChatService {
    /// Blocks a user (blocking them again changes nothing). When they share
    /// a conversation with the caller, their sessions hear the caller went
    /// offline, as the caller is to them from now on.
    ///
    /// # Errors
    /// [`BlockError`]: the caller themself, or no such user.
    pub async fn block_user(&self, caller: &Caller, target: &UserId) -> Result<(), BlockError> {
        let target = self.block_target(caller, target).await?;
        let added = self
            .ports
            .blocks
            .block(&caller.user.id, &target.id, self.now())
            .await?;
        if added {
            let hidden = Presence {
                user: caller.user.clone(),
                status: Status::Offline,
                last_seen: None,
            };
            self.tell_contact(&caller.user.id, target.id, hidden)
                .await?;
        }
        Ok(())
    }

    /// Unblocks a user (unblocking one not blocked changes nothing). When
    /// they share a conversation with the caller, their sessions hear the
    /// caller's presence again.
    ///
    /// # Errors
    /// [`BlockError`]: the caller themself, or no such user.
    pub async fn unblock_user(&self, caller: &Caller, target: &UserId) -> Result<(), BlockError> {
        let target = self.block_target(caller, target).await?;
        let removed = self
            .ports
            .blocks
            .unblock(&caller.user.id, &target.id)
            .await?;
        if removed {
            let seen = self
                .presence_seen_by(&target.id, vec![caller.user.id.clone()])
                .await?;
            if let Some(presence) = seen.into_iter().next() {
                self.tell_contact(&caller.user.id, target.id, presence)
                    .await?;
            }
        }
        Ok(())
    }

    /// The user `target` names, if the caller may block or unblock them.
    async fn block_target(&self, caller: &Caller, target: &UserId) -> Result<User, BlockError> {
        blocking::may_block(&caller.user.id, target).map_err(|_| BlockError::Yourself)?;
        let target = self.ports.users.user(target).await?;
        target.ok_or(BlockError::NoSuchUser)
    }

    /// The users the caller blocks, the earliest blocked first.
    pub async fn blocked_users(&self, caller: &Caller) -> Result<Vec<User>, PortError> {
        self.ports.blocks.blocked_by(&caller.user.id).await
    }

    /// The ids of the users `user` blocks.
    pub(super) async fn blocked_ids(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let blocked = self.ports.blocks.blocked_by(user).await?;
        Ok(blocked.into_iter().map(|u| u.id).collect())
    }

    /// Sends `subject`'s presence to `contact` alone, if they share a
    /// conversation (presence goes to contacts only).
    async fn tell_contact(
        &self,
        subject: &UserId,
        contact: UserId,
        presence: Presence,
    ) -> Result<(), PortError> {
        let contacts = self.ports.messages.contacts(subject).await?;
        if contacts.contains(&contact) {
            let delivery = routing::to_contacts(vec![contact], subject, &[]);
            self.ports
                .transport
                .deliver(delivery, Event::Presence(presence))
                .await;
        }
        Ok(())
    }
}
