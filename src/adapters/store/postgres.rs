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

use super::common::{
    ConversationRow, MessageRow, SummaryRow, cached, conversation_columns, conversation_from_row,
    message_columns, message_from_row, remember, seq, summary_columns, to_db_seq, user_from_row,
    visibility_column,
};
use super::schema::{conversations, members, messages, users};
use crate::domain::conversation::{MEMBERS_LISTED, direct_key, name_key};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{Access, AppendError, CreateUserError, MessageStore, UserStore};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ClientMsgId, ConversationId, ConversationSummary, HistoryPage, HistoryQuery, Membership,
    Message, MessageId, RoomName, Timestamp, User, UserId, Username, Visibility,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Connections per process. Several processes share one server, whose
/// default limit is 100 connections.
const POOL_SIZE: u32 = 16;

/// How long opening the store, or a call, waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    users: RwLock<HashMap<String, User>>,
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

// ---------------------------------------------------------------- queries

fn message_by_seq(
    conn: &mut PgConnection,
    conversation: &str,
    at: i64,
) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::seq.eq(at))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

fn message_by_id(
    conn: &mut PgConnection,
    conversation: &str,
    id: &str,
) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::id.eq(id))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

fn member_ids(conn: &mut PgConnection, conversation: &str) -> QueryResult<Vec<UserId>> {
    Ok(members::table
        .filter(members::conversation_id.eq(conversation))
        .select(members::user_id)
        .load::<String>(conn)?
        .into_iter()
        .map(UserId::new)
        .collect())
}

/// Completes a [`SummaryRow`] with the listed members and, for members, the
/// newest message.
fn summarize(conn: &mut PgConnection, row: SummaryRow) -> anyhow::Result<ConversationSummary> {
    let (row, member_count, last_read) = row;
    let conversation = conversation_from_row(row)?;
    let id = conversation.id.as_str();
    let listed = members::table
        .inner_join(users::table)
        .filter(members::conversation_id.eq(id))
        // A sequence numbers every insert: join order, even within one
        // millisecond, and a member who rejoins goes to the back.
        .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "members.join_order",
        ))
        .limit(MEMBERS_LISTED as i64)
        .select((users::id, users::username))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(user_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let last_message = match (last_read, conversation.last_seq) {
        (None, _) | (_, 0) => None,
        (Some(_), last) => message_by_seq(conn, id, to_db_seq(last))?,
    };
    Ok(ConversationSummary {
        conversation,
        members: listed,
        member_count: seq(member_count),
        last_read_seq: last_read.map_or(0, seq),
        last_message,
    })
}

/// Locks a conversation's row for the rest of the transaction and returns
/// its newest seq; `None` when it does not exist. Every write that touches
/// a conversation takes this lock first, so they queue in one order and
/// cannot deadlock.
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
    /// The sender already stored this clientMsgId here.
    Duplicate,
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Self {
        Self::Failed(e.into())
    }
}

/// The message `sender` stored under `client_msg_id` in `conversation`.
fn original(
    conn: &mut PgConnection,
    conversation: &str,
    sender: &str,
    client_msg_id: &str,
) -> anyhow::Result<Option<Message>> {
    messages::table
        .inner_join(users::table)
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::sender_id.eq(sender))
        .filter(messages::client_msg_id.eq(client_msg_id))
        .select(message_columns!())
        .first::<MessageRow>(conn)
        .optional()?
        .map(message_from_row)
        .transpose()
}

/// Stores `new` with the conversation's next seq, in one transaction that
/// holds the conversation's row lock from the seq's increment to the commit.
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
        let seq = diesel::update(conversations::table.find(&conv))
            .set((
                conversations::last_seq.eq(conversations::last_seq + 1),
                conversations::last_activity.eq(at),
            ))
            .returning(conversations::last_seq)
            .get_result::<i64>(conn)
            .optional()?
            .ok_or(Abort::Failed(AppendError::NoSuchConversation))?;
        let members = member_ids(conn, &conv)?;
        if !members.iter().any(|m| m.as_str() == sender) {
            return Err(Abort::Failed(AppendError::NotMember));
        }
        // A retry of a stored send conflicts on the clientMsgId index; the
        // lock guarantees the original is committed, so the conflict is
        // seen here rather than as an error.
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
            // Rolling back gives the seq back.
            return Err(Abort::Duplicate);
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
        Err(Abort::Duplicate) => {
            let found = match &cmid {
                Some(cmid) => original(conn, &conv, &sender, cmid).map_err(PortError)?,
                None => None,
            };
            found.map(AppendOutcome::Duplicate).ok_or_else(|| {
                AppendError::Unknown(PortError(anyhow!(
                    "a message conflicted with no original to return"
                )))
            })
        }
    }
}

// ---------------------------------------------------------------- users

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
        let row = (
            users::id.eq(user.id.as_str().to_owned()),
            users::username.eq(username.as_str().to_owned()),
            users::username_key.eq(username.key()),
            users::password_hash.eq(hash.0.clone()),
            users::created_at.eq(now.millis()),
        );
        // One statement: atomic without a transaction, and the unique key
        // turns a concurrent registration of the name into `Duplicate`.
        self.run(move |conn| {
            diesel::insert_into(users::table)
                .values(row)
                .execute(conn)?;
            Ok::<_, CreateUserError>(())
        })
        .await?;
        Ok(user)
    }

    async fn credentials(
        &self,
        username: &Username,
    ) -> Result<Option<(User, PasswordHash)>, PortError> {
        let key = username.key();
        self.read(move |conn| {
            let row = users::table
                .filter(users::username_key.eq(key))
                .select((users::id, users::username, users::password_hash))
                .first::<(String, String, String)>(conn)
                .optional()?;
            row.map(|(id, name, hash)| Ok((user_from_row((id, name))?, PasswordHash(hash))))
                .transpose()
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, PortError> {
        if let Some(user) = cached(&self.inner.users, id.as_str()) {
            return Ok(Some(user));
        }
        let id = text(id.as_str());
        let key = id.clone();
        let found = self
            .read(move |conn| {
                users::table
                    .find(id)
                    .select((users::id, users::username))
                    .first::<(String, String)>(conn)
                    .optional()?
                    .map(user_from_row)
                    .transpose()
            })
            .await?;
        if let Some(user) = &found {
            remember(&self.inner.users, key, user.clone());
        }
        Ok(found)
    }

    async fn users_last_seen(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<(User, Option<Timestamp>)>, PortError> {
        let ids: Vec<String> = ids.iter().map(|i| text(i.as_str())).collect();
        self.read(move |conn| {
            // One array parameter however many ids: no limit to stay under.
            users::table
                .filter(users::id.eq_any(ids))
                .select((users::id, users::username, users::last_seen))
                .load::<(String, String, Option<i64>)>(conn)?
                .into_iter()
                .map(|(id, name, seen)| {
                    Ok((user_from_row((id, name))?, seen.map(Timestamp::from_millis)))
                })
                .collect()
        })
        .await
    }

    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError> {
        let lo = text(&prefix.to_ascii_lowercase());
        // Keys sort bytewise (COLLATE "C"); every key starting with `lo`
        // sorts below this.
        let hi = format!("{lo}\u{10FFFF}");
        self.read(move |conn| {
            users::table
                .filter(users::username_key.ge(lo))
                .filter(users::username_key.lt(hi))
                .order(users::username_key)
                .limit(i64::from(limit))
                .select((users::id, users::username))
                .load::<(String, String)>(conn)?
                .into_iter()
                .map(user_from_row)
                .collect()
        })
        .await
    }

    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError> {
        let id = text(id.as_str());
        self.run(move |conn| {
            diesel::update(users::table.find(id))
                .set(users::last_seen.eq(at.millis()))
                .execute(conn)?;
            Ok::<_, PortError>(())
        })
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
        let find = |conn: &mut PgConnection, key: &str| {
            conversations::table
                .filter(conversations::direct_key.eq(key))
                .select(conversations::id)
                .first::<String>(conn)
                .optional()
        };
        // Almost always it exists already: look before writing anything.
        let k = key.clone();
        if let Some(id) = self.read(move |conn| Ok(find(conn, &k)?)).await? {
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
                    let id = find(conn, &key)?
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
        self.read(move |conn| {
            let Some(row) = conversations::table
                .find(&conv)
                .select(conversation_columns!())
                .first::<ConversationRow>(conn)
                .optional()?
            else {
                return Ok(Access::NoSuchConversation);
            };
            let conversation = conversation_from_row(row)?;
            let read = members::table
                .find((&conv, &user))
                .select(members::last_read_seq)
                .first::<i64>(conn)
                .optional()?;
            Ok(match read {
                Some(r) => Access::Member(
                    conversation,
                    Membership {
                        last_read_seq: seq(r),
                    },
                ),
                None => Access::NotMember(conversation),
            })
        })
        .await
    }

    async fn member_ids(&self, conversation: &ConversationId) -> Result<Vec<UserId>, PortError> {
        let conv = text(conversation.as_str());
        self.read(move |conn| Ok(member_ids(conn, &conv)?)).await
    }

    async fn append(&self, new: NewMessage) -> Result<AppendOutcome, AppendError> {
        self.run(move |conn| append(conn, new)).await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError> {
        let conv = text(conversation.as_str());
        self.read(move |conn| {
            let upper = query.before_seq.map_or(i64::MAX, to_db_seq);
            let want = i64::from(query.limit) + 1;
            let base = messages::table
                .inner_join(users::table)
                .filter(messages::conversation_id.eq(&conv))
                .filter(messages::seq.lt(upper))
                .select(message_columns!());
            let mut rows: Vec<MessageRow> = match query.after_seq {
                Some(after) => base
                    .filter(messages::seq.gt(to_db_seq(after)))
                    .order(messages::seq.asc())
                    .limit(want)
                    .load(conn)?,
                None => base.order(messages::seq.desc()).limit(want).load(conn)?,
            };
            let has_more = rows.len() > query.limit as usize;
            rows.truncate(query.limit as usize);
            if query.after_seq.is_none() {
                rows.reverse();
            }
            let messages = rows
                .into_iter()
                .map(message_from_row)
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(HistoryPage { messages, has_more })
        })
        .await
    }

    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationSummary>, PortError> {
        let user = text(user.as_str());
        self.read(move |conn| {
            let rows = members::table
                .inner_join(conversations::table)
                .filter(members::user_id.eq(&user))
                .order((conversations::last_activity.desc(), conversations::id))
                .select(summary_columns!())
                .load::<SummaryRow>(conn)?;
            rows.into_iter().map(|row| summarize(conn, row)).collect()
        })
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
        // One statement: of concurrent moves to one seq, the later ones
        // re-check the condition after the first commits, and move nothing.
        self.run(move |conn| {
            let moved = diesel::update(members::table.find((&conv, &user)))
                .filter(members::last_read_seq.lt(to))
                .set(members::last_read_seq.eq(to))
                .execute(conn)?;
            Ok::<_, PortError>(moved > 0)
        })
        .await
    }

    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = text(user.as_str());
        self.read(move |conn| {
            let theirs = diesel::alias!(members as theirs);
            Ok(members::table
                .inner_join(
                    theirs.on(theirs
                        .field(members::conversation_id)
                        .eq(members::conversation_id)),
                )
                .filter(members::user_id.eq(&user))
                .filter(theirs.field(members::user_id).ne(&user))
                .select(theirs.field(members::user_id))
                .distinct()
                .load::<String>(conn)?
                .into_iter()
                .map(UserId::new)
                .collect())
        })
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
        let row = (
            conversations::id.eq(id.clone()),
            conversations::kind.eq("room"),
            conversations::name.eq(text(name.as_str())),
            conversations::name_key.eq(text(&name_key(name.as_str()))),
            conversations::visibility.eq(visibility_column(visibility)),
            conversations::created_by.eq(text(creator.as_str())),
            conversations::created_at.eq(now.millis()),
            conversations::last_activity.eq(now.millis()),
        );
        let creator = text(creator.as_str());
        self.write(move |conn| {
            diesel::insert_into(conversations::table)
                .values(row)
                .execute(conn)?;
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
            let removed = diesel::delete(members::table.find((&conv, &user))).execute(conn)?;
            if removed > 0 {
                diesel::update(conversations::table.find(&conv))
                    .set(conversations::member_count.eq(conversations::member_count - 1))
                    .execute(conn)?;
            }
            Ok::<_, PortError>(removed > 0)
        })
        .await
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError> {
        let (conv, viewer) = (text(conversation.as_str()), text(viewer.as_str()));
        self.read(move |conn| {
            let row = conversations::table
                .left_join(
                    members::table.on(members::conversation_id
                        .eq(conversations::id)
                        .and(members::user_id.eq(&viewer))),
                )
                .filter(conversations::id.eq(&conv))
                .select(summary_columns!())
                .first::<SummaryRow>(conn)
                .optional()?;
            row.map(|row| summarize(conn, row)).transpose()
        })
        .await
    }

    async fn list_rooms(
        &self,
        viewer: &UserId,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, PortError> {
        let viewer = text(viewer.as_str());
        let lo = text(&name_key(prefix));
        let hi = format!("{lo}\u{10FFFF}");
        self.read(move |conn| {
            let rows = conversations::table
                .left_join(
                    members::table.on(members::conversation_id
                        .eq(conversations::id)
                        .and(members::user_id.eq(&viewer))),
                )
                .filter(conversations::kind.eq("room"))
                .filter(
                    conversations::visibility
                        .eq("public")
                        .or(members::user_id.is_not_null()),
                )
                .filter(conversations::name_key.ge(&lo))
                .filter(conversations::name_key.lt(&hi))
                .order((conversations::name_key, conversations::id))
                .limit(i64::from(limit))
                .select(summary_columns!())
                .load::<SummaryRow>(conn)?;
            rows.into_iter().map(|row| summarize(conn, row)).collect()
        })
        .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (text(conversation.as_str()), text(id.as_str()));
        self.read(move |conn| message_by_id(conn, &conv, &id)).await
    }

    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (text(conversation.as_str()), text(id.as_str()));
        self.write(move |conn| {
            let target = messages::table
                .filter(messages::conversation_id.eq(&conv))
                .filter(messages::id.eq(&id));
            match change {
                // An edit racing a delete must not bring text back into a
                // deleted message.
                MessageChange::Edit { body, at } => diesel::update(target)
                    .filter(messages::deleted.eq(false))
                    .set((
                        messages::body.eq(text(body.as_str())),
                        messages::edited_at.eq(at.millis()),
                    ))
                    .execute(conn)?,
                // The text is gone for good, not just hidden.
                MessageChange::Delete => diesel::update(target)
                    .set((messages::body.eq(""), messages::deleted.eq(true)))
                    .execute(conn)?,
            };
            message_by_id(conn, &conv, &id).map_err(PortError)
        })
        .await
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
