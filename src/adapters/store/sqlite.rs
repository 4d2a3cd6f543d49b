//! `UserStore` and `MessageStore` on an embedded SQLite database (diesel).
//!
//! SQLite allows one writer at a time, so writes go through one dedicated
//! connection on its own thread, which commits every write waiting at the
//! time in one transaction (see `group_commit`); reads use a small pool on
//! tokio's blocking pool, and WAL lets them run alongside the writer.
//! Nothing here blocks the async workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::common::{
    CACHE_LIMIT, ConversationRow, MessageRow, SummaryRow, cached, conversation_columns,
    conversation_from_row, message_columns, message_from_row, remember, seq, stored_username,
    summary_columns, to_db_seq,
};
use super::group_commit::{GroupCommit, WriterState};
use super::readers::Readers;
use super::schema::{conversations, members, messages, users};
use super::statements::{BumpSeq, InsertMessage};
use crate::domain::conversation::{MEMBERS_LISTED, direct_key, name_key};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{Access, AppendError, CreateUserError, MessageStore, UserStore};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ClientMsgId, ConversationId, ConversationSummary, HistoryPage, HistoryQuery, Membership,
    Message, MessageId, RoomName, Timestamp, User, UserId, Username, Visibility,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Readers in the pool; SQLite reads are fast, a few suffice on small machines.
const READERS: usize = 4;

/// Both storage ports on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: GroupCommit<Writer>,
    // Dropped with the store, which stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    readers: Readers,
    // Users and direct conversations never change once created, so the hot
    // path (every send, every handshake) need not ask the database again.
    users: RwLock<HashMap<String, User>>,
    directs: RwLock<HashMap<String, ConversationId>>,
}

/// The writer thread's connection, and what it keeps in memory of the
/// conversations being written to: their last seq and their members, which
/// every append needs and which change only through this very thread.
struct Writer {
    conn: SqliteConnection,
    conversations: HashMap<String, Live>,
    /// SQLite's count of commits by other connections, when last looked.
    data_version: i64,
}

/// A conversation as the writer knows it.
struct Live {
    last_seq: i64,
    /// Sorted, for a binary search on every append.
    members: Vec<UserId>,
}

impl Writer {
    /// The conversation's live state, loaded on first use; `None` if it
    /// does not exist.
    fn live(&mut self, conversation: &str) -> QueryResult<Option<&mut Live>> {
        if !self.conversations.contains_key(conversation) {
            let Some(last_seq) = conversations::table
                .find(conversation)
                .select(conversations::last_seq)
                .first::<i64>(&mut self.conn)
                .optional()?
            else {
                return Ok(None);
            };
            let mut members = member_ids(&mut self.conn, conversation)?;
            members.sort_unstable();
            if self.conversations.len() >= CACHE_LIMIT {
                self.conversations.clear();
            }
            self.conversations
                .insert(conversation.to_owned(), Live { last_seq, members });
        }
        Ok(self.conversations.get_mut(conversation))
    }

    /// Its members changed: load them again when next needed.
    fn forget(&mut self, conversation: &str) {
        self.conversations.remove(conversation);
    }
}

impl WriterState for Writer {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    fn began(&mut self) -> QueryResult<()> {
        // One process is the only writer in normal operation; should
        // another process have written to the same file (two servers
        // started on one database by mistake), what is remembered is stale.
        #[derive(QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            data_version: i64,
        }
        let now = diesel::sql_query("PRAGMA data_version")
            .get_result::<Version>(&mut self.conn)?
            .data_version;
        if now != self.data_version {
            self.conversations.clear();
            self.data_version = now;
        }
        Ok(())
    }

    fn rolled_back(&mut self) {
        self.conversations.clear();
    }
}

/// Turns on SQLite's query planner stability guarantee (QPSG) for every
/// connection this process opens. The bundled SQLite is built with STAT4,
/// under which a statement with a bound parameter in its LIMIT (every
/// diesel `first()`) or compared to an indexed column is marked expired on
/// each new binding: diesel's cached statements were parsed and planned
/// again on every use, the largest cost in the writer thread's profile.
/// There is no pragma for it and diesel does not expose the raw handle, so
/// it is set from an auto-extension, which SQLite runs on each new connection.
fn stable_query_plans() {
    use libsqlite3_sys as ffi;
    use std::os::raw::{c_char, c_int};

    unsafe extern "C" fn enable_qpsg(
        db: *mut ffi::sqlite3,
        _error: *mut *mut c_char,
        _api: *const ffi::sqlite3_api_routines,
    ) -> c_int {
        // SAFETY: SQLite calls this with a valid, open connection; the
        // option takes an int and an optional out-pointer, here null.
        unsafe {
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as c_int,
                std::ptr::null_mut::<c_int>(),
            );
        }
        ffi::SQLITE_OK
    }

    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering an entry point with the signature SQLite expects;
    // the function lives for the whole process.
    ONCE.call_once(|| unsafe {
        ffi::sqlite3_auto_extension(Some(enable_qpsg));
    });
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Starts the thread that checkpoints the WAL, so that commits never wait
/// for it; it stops when the returned sender is dropped.
fn start_checkpointer(mut conn: SqliteConnection) -> std::io::Result<std::sync::mpsc::Sender<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("confab-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                // PASSIVE: copies what no reader still needs, never blocks
                // the writer; what is left goes next time.
                if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        })?;
    Ok(stop)
}

#[derive(Debug)]
struct Pragmas {
    reader: bool,
}

impl Pragmas {
    fn apply(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        // busy_timeout first: the other pragmas may need a lock.
        // temp_store: the statement journals of savepoints stay in memory
        // instead of being temporary files created and unlinked per batch.
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )?;
        if self.reader {
            conn.batch_execute("PRAGMA query_only = ON;")
        } else {
            // FULL: a commit is on disk before the ack, even across power
            // loss. secure_delete: a deleted message's text is overwritten,
            // not just unlinked.
            // wal_autocheckpoint: the checkpointer thread copies the WAL
            // back, not whichever commit happens to cross the threshold.
            // cache_size (32 MiB): the writer's working set of index pages
            // stays in memory instead of being read again and spilled
            // mid-transaction.
            conn.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; \
                 PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768;",
            )
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        stable_query_plans();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let url = path
            .to_str()
            .ok_or_else(|| anyhow!("the database path is not valid UTF-8"))?;
        let mut writer = SqliteConnection::establish(url)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        Pragmas { reader: false }.apply(&mut writer)?;
        writer
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow!("database migration failed: {e}"))?;
        let readers = (0..READERS)
            .map(|_| {
                let mut conn = SqliteConnection::establish(url)
                    .with_context(|| format!("cannot open the database {}", path.display()))?;
                Pragmas { reader: true }.apply(&mut conn)?;
                Ok(conn)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut checkpoints = SqliteConnection::establish(url)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        Pragmas { reader: false }.apply(&mut checkpoints)?;
        Ok(Self {
            inner: Arc::new(Inner {
                _checkpointer: start_checkpointer(checkpoints)
                    .context("cannot start the database checkpointer")?,
                writer: GroupCommit::start(Writer {
                    conn: writer,
                    conversations: HashMap::new(),
                    data_version: 0,
                })
                .context("cannot start the database writer")?,
                readers: Readers::start(readers).context("cannot start the database readers")?,
                users: RwLock::default(),
                directs: RwLock::default(),
            }),
        })
    }

    async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
    {
        self.inner.readers.read(work).await
    }

    /// Runs `work` in a transaction on the writer connection, shared with
    /// whatever other writes are waiting (group commit); returns once committed.
    async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, E> + Send + 'static,
    {
        self.inner.writer.write(|w| work(&mut w.conn)).await
    }

    /// As [`Self::write`], for work that reads or changes what the writer
    /// keeps in memory (seqs, members).
    async fn write_live<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    {
        self.inner.writer.write(work).await
    }
}

fn message_by_seq(
    conn: &mut SqliteConnection,
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

fn member_ids(conn: &mut SqliteConnection, conversation: &str) -> QueryResult<Vec<UserId>> {
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
fn summarize(conn: &mut SqliteConnection, row: SummaryRow) -> anyhow::Result<ConversationSummary> {
    let (row, member_count, last_read) = row;
    let conversation = conversation_from_row(row)?;
    let id = conversation.id.as_str();
    let listed = members::table
        .inner_join(users::table)
        .filter(members::conversation_id.eq(id))
        // The rowid grows with every insert: join order, even within one
        // millisecond, and a member who rejoins goes to the back.
        .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "members.rowid",
        ))
        .limit(MEMBERS_LISTED as i64)
        .select((users::id, users::username))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(|(id, name)| {
            Ok(User {
                id: UserId::new(id),
                username: stored_username(name)?,
            })
        })
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

fn message_by_id(
    conn: &mut SqliteConnection,
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

/// Adds a member with the read marker at `last_read`; false if already one.
fn add_member(
    conn: &mut SqliteConnection,
    conversation: &str,
    user: &str,
    last_read: i64,
    now: i64,
) -> QueryResult<bool> {
    let added = diesel::insert_or_ignore_into(members::table)
        .values((
            members::conversation_id.eq(conversation),
            members::user_id.eq(user),
            members::last_read_seq.eq(last_read),
            members::joined_at.eq(now),
        ))
        .execute(conn)?;
    if added > 0 {
        diesel::update(conversations::table.find(conversation))
            .set(conversations::member_count.eq(conversations::member_count + 1))
            .execute(conn)?;
    }
    Ok(added > 0)
}

/// Whether a failed append wrote nothing: refusals are found before the
/// first statement that writes.
fn refused(e: &AppendError) -> bool {
    !matches!(e, AppendError::Unknown(_))
}

/// Appends one message on the writer: the next seq, after the checks.
/// Runs without a savepoint (see [`refused`]), so every check comes
/// before the first write.
fn append(w: &mut Writer, new: NewMessage) -> Result<AppendOutcome, AppendError> {
    let conv = new.conversation_id.as_str();
    let sender = new.sender.id.as_str();
    let live = w.live(conv)?.ok_or(AppendError::NoSuchConversation)?;
    if live.members.binary_search(&new.sender.id).is_err() {
        return Err(AppendError::NotMember);
    }
    let seq = live.last_seq + 1;
    let conn = &mut w.conn;
    let at = new.created_at.millis();
    let id = uuid::Uuid::now_v7().to_string();
    let cmid = new.client_msg_id.as_ref().map(ClientMsgId::as_str);
    // Insert first: a retried clientMsgId is rare, and the unique index
    // finds it while inserting, so the common case needs no lookup.
    let inserted = InsertMessage {
        id: &id,
        conversation: conv,
        seq,
        sender,
        body: new.body.as_str(),
        client_msg_id: cmid,
        at,
    }
    .execute(conn);
    match (inserted, cmid) {
        (Ok(_), _) => {}
        (Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)), Some(cmid)) => {
            let original = messages::table
                .inner_join(users::table)
                .filter(messages::conversation_id.eq(conv))
                .filter(messages::sender_id.eq(sender))
                .filter(messages::client_msg_id.eq(cmid))
                .select(message_columns!())
                .first::<MessageRow>(conn)
                .optional()?
                .ok_or(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    info,
                ))?;
            let message =
                message_from_row(original).map_err(|e| AppendError::Unknown(PortError(e)))?;
            return Ok(AppendOutcome::Duplicate(message));
        }
        (Err(e), _) => return Err(e.into()),
    }
    BumpSeq {
        conversation: conv,
        seq,
        at,
    }
    .execute(conn)?;
    // Only now, with every statement done: a failed append leaves the
    // remembered seq as it was.
    let live = w.live(conv)?.ok_or(AppendError::NoSuchConversation)?;
    live.last_seq = seq;
    let members = live.members.clone();
    Ok(AppendOutcome::Stored {
        message: Message {
            id: MessageId::new(id),
            conversation_id: new.conversation_id.clone(),
            seq: self::seq(seq),
            sender_id: new.sender.id.clone(),
            sender: new.sender.username.clone(),
            body: new.body.into_string(),
            client_msg_id: new.client_msg_id.clone(),
            created_at: new.created_at,
            edited_at: None,
            deleted: false,
        },
        members,
    })
}

// ---------------------------------------------------------------- users

#[async_trait]
impl UserStore for SqliteStore {
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
        self.write(move |conn| {
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
            row.map(|(id, name, hash)| {
                let user = User {
                    id: UserId::new(id),
                    username: stored_username(name)?,
                };
                Ok((user, PasswordHash(hash)))
            })
            .transpose()
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, PortError> {
        if let Some(user) = cached(&self.inner.users, id.as_str()) {
            return Ok(Some(user));
        }
        let id = id.as_str().to_owned();
        let key = id.clone();
        let found = self
            .read(move |conn| {
                let row = users::table
                    .find(id)
                    .select((users::id, users::username))
                    .first::<(String, String)>(conn)
                    .optional()?;
                row.map(|(id, name)| {
                    Ok(User {
                        id: UserId::new(id),
                        username: stored_username(name)?,
                    })
                })
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
        let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        self.read(move |conn| {
            let mut out = Vec::with_capacity(ids.len());
            // Stay well below SQLite's limit on bound parameters.
            for chunk in ids.chunks(500) {
                let rows = users::table
                    .filter(users::id.eq_any(chunk))
                    .select((users::id, users::username, users::last_seen))
                    .load::<(String, String, Option<i64>)>(conn)?;
                for (id, name, seen) in rows {
                    let user = User {
                        id: UserId::new(id),
                        username: stored_username(name)?,
                    };
                    out.push((user, seen.map(Timestamp::from_millis)));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError> {
        let lo = prefix.to_ascii_lowercase();
        // Keys sort bytewise; every key starting with `lo` sorts below this.
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
                .map(|(id, name)| {
                    Ok(User {
                        id: UserId::new(id),
                        username: stored_username(name)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError> {
        let id = id.as_str().to_owned();
        self.write(move |conn| {
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
impl MessageStore for SqliteStore {
    async fn ping(&self) -> Result<(), PortError> {
        // Both paths: a store whose writer is gone cannot take messages.
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?))
            .await?;
        self.write(|conn| Ok::<_, PortError>(conn.batch_execute("SELECT 1")?))
            .await
    }

    async fn direct_conversation(
        &self,
        a: &UserId,
        b: &UserId,
        now: Timestamp,
    ) -> Result<ConversationId, PortError> {
        let key = direct_key(a, b);
        if let Some(id) = cached(&self.inner.directs, &key) {
            return Ok(id);
        }
        let find = |conn: &mut SqliteConnection, key: &str| {
            conversations::table
                .filter(conversations::direct_key.eq(key))
                .select(conversations::id)
                .first::<String>(conn)
                .optional()
        };
        // Almost always it exists already: look without taking the write lock.
        let k = key.clone();
        if let Some(id) = self.read(move |conn| Ok(find(conn, &k)?)).await? {
            let id = ConversationId::new(id);
            remember(&self.inner.directs, key, id.clone());
            return Ok(id);
        }
        let (a, b) = (a.as_str().to_owned(), b.as_str().to_owned());
        let cache_key = key.clone();
        let id = self
            .write(move |conn| {
                if let Some(id) = find(conn, &key)? {
                    return Ok(ConversationId::new(id));
                }
                let id = uuid::Uuid::now_v7().to_string();
                diesel::insert_into(conversations::table)
                    .values((
                        conversations::id.eq(&id),
                        conversations::kind.eq("direct"),
                        conversations::direct_key.eq(&key),
                        conversations::created_by.eq(&a),
                        conversations::created_at.eq(now.millis()),
                        conversations::last_activity.eq(now.millis()),
                    ))
                    .execute(conn)?;
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
        let (conv, user) = (conversation.as_str().to_owned(), user.as_str().to_owned());
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
        let conv = conversation.as_str().to_owned();
        self.read(move |conn| Ok(member_ids(conn, &conv)?)).await
    }

    async fn append(&self, new: NewMessage) -> Result<AppendOutcome, AppendError> {
        self.inner
            .writer
            .write_unguarded(refused, move |w| append(w, new))
            .await
    }

    async fn append_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        let n = messages.len();
        // No savepoint, not even one per message: each would copy every
        // page the batch has already changed into its journal, the largest
        // cost of a big batch. A refused message has written nothing; a
        // database error undoes the whole transaction.
        let all = self
            .inner
            .writer
            .write_unguarded(refused, move |w| {
                let mut results = Vec::with_capacity(n);
                for new in messages {
                    match append(w, new) {
                        Err(e) if !refused(&e) => return Err(e),
                        answer => results.push(answer),
                    }
                }
                Ok(results)
            })
            .await;
        match all {
            Ok(results) => results,
            // Nothing committed: every message fails alike.
            Err(e) => {
                let why = e.to_string();
                (0..n)
                    .map(|_| Err(AppendError::Unknown(PortError(anyhow!("{why}")))))
                    .collect()
            }
        }
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError> {
        let conv = conversation.as_str().to_owned();
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
        let user = user.as_str().to_owned();
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
        let (conv, user) = (conversation.as_str().to_owned(), user.as_str().to_owned());
        let to = to_db_seq(to);
        self.write(move |conn| {
            let moved = diesel::update(members::table.find((&conv, &user)))
                .filter(members::last_read_seq.lt(to))
                .set(members::last_read_seq.eq(to))
                .execute(conn)?;
            Ok::<_, PortError>(moved > 0)
        })
        .await
    }

    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = user.as_str().to_owned();
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
            conversations::name.eq(name.as_str().to_owned()),
            conversations::name_key.eq(name_key(name.as_str())),
            conversations::visibility.eq(match visibility {
                Visibility::Public => "public",
                Visibility::Private => "private",
            }),
            conversations::created_by.eq(creator.as_str().to_owned()),
            conversations::created_at.eq(now.millis()),
            conversations::last_activity.eq(now.millis()),
        );
        let creator = creator.as_str().to_owned();
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
        let (conv, user) = (conversation.as_str().to_owned(), user.as_str().to_owned());
        self.write_live(move |w| {
            let last_seq = conversations::table
                .find(&conv)
                .select(conversations::last_seq)
                .first::<i64>(&mut w.conn)?;
            let added = add_member(&mut w.conn, &conv, &user, last_seq, now.millis())?;
            w.forget(&conv);
            Ok::<_, PortError>(added)
        })
        .await
    }

    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, PortError> {
        let (conv, user) = (conversation.as_str().to_owned(), user.as_str().to_owned());
        self.write_live(move |w| {
            let conn = &mut w.conn;
            let removed = diesel::delete(members::table.find((&conv, &user))).execute(conn)?;
            if removed > 0 {
                diesel::update(conversations::table.find(&conv))
                    .set(conversations::member_count.eq(conversations::member_count - 1))
                    .execute(conn)?;
            }
            w.forget(&conv);
            Ok::<_, PortError>(removed > 0)
        })
        .await
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError> {
        let (conv, viewer) = (conversation.as_str().to_owned(), viewer.as_str().to_owned());
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
        let viewer = viewer.as_str().to_owned();
        let lo = name_key(prefix);
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
        let (conv, id) = (conversation.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| message_by_id(conn, &conv, &id)).await
    }

    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (conversation.as_str().to_owned(), id.as_str().to_owned());
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
                        messages::body.eq(body.as_str()),
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
#[path = "sqlite_tests.rs"]
mod tests;
