//! The storage ports on [`DieselStore`], written once for both backends:
//! each call turns its arguments into what the backend stores, runs the
//! shared queries through the engine, and keeps the caches of what never
//! changes.

use anyhow::anyhow;
use async_trait::async_trait;

use super::common::{cached, cached_user, remember, to_db_seq};
use super::engine::{DieselStore, Engine, Tx};
use super::queries::{ConversationQueries, MessageQueries, UserQueries};
use crate::domain::conversation::{direct_key, name_key};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{
    Access, AppendError, BlockStore, CreateUserError, MessageStore, UserStore,
};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ConversationId, ConversationSummary, HistoryPage, HistoryQuery, Message, MessageId, RoomName,
    Timestamp, User, UserId, Username, Visibility,
};

impl<E: Engine> DieselStore<E> {
    /// Runs `change` to the members of `conversation` with `user`, under
    /// the conversation's lock, given its newest seq (`None` when it does
    /// not exist); the engine hears that the members changed.
    async fn change_members<F>(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        change: F,
    ) -> Result<bool, PortError>
    where
        F: FnOnce(&mut E::Conn, &str, &str, Option<i64>) -> Result<bool, PortError>
            + Send
            + 'static,
    {
        let (conv, user) = (Self::text(conversation.as_str()), Self::text(user.as_str()));
        self.engine()
            .write(move |tx| {
                let last_seq = tx.lock_conversation(&conv)?;
                let changed = change(tx.conn(), &conv, &user, last_seq)?;
                tx.members_changed(&conv);
                Ok(changed)
            })
            .await
    }
}

#[async_trait]
impl<E: Engine> UserStore for DieselStore<E> {
    async fn create_user(
        &self,
        username: &Username,
        hash: &PasswordHash,
        now: Timestamp,
    ) -> Result<User, CreateUserError> {
        let user = User {
            id: UserId::new(uuid::Uuid::now_v7().to_string()),
            username: username.clone(),
        };
        let (row, hash) = (user.clone(), hash.clone());
        // One statement: the unique key turns a concurrent registration of
        // the name into `Duplicate`.
        self.engine()
            .write_one(move |conn| Ok::<_, CreateUserError>(conn.insert_user(&row, &hash, now)?))
            .await?;
        Ok(user)
    }

    async fn credentials(
        &self,
        username: &Username,
    ) -> Result<Option<(User, PasswordHash)>, PortError> {
        let key = username.key();
        self.read(move |conn| conn.credentials(&key)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, PortError> {
        if let Some(user) = cached_user(self.users(), id.as_str()) {
            return Ok(Some(user));
        }
        let id = Self::text(id.as_str());
        let found = self.read(move |conn| conn.user(&id)).await?;
        if let Some(user) = &found {
            remember(self.users(), user.id.clone(), user.username.clone());
        }
        Ok(found)
    }

    async fn users_last_seen(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<(User, Option<Timestamp>)>, PortError> {
        let ids: Vec<String> = ids.iter().map(|i| Self::text(i.as_str())).collect();
        self.read(move |conn| conn.users_last_seen(&ids)).await
    }

    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError> {
        let key = E::text(prefix.to_ascii_lowercase());
        self.read(move |conn| conn.users_by_prefix(&key, limit))
            .await
    }

    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError> {
        let id = Self::text(id.as_str());
        self.engine()
            .write_one(move |conn| Ok::<_, PortError>(conn.set_last_seen(&id, at)?))
            .await
    }
}

#[async_trait]
impl<E: Engine> BlockStore for DieselStore<E> {
    async fn block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError> {
        let (blocker, blocked) = (Self::text(blocker.as_str()), Self::text(blocked.as_str()));
        self.engine()
            .write(move |tx| {
                let added = tx.conn().insert_block(&blocker, &blocked, now)?;
                tx.block_changed(&blocker, &blocked)?;
                Ok::<_, PortError>(added)
            })
            .await
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, PortError> {
        let (blocker, blocked) = (Self::text(blocker.as_str()), Self::text(blocked.as_str()));
        self.engine()
            .write(move |tx| {
                let removed = tx.conn().delete_block(&blocker, &blocked)?;
                tx.block_changed(&blocker, &blocked)?;
                Ok::<_, PortError>(removed)
            })
            .await
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<User>, PortError> {
        let blocker = Self::text(blocker.as_str());
        self.read(move |conn| conn.blocked_by(&blocker)).await
    }

    async fn blockers_of(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = Self::text(user.as_str());
        self.read(move |conn| Ok(conn.blockers_of(&user)?)).await
    }
}

#[async_trait]
impl<E: Engine> MessageStore for DieselStore<E> {
    async fn ping(&self) -> Result<(), PortError> {
        self.engine().ping().await
    }

    async fn direct_conversation(
        &self,
        a: &UserId,
        b: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError> {
        let key = E::text(direct_key(a, b));
        if let Some(id) = cached(self.directs(), &key) {
            return Ok(id);
        }
        // Almost always it exists already: look before writing anything.
        let k = key.clone();
        if let Some(id) = self.read(move |conn| Ok(conn.direct_by_key(&k)?)).await? {
            let id = ConversationId::new(id);
            remember(self.directs(), key, id.clone());
            return Ok(id);
        }
        let (a, b) = (Self::text(a.as_str()), Self::text(b.as_str()));
        let cache_key = key.clone();
        let id = self
            .engine()
            .write(move |tx| {
                let conn = tx.conn();
                let id = uuid::Uuid::now_v7().to_string();
                // Of two racing creations, the second waits on the unique
                // key until the first commits, then inserts nothing and
                // reads the first's row (each statement sees the latest
                // commits).
                if !conn.insert_direct(&id, &key, &a, now)? {
                    let id = conn
                        .direct_by_key(&key)?
                        .ok_or_else(|| PortError(anyhow!("a direct conversation vanished")))?;
                    return Ok(ConversationId::new(id));
                }
                conn.add_member(&id, &a, 0, now.millis())?;
                conn.add_member(&id, &b, 0, now.millis())?;
                Ok::<_, PortError>(ConversationId::new(id))
            })
            .await?;
        remember(self.directs(), cache_key, id.clone());
        Ok(id)
    }

    async fn access(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Access, PortError> {
        let (conv, user) = (Self::text(conversation.as_str()), Self::text(user.as_str()));
        self.read(move |conn| conn.access(&conv, &user)).await
    }

    async fn member_ids(&self, conversation: &ConversationId) -> Result<Vec<UserId>, PortError> {
        let conv = Self::text(conversation.as_str());
        self.read(move |conn| Ok(conn.member_ids(&conv)?)).await
    }

    async fn append(&self, new: NewMessage) -> Result<AppendOutcome, AppendError> {
        self.engine().append(new).await
    }

    async fn append_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        self.engine().append_all(messages).await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError> {
        let conv = Self::text(conversation.as_str());
        self.read(move |conn| conn.history(&conv, query)).await
    }

    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationSummary>, PortError> {
        let user = Self::text(user.as_str());
        self.read(move |conn| conn.conversations_of(&user)).await
    }

    async fn advance_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        to: u64,
    ) -> Result<bool, PortError> {
        let (conv, user) = (Self::text(conversation.as_str()), Self::text(user.as_str()));
        let to = to_db_seq(to);
        self.engine()
            .write_one(move |conn| Ok::<_, PortError>(conn.advance_read_marker(&conv, &user, to)?))
            .await
    }

    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = Self::text(user.as_str());
        self.read(move |conn| Ok(conn.contacts(&user)?)).await
    }

    async fn create_room(
        &self,
        name: &RoomName,
        visibility: Visibility,
        creator: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError> {
        let id = uuid::Uuid::now_v7().to_string();
        let (name, key) = (Self::text(name.as_str()), E::text(name_key(name.as_str())));
        let creator = Self::text(creator.as_str());
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                conn.insert_room(&id, &name, &key, visibility, &creator, now)?;
                conn.add_member(&id, &creator, 0, now.millis())?;
                Ok::<_, PortError>(ConversationId::new(id))
            })
            .await
    }

    async fn add_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError> {
        self.change_members(conversation, user, move |conn, conv, user, last_seq| {
            // Under the lock no message can land between reading the newest
            // seq and joining: the new member has read exactly up to it.
            let last_seq =
                last_seq.ok_or_else(|| PortError(anyhow!("no conversation {conv:?} to join")))?;
            Ok(conn.add_member(conv, user, last_seq, now.millis())?)
        })
        .await
    }

    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, PortError> {
        self.change_members(conversation, user, |conn, conv, user, last_seq| {
            // Under the lock, an append either came before (and lists the
            // leaver) or comes after (and refuses them).
            match last_seq {
                Some(_) => Ok(conn.remove_member(conv, user)?),
                None => Ok(false),
            }
        })
        .await
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError> {
        let (conv, viewer) = (
            Self::text(conversation.as_str()),
            Self::text(viewer.as_str()),
        );
        self.read(move |conn| conn.summary(&conv, &viewer)).await
    }

    async fn list_rooms(
        &self,
        viewer: &UserId,
        prefix: &str,
        after: Option<ConversationId>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, PortError> {
        let after = after.map(|a| a.as_str().to_owned());
        let (viewer, key) = (Self::text(viewer.as_str()), E::text(name_key(prefix)));
        self.read(move |conn| conn.list_rooms(&viewer, &key, after.as_deref(), limit))
            .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (Self::text(conversation.as_str()), Self::text(id.as_str()));
        self.read(move |conn| conn.message_by_id(&conv, &id)).await
    }

    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (Self::text(conversation.as_str()), Self::text(id.as_str()));
        let edit = match change {
            MessageChange::Edit { body, at } => Some((E::text(body.into_string()), at)),
            MessageChange::Delete => None,
        };
        self.engine()
            .write(move |tx| {
                let updated = tx
                    .conn()
                    .update_message(&conv, &id, edit)
                    .map_err(PortError);
                tx.text_replaced();
                updated
            })
            .await
    }
}
