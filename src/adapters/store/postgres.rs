//! `UserStore` and `MessageStore` on PostgreSQL (diesel), safe for several
//! server processes sharing one database.
//!
//! Every call runs on tokio's blocking pool with a connection from a small
//! pool; a semaphore as large as the pool makes a burst of calls wait as
//! tasks instead of as blocked threads. Nothing that orders writes lives in
//! this process: a conversation's `seq` comes from its row, locked by the
//! transaction that appends (docs/storage.md says why), so another process
//! on the same database sees and respects the same lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool};
use diesel::result::Error as DieselError;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::sync::Semaphore;

use super::common::{all_failed, cached, cached_user, remember, seq, to_db_seq};
use super::schema::{blocks, conversations, members, messages};
use crate::domain::blocking;
use crate::domain::conversation::{direct_key, name_key};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{
    Access, AppendError, BlockStore, CreateUserError, MessageStore, UserStore,
};
use crate::domain::positions::{Position, SeqIndex};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ClientMsgId, ConversationId, ConversationSummary, HistoryPage, HistoryQuery, Message,
    MessageId, RoomName, Timestamp, User, UserId, Username, Visibility,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Connections per process. Several processes share one server, whose
/// default limit is 100 connections.
const POOL_SIZE: u32 = 16;

/// How long opening the store, or a call, waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// What the shared queries (`queries.rs`) need to know of this backend.
type Db = PgConnection;
/// An identity column numbers every insert: join order, even within one
/// millisecond, and a member who rejoins goes to the back.
const JOIN_ORDER: &str = "members.join_order";
/// The same for blocks: the order they were made in.
const BLOCK_ORDER: &str = "blocks.block_order";
/// One array parameter however many ids: no limit to stay under.
const IDS_PER_QUERY: usize = usize::MAX;

#[path = "queries.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend, against its connection type"
)]
mod queries;

/// Both storage ports on one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<Manager>,
    permits: Arc<Semaphore>,
    // Users and direct conversations never change once created, so a copy
    // here cannot go stale even with other processes writing.
    /// Names by id: a user's id is the key, not kept twice.
    users: RwLock<HashMap<UserId, Username>>,
    directs: RwLock<HashMap<String, ConversationId>>,
}

/// A pooled connection, and whether it was found dead after a failed call.
struct Conn {
    pg: PgConnection,
    dead: bool,
}

/// diesel's connection manager, plus dropping connections found dead: its
/// own check sees only a broken transaction, so after a database restart
/// the pool would keep handing out closed connections.
struct Manager(ConnectionManager<PgConnection>);

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Conn, Self::Error> {
        Ok(Conn {
            pg: self.0.connect()?,
            dead: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), Self::Error> {
        self.0.is_valid(&mut conn.pg)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.dead || self.0.has_broken(&mut conn.pg)
    }
}

/// PostgreSQL text cannot hold U+0000, which the protocol allows: it is
/// stored, and so read back, as U+FFFD. Ids and prefixes go through here
/// too, so that a lookup with one finds nothing instead of failing.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date.
    /// Several processes may open one database at once: they migrate in turn.
    ///
    /// # Errors
    /// When the database cannot be reached, does not use UTF-8, or a
    /// migration fails.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        // One plain connection first: it fails at once, with libpq's reason,
        // where the pool would retry until its timeout.
        let mut conn = PgConnection::establish(url).context("cannot connect to PostgreSQL")?;
        let encoding: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_setting('server_encoding')",
        ))
        .get_result(&mut conn)?;
        if encoding != "UTF8" {
            return Err(anyhow!(
                "the PostgreSQL database uses the encoding {encoding}; confab needs UTF8"
            ));
        }
        migrate(&mut conn)?;
        drop(conn);
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // A query per checkout would cost a round trip on every call;
            // dead connections are caught after a failure instead (`run`).
            .test_on_check_out(false)
            .build(Manager(ConnectionManager::new(url)))
            .context("cannot connect to PostgreSQL")?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                permits: Arc::new(Semaphore::new(POOL_SIZE as usize)),
                users: RwLock::default(),
                directs: RwLock::default(),
            }),
        })
    }

    /// Runs `work` with a pooled connection on the blocking pool.
    async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PortError> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        let stopped = || E::from(PortError(anyhow!("the database pool has stopped")));
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = inner
                .pool
                .get()
                .map_err(|e| E::from(PortError(anyhow!("no database connection: {e}"))))?;
            let result = work(&mut conn.pg);
            // Most failures are answers (a duplicate, a non-member); only a
            // connection that cannot run the simplest query is dropped.
            if result.is_err() && conn.pg.batch_execute("SELECT 1").is_err() {
                conn.dead = true;
            }
            result
        })
        .await
        // A panic unwinds through the pooled connection, which r2d2 then drops.
        .map_err(|_| E::from(PortError(anyhow!("a database call panicked"))))?
    }

    /// Runs a read; errors become [`PortError`].
    async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> anyhow::Result<T> + Send + 'static,
    {
        self.run(move |conn| work(conn).map_err(PortError)).await
    }

    /// Runs `work` in one transaction; returns once it is committed.
    async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        self.run(move |conn| conn.transaction(work)).await
    }
}

/// Applies the pending migrations, holding an advisory lock for the schema
/// so that processes starting together do not race to create the tables.
fn migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    const KEY: &str = "hashtext('confab-migrations:' || coalesce(current_schema(), ''))";
    conn.batch_execute(&format!("SELECT pg_advisory_lock({KEY})"))?;
    let migrated = conn
        .run_pending_migrations(MIGRATIONS)
        .map(drop)
        .map_err(|e| anyhow!("database migration failed: {e}"));
    let unlocked = conn.batch_execute(&format!("SELECT pg_advisory_unlock({KEY})"));
    migrated?;
    Ok(unlocked?)
}

// ---------------------------------------------------------------- writes

/// Locks a conversation's row for the rest of the transaction and returns
/// its newest seq; `None` when it does not exist. Every write that touches
/// a conversation takes this lock first (an append, by the update that
/// takes its seq), so they queue in one order. A write holds one such lock,
/// except a batch of appends, which takes its conversations' in order of
/// id (`append_batch`): none can deadlock another.
fn lock_conversation(conn: &mut PgConnection, conversation: &str) -> QueryResult<Option<i64>> {
    conversations::table
        .find(conversation)
        .select(conversations::last_seq)
        // NO KEY: foreign-key checks of new members and messages, which
        // take KEY SHARE on this row, need not wait for it.
        .for_no_key_update()
        .get_result::<i64>(conn)
        .optional()
}

/// Adds a member with the read marker at `last_read`; false if already one.
fn add_member(
    conn: &mut PgConnection,
    conversation: &str,
    user: &str,
    last_read: i64,
    now: i64,
) -> QueryResult<bool> {
    let added = diesel::insert_into(members::table)
        .values((
            members::conversation_id.eq(conversation),
            members::user_id.eq(user),
            members::last_read_seq.eq(last_read),
            members::joined_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    if added > 0 {
        diesel::update(conversations::table.find(conversation))
            .set(conversations::member_count.eq(conversations::member_count + 1))
            .execute(conn)?;
    }
    Ok(added > 0)
}

/// Why an append's transaction was rolled back.
enum Abort {
    Failed(AppendError),
    /// The sender already stored this clientMsgId here: the original, if
    /// found (boxed: every `?` in the transaction builds this type, so it
    /// stays small).
    Duplicate(Option<Box<Message>>),
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Self {
        Self::Failed(e.into())
    }
}

/// Stores `new` with the conversation's next seq, in one transaction that
/// holds the conversation's row lock from the seq's increment to the commit.
/// Called inside a transaction (a batch), diesel makes this transaction a
/// savepoint: a failure undoes this message alone, and every statement of
/// the message, the duplicate's lookup included, runs inside it.
fn append(conn: &mut PgConnection, new: NewMessage) -> Result<AppendOutcome, AppendError> {
    let conv = text(new.conversation_id.as_str());
    let sender = text(new.sender.id.as_str());
    let body = text(new.body.as_str());
    let cmid = new.client_msg_id.as_ref().map(|c| text(c.as_str()));
    let at = new.created_at.millis();
    let id = uuid::Uuid::now_v7().to_string();
    let stored = conn.transaction(|conn| {
        // Taking the next seq locks the row: a concurrent append to this
        // conversation, from any process, waits here until this one ends.
        // The same statement tells whether a member blocks the sender, so
        // that the check costs no round trip (an index probe of the few
        // users who block the sender, usually none).
        let (seq, direct, blocked) = diesel::update(conversations::table.find(&conv))
            .set((
                conversations::last_seq.eq(conversations::last_seq + 1),
                conversations::last_activity.eq(at),
            ))
            .returning((
                conversations::last_seq,
                conversations::kind.eq("direct"),
                diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "EXISTS (SELECT 1 FROM blocks JOIN members \
                     ON members.user_id = blocks.blocker \
                     AND members.conversation_id = conversations.id \
                     WHERE blocks.blocked = ",
                )
                .bind::<diesel::sql_types::Text, _>(&sender)
                .sql(")"),
            ))
            .get_result::<(i64, bool, bool)>(conn)
            .optional()?
            .ok_or(Abort::Failed(AppendError::NoSuchConversation))?;
        let members = queries::member_ids(conn, &conv)?;
        if !members.iter().any(|m| m.as_str() == sender) {
            return Err(Abort::Failed(AppendError::NotMember));
        }
        if !blocking::may_send(direct, blocked) {
            return Err(Abort::Failed(AppendError::Blocked));
        }
        // A retry of a stored send conflicts on the clientMsgId index; the
        // lock guarantees the original is committed (or stored earlier in
        // this batch), so the conflict is seen here rather than as an error.
        let inserted = diesel::insert_into(messages::table)
            .values((
                messages::id.eq(&id),
                messages::conversation_id.eq(&conv),
                messages::seq.eq(seq),
                messages::sender_id.eq(&sender),
                messages::body.eq(&body),
                messages::client_msg_id.eq(&cmid),
                messages::created_at.eq(at),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
        if inserted == 0 {
            let original = match &cmid {
                Some(cmid) => queries::original(conn, &conv, &sender, cmid)
                    .map_err(|e| Abort::Failed(AppendError::Unknown(PortError(e))))?,
                None => None,
            };
            // Rolling back gives the seq back.
            return Err(Abort::Duplicate(original.map(Box::new)));
        }
        Ok((seq, members))
    });
    match stored {
        Ok((seq, members)) => {
            let message = Message {
                id: MessageId::new(id),
                conversation_id: new.conversation_id,
                seq: self::seq(seq),
                sender_id: new.sender.id,
                sender: new.sender.username,
                body,
                client_msg_id: cmid
                    .map(|c| ClientMsgId::parse(&c))
                    .transpose()
                    .map_err(|e| PortError(e.into()))?,
                created_at: new.created_at,
                edited_at: None,
                deleted: false,
            };
            Ok(AppendOutcome::Stored { message, members })
        }
        Err(Abort::Failed(e)) => Err(e),
        Err(Abort::Duplicate(original)) => original
            .map(|m| AppendOutcome::Duplicate(*m))
            .ok_or_else(|| {
                AppendError::Unknown(PortError(anyhow!(
                    "a message conflicted with no original to return"
                )))
            }),
    }
}

/// Appends a batch in one transaction, so that it costs one commit: the
/// rows of all its conversations are locked first, then each message is
/// appended, in order, in a savepoint of its own.
fn append_batch(
    conn: &mut PgConnection,
    batch: Vec<NewMessage>,
) -> Result<Vec<Result<AppendOutcome, AppendError>>, AppendError> {
    conn.transaction(|conn| {
        // The batch holds every lock it takes until it commits, and may
        // span conversations: two batches taking the same two locks in
        // opposite orders would deadlock, and PostgreSQL would abort one of
        // them after a second. Taken in one order, sorted by id, before any
        // message is written, a batch only ever waits for a lock above all
        // those it holds; every other write holds one conversation lock,
        // so none can close a cycle. Locked here, at the top of the
        // transaction, a lock also outlives a message's rolled-back
        // savepoint, so the batch never lets go of a conversation half-way.
        let mut conversations: Vec<String> = batch
            .iter()
            .map(|new| text(new.conversation_id.as_str()))
            .collect();
        conversations.sort_unstable();
        conversations.dedup();
        for conversation in &conversations {
            // An unknown one locks nothing; its messages fail on their own.
            lock_conversation(conn, conversation)?;
        }
        Ok(batch.into_iter().map(|new| append(conn, new)).collect())
    })
}

// ---------------------------------------------------------------- blocks

#[async_trait]
impl BlockStore for PgStore {
    async fn block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError> {
        let (blocker, blocked) = (text(blocker.as_str()), text(blocked.as_str()));
        self.write(move |conn| {
            let added = diesel::insert_into(blocks::table)
                .values((
                    blocks::blocker.eq(&blocker),
                    blocks::blocked.eq(&blocked),
                    blocks::created_at.eq(now.millis()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            Ok::<_, PortError>(added > 0)
        })
        .await
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, PortError> {
        let (blocker, blocked) = (text(blocker.as_str()), text(blocked.as_str()));
        self.write(move |conn| Ok::<_, PortError>(queries::delete_block(conn, &blocker, &blocked)?))
            .await
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<User>, PortError> {
        let blocker = text(blocker.as_str());
        self.read(move |conn| queries::blocked_by(conn, &blocker))
            .await
    }

    async fn blockers_of(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = text(user.as_str());
        self.read(move |conn| Ok(queries::blockers_of(conn, &user)?))
            .await
    }
}

// ---------------------------------------------------------------- users

/// Cluster mode seeds and resyncs delivery cursors from here: one indexed
/// query for many users (members' primary key leads with the conversation,
/// so the user lookup uses `members_by_user`).
#[async_trait]
impl SeqIndex for PgStore {
    async fn positions(&self, users: &[UserId]) -> Result<Vec<Position>, PortError> {
        let ids: Vec<String> = users.iter().map(|u| text(u.as_str())).collect();
        let rows: Vec<(String, String, i64, i64)> = self
            .read(move |conn| {
                Ok(members::table
                    .inner_join(conversations::table)
                    .filter(members::user_id.eq_any(&ids))
                    .select((
                        members::user_id,
                        members::conversation_id,
                        conversations::last_seq,
                        members::last_read_seq,
                    ))
                    .load(conn)?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user, conversation, last, read)| Position {
                user: UserId::new(user),
                conversation: ConversationId::new(conversation),
                last_seq: seq(last),
                last_read_seq: seq(read),
            })
            .collect())
    }
}

#[async_trait]
impl UserStore for PgStore {
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
        // One statement: atomic without a transaction, and the unique key
        // turns a concurrent registration of the name into `Duplicate`.
        self.run(move |conn| {
            Ok::<_, CreateUserError>(queries::insert_user(conn, &row, &hash, now)?)
        })
        .await?;
        Ok(user)
    }

    async fn credentials(
        &self,
        username: &Username,
    ) -> Result<Option<(User, PasswordHash)>, PortError> {
        let key = username.key();
        self.read(move |conn| queries::credentials(conn, &key))
            .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, PortError> {
        if let Some(user) = cached_user(&self.inner.users, id.as_str()) {
            return Ok(Some(user));
        }
        let id = text(id.as_str());
        let found = self.read(move |conn| queries::user(conn, &id)).await?;
        if let Some(user) = &found {
            remember(&self.inner.users, user.id.clone(), user.username.clone());
        }
        Ok(found)
    }

    async fn users_last_seen(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<(User, Option<Timestamp>)>, PortError> {
        let ids: Vec<String> = ids.iter().map(|i| text(i.as_str())).collect();
        self.read(move |conn| queries::users_last_seen(conn, &ids))
            .await
    }

    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError> {
        let key = text(&prefix.to_ascii_lowercase());
        self.read(move |conn| queries::users_by_prefix(conn, &key, limit))
            .await
    }

    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError> {
        let id = text(id.as_str());
        self.run(move |conn| Ok::<_, PortError>(queries::set_last_seen(conn, &id, at)?))
            .await
    }
}

// ---------------------------------------------------------------- messages

#[async_trait]
impl MessageStore for PgStore {
    async fn ping(&self) -> Result<(), PortError> {
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?)).await
    }

    async fn direct_conversation(
        &self,
        a: &UserId,
        b: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError> {
        let key = text(&direct_key(a, b));
        if let Some(id) = cached(&self.inner.directs, &key) {
            return Ok(id);
        }
        // Almost always it exists already: look before writing anything.
        let k = key.clone();
        if let Some(id) = self
            .read(move |conn| Ok(queries::direct_by_key(conn, &k)?))
            .await?
        {
            let id = ConversationId::new(id);
            remember(&self.inner.directs, key, id.clone());
            return Ok(id);
        }
        let (a, b) = (text(a.as_str()), text(b.as_str()));
        let cache_key = key.clone();
        let id = self
            .write(move |conn| {
                let id = uuid::Uuid::now_v7().to_string();
                // Of two racing creations, the second waits on the unique
                // key until the first commits, then inserts nothing and
                // reads the first's row (each statement sees the latest
                // commits).
                let created = diesel::insert_into(conversations::table)
                    .values((
                        conversations::id.eq(&id),
                        conversations::kind.eq("direct"),
                        conversations::direct_key.eq(&key),
                        conversations::created_by.eq(&a),
                        conversations::created_at.eq(now.millis()),
                        conversations::last_activity.eq(now.millis()),
                    ))
                    .on_conflict(conversations::direct_key)
                    .do_nothing()
                    .execute(conn)?;
                if created == 0 {
                    let id = queries::direct_by_key(conn, &key)?
                        .ok_or_else(|| PortError(anyhow!("a direct conversation vanished")))?;
                    return Ok(ConversationId::new(id));
                }
                add_member(conn, &id, &a, 0, now.millis())?;
                add_member(conn, &id, &b, 0, now.millis())?;
                Ok::<_, PortError>(ConversationId::new(id))
            })
            .await?;
        remember(&self.inner.directs, cache_key, id.clone());
        Ok(id)
    }

    async fn access(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Access, PortError> {
        let (conv, user) = (text(conversation.as_str()), text(user.as_str()));
        self.read(move |conn| queries::access(conn, &conv, &user))
            .await
    }

    async fn member_ids(&self, conversation: &ConversationId) -> Result<Vec<UserId>, PortError> {
        let conv = text(conversation.as_str());
        self.read(move |conn| Ok(queries::member_ids(conn, &conv)?))
            .await
    }

    async fn append(&self, new: NewMessage) -> Result<AppendOutcome, AppendError> {
        self.run(move |conn| append(conn, new)).await
    }

    async fn append_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        let n = messages.len();
        if n == 0 {
            return Vec::new();
        }
        self.run(move |conn| append_batch(conn, messages))
            .await
            .unwrap_or_else(|e| all_failed(n, &e))
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError> {
        let conv = text(conversation.as_str());
        self.read(move |conn| queries::history(conn, &conv, query))
            .await
    }

    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationSummary>, PortError> {
        let user = text(user.as_str());
        self.read(move |conn| queries::conversations_of(conn, &user))
            .await
    }

    async fn advance_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        to: u64,
    ) -> Result<bool, PortError> {
        let (conv, user) = (text(conversation.as_str()), text(user.as_str()));
        let to = to_db_seq(to);
        self.run(move |conn| {
            Ok::<_, PortError>(queries::advance_read_marker(conn, &conv, &user, to)?)
        })
        .await
    }

    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = text(user.as_str());
        self.read(move |conn| Ok(queries::contacts(conn, &user)?))
            .await
    }

    async fn create_room(
        &self,
        name: &RoomName,
        visibility: Visibility,
        creator: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError> {
        let id = uuid::Uuid::now_v7().to_string();
        let (name, key) = (text(name.as_str()), text(&name_key(name.as_str())));
        let creator = text(creator.as_str());
        self.write(move |conn| {
            queries::insert_room(conn, &id, &name, &key, visibility, &creator, now)?;
            add_member(conn, &id, &creator, 0, now.millis())?;
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
        let (conv, user) = (text(conversation.as_str()), text(user.as_str()));
        self.write(move |conn| {
            // Under the lock no message can land between reading the newest
            // seq and joining: the new member has read exactly up to it.
            let last_seq = lock_conversation(conn, &conv)?
                .ok_or_else(|| PortError(anyhow!("no conversation {conv:?} to join")))?;
            Ok::<_, PortError>(add_member(conn, &conv, &user, last_seq, now.millis())?)
        })
        .await
    }

    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, PortError> {
        let (conv, user) = (text(conversation.as_str()), text(user.as_str()));
        self.write(move |conn| {
            // Under the lock, an append either came before (and lists the
            // leaver) or comes after (and refuses them).
            if lock_conversation(conn, &conv)?.is_none() {
                return Ok(false);
            }
            Ok::<_, PortError>(queries::remove_member(conn, &conv, &user)?)
        })
        .await
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError> {
        let (conv, viewer) = (text(conversation.as_str()), text(viewer.as_str()));
        self.read(move |conn| queries::summary(conn, &conv, &viewer))
            .await
    }

    async fn list_rooms(
        &self,
        viewer: &UserId,
        prefix: &str,
        after: Option<ConversationId>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, PortError> {
        let after = after.map(|a| a.as_str().to_owned());
        let (viewer, key) = (text(viewer.as_str()), text(&name_key(prefix)));
        self.read(move |conn| queries::list_rooms(conn, &viewer, &key, after.as_deref(), limit))
            .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (text(conversation.as_str()), text(id.as_str()));
        self.read(move |conn| queries::message_by_id(conn, &conv, &id))
            .await
    }

    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (text(conversation.as_str()), text(id.as_str()));
        let edit = match change {
            MessageChange::Edit { body, at } => Some((text(body.as_str()), at)),
            MessageChange::Delete => None,
        };
        self.write(move |conn| queries::update_message(conn, &conv, &id, edit).map_err(PortError))
            .await
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
