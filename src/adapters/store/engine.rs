//! One store over either backend: [`DieselStore`] implements the storage
//! ports once (`ports.rs`), on the shared queries, and leaves to an
//! [`Engine`] only what SQLite and PostgreSQL truly do differently: how a
//! call reaches a connection, how concurrent writes are kept in order, and
//! the append, which each has tuned to its own strengths.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use diesel::QueryResult;
use diesel::result::Error as DieselError;

use super::queries::Queries;
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, NewMessage};
use crate::domain::ports::AppendError;
use crate::domain::{ConversationId, UserId, Username};

/// What a backend supplies to [`DieselStore`].
pub trait Engine: Send + Sync + 'static {
    /// The connection the shared queries run on.
    type Conn: Queries;
    /// What a write transaction works on: the connection, and what the
    /// engine keeps beside it.
    type Tx: Tx<Conn = Self::Conn>;

    /// `s` as this backend can store it.
    fn text(s: String) -> String;

    /// Runs `work` on a connection that reads.
    fn read<T, F>(&self, work: F) -> impl Future<Output = Result<T, PortError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&mut Self::Conn) -> anyhow::Result<T> + Send + 'static;

    /// Runs `work` in one transaction; returns once it is committed.
    fn write<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut Self::Tx) -> Result<T, E> + Send + 'static;

    /// Runs `work`, one statement that is atomic on its own; returns once
    /// it is committed.
    fn write_one<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut Self::Conn) -> Result<T, E> + Send + 'static;

    /// Whether the database answers (see `MessageStore::ping`).
    fn ping(&self) -> impl Future<Output = Result<(), PortError>> + Send;

    /// See `MessageStore::append`.
    fn append(
        &self,
        new: NewMessage,
    ) -> impl Future<Output = Result<AppendOutcome, AppendError>> + Send;

    /// See `MessageStore::append_all`.
    fn append_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Vec<Result<AppendOutcome, AppendError>>> + Send;
}

/// A write transaction in progress.
pub trait Tx: Send + 'static {
    /// The connection the shared queries run on.
    type Conn: Queries;

    /// The connection.
    fn conn(&mut self) -> &mut Self::Conn;

    /// Keeps appends out of the conversation until the transaction ends;
    /// returns its newest seq, or `None` when it does not exist.
    fn lock_conversation(&mut self, conversation: &str) -> QueryResult<Option<i64>>;

    /// The conversation's members changed in this transaction.
    fn members_changed(&mut self, _conversation: &str) {}

    /// A block between `blocker` and `blocked` was made or lifted.
    ///
    /// # Errors
    /// When what the block touches cannot be read.
    fn block_changed(&mut self, _blocker: &str, _blocked: &str) -> QueryResult<()> {
        Ok(())
    }

    /// An edit or a delete replaced a message's text.
    fn text_replaced(&mut self) {}
}

/// Both storage ports on one database, over the backend `E`.
pub struct DieselStore<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for DieselStore<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E> {
    engine: E,
    // Users and direct conversations never change once created, so the hot
    // path (every send, every handshake) need not ask the database again,
    // and a copy here cannot go stale even with other processes writing.
    /// Names by id: a user's id is the key, not kept twice.
    users: RwLock<HashMap<UserId, Username>>,
    directs: RwLock<HashMap<String, ConversationId>>,
}

impl<E: Engine> DieselStore<E> {
    /// The store over `engine`.
    pub(super) fn new(engine: E) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                users: RwLock::default(),
                directs: RwLock::default(),
            }),
        }
    }

    /// The backend.
    pub(super) fn engine(&self) -> &E {
        &self.inner.engine
    }

    /// The cache of users by id.
    pub(super) fn users(&self) -> &RwLock<HashMap<UserId, Username>> {
        &self.inner.users
    }

    /// The cache of direct conversations by pair key.
    pub(super) fn directs(&self) -> &RwLock<HashMap<String, ConversationId>> {
        &self.inner.directs
    }

    /// Runs a read (see [`Engine::read`]).
    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut E::Conn) -> anyhow::Result<T> + Send + 'static,
    {
        self.inner.engine.read(work).await
    }

    /// `s` as the backend stores it.
    pub(super) fn text(s: &str) -> String {
        E::text(s.to_owned())
    }
}
