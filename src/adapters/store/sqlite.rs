//! `UserStore` and `MessageStore` on an embedded SQLite database (diesel).
//!
//! SQLite allows one writer at a time, so writes go through one dedicated
//! connection on its own thread, which commits every write waiting at the
//! time in one transaction (see `group_commit`); reads use a small pool on
//! tokio's blocking pool, and WAL lets them run alongside the writer.
//! Nothing here blocks the async workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::common::{CACHE_LIMIT, all_failed, cached, cached_user, remember, seq, to_db_seq};
use super::group_commit::{Batch, GroupCommit, WriterState};
use super::readers::Readers;
use super::schema::{blocks, conversation_keys, conversations, members, user_keys};
use super::statements::{BumpSeq, InsertMessage};
use crate::adapters::metrics::StoreMetrics;
use crate::adapters::private;
use crate::domain::blocking;
use crate::domain::conversation::{direct_key, name_key};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, MessageChange, NewMessage};
use crate::domain::ports::{
    Access, AppendError, BlockStore, CreateUserError, MessageStore, UserStore,
};
use crate::domain::user::PasswordHash;
use crate::domain::{
    ClientMsgId, ConversationId, ConversationSummary, HistoryPage, HistoryQuery, Message,
    MessageId, RoomName, Timestamp, User, UserId, Username, Visibility,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Readers in the pool; SQLite reads are fast, a few suffice on small machines.
const READERS: usize = 4;

// What the shared queries (`queries.rs`) need to know of this backend.
type Db = SqliteConnection;
/// The rowid grows with every insert: join order, even within one
/// millisecond, and a member who rejoins goes to the back.
const JOIN_ORDER: &str = "members.rowid";
/// The same for blocks: the order they were made in.
const BLOCK_ORDER: &str = "blocks.rowid";
/// Stays well below SQLite's limit on bound parameters.
const IDS_PER_QUERY: usize = 500;

#[path = "queries.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend, against its connection type"
)]
mod queries;

/// Both storage ports on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: GroupCommit<Writer>,
    readers: Readers,
    // Users and direct conversations never change once created, so the hot
    // path (every send, every handshake) need not ask the database again.
    /// Names by id: a user's id is the key, not kept twice.
    users: RwLock<HashMap<UserId, Username>>,
    directs: RwLock<HashMap<String, ConversationId>>,
}

/// The writer thread's connection, and what it keeps in memory of the
/// conversations being written to: their last seq and their members, which
/// every append needs and which change only through this very thread.
struct Writer {
    conn: SqliteConnection,
    conversations: HashMap<String, Live>,
    /// Each conversation's last seq and activity time that appends of this
    /// batch moved and the table does not show yet: written once per
    /// conversation by `settle`, not once per message.
    unsaved: HashMap<String, (i64, i64)>,
    /// SQLite's count of commits by other connections, when last looked.
    data_version: i64,
    /// Dropped with the writer, which stops the checkpointer thread.
    checkpointer: Checkpointer,
    /// Where commits and WAL restarts are counted.
    metrics: StoreMetrics,
    /// When the WAL must next be emptied (see [`scrub`]).
    scrub: Scrub,
}

/// When the text an edit or a delete replaced must be gone from the files.
struct Scrub {
    /// Longest time it may stay.
    within: std::time::Duration,
    /// The deadline of the oldest change not yet scrubbed.
    due: Option<std::time::Instant>,
}

/// The writer's side of the checkpointer thread (see `start_checkpointer`):
/// when to ask it for a pass, and whether it asked for the WAL to start over.
struct Checkpointer {
    /// Raised by the thread: the WAL is long.
    wal_long: Arc<AtomicBool>,
    /// Asks the thread for a pass.
    nudge: SyncSender<()>,
    /// Writes committed since the thread was last asked for a pass.
    unchecked: usize,
    /// Commits since then.
    commits: usize,
    /// When it was last asked.
    asked: std::time::Instant,
}

impl Checkpointer {
    fn new(wal_long: Arc<AtomicBool>, nudge: SyncSender<()>) -> Self {
        Self {
            wal_long,
            nudge,
            unchecked: 0,
            commits: 0,
            asked: std::time::Instant::now(),
        }
    }

    /// After a batch of `writes` on `conn`: copies a long WAL's last frames
    /// back if the thread asked for it, so that the next batch starts the
    /// WAL over (returns whether it did), and asks for a pass when it is
    /// time.
    fn after_batch(&mut self, conn: &mut SqliteConnection, writes: usize) -> bool {
        let restarted = self.wal_long.swap(false, Ordering::Relaxed)
            && checkpoint(conn)
                .inspect_err(|e| tracing::warn!(error = %e, "WAL checkpoint failed"))
                .is_ok();
        self.unchecked += writes;
        self.commits += 1;
        if self.unchecked >= PASS_AFTER_WRITES && self.commits >= PASS_AFTER_COMMITS
            || self.asked.elapsed() >= PASS_AT_LEAST_EVERY
        {
            // Full means a nudge is already waiting: nothing is lost.
            let _ = self.nudge.try_send(());
            self.unchecked = 0;
            self.commits = 0;
            self.asked = std::time::Instant::now();
        }
        restarted
    }
}

/// A conversation as the writer knows it.
struct Live {
    last_seq: i64,
    /// The conversation's key in `message_rows`.
    key: i64,
    /// Sorted, for a binary search on every append.
    members: Vec<UserId>,
    /// Each member's key in `message_rows`, in the order of `members`.
    member_keys: Vec<i64>,
    /// A direct conversation (rather than a room).
    direct: bool,
    /// In a direct conversation, the members the other one blocks; sorted.
    /// A block or unblock makes the writer forget the conversation, so
    /// this is never stale and the check costs no query per append.
    blocked: Vec<UserId>,
}

impl Writer {
    /// The writer on `conn`, working with `checkpointer`.
    fn new(
        conn: SqliteConnection,
        checkpointer: Checkpointer,
        metrics: StoreMetrics,
        scrub_within: std::time::Duration,
    ) -> Self {
        Self {
            conn,
            conversations: HashMap::new(),
            unsaved: HashMap::new(),
            data_version: 0,
            checkpointer,
            metrics,
            scrub: Scrub {
                within: scrub_within,
                due: None,
            },
        }
    }

    /// Text was replaced: the files must lose it by the deadline.
    fn text_replaced(&mut self) {
        let within = self.scrub.within;
        self.scrub
            .due
            .get_or_insert_with(|| std::time::Instant::now() + within);
    }

    /// The conversation's live state, loaded on first use; `None` if it
    /// does not exist.
    fn live(&mut self, conversation: &str) -> QueryResult<Option<&mut Live>> {
        if !self.conversations.contains_key(conversation) {
            let Some((stored_seq, key, kind)) = conversations::table
                .inner_join(
                    conversation_keys::table.on(conversation_keys::id.eq(conversations::id)),
                )
                .filter(conversations::id.eq(conversation))
                .select((
                    conversations::last_seq,
                    conversation_keys::key,
                    conversations::kind,
                ))
                .first::<(i64, i64, String)>(&mut self.conn)
                .optional()?
            else {
                return Ok(None);
            };
            let mut members = members::table
                .inner_join(user_keys::table.on(user_keys::id.eq(members::user_id)))
                .filter(members::conversation_id.eq(conversation))
                .select((members::user_id, user_keys::key))
                .load::<(String, i64)>(&mut self.conn)?;
            members.sort_unstable();
            let (members, member_keys): (Vec<UserId>, _) = members
                .into_iter()
                .map(|(id, key)| (UserId::new(id), key))
                .unzip();
            let direct = kind == "direct";
            let mut blocked = Vec::new();
            if direct {
                let ids: Vec<String> = members.iter().map(|m| m.as_str().to_owned()).collect();
                blocked = blocks::table
                    .filter(blocks::blocker.eq_any(&ids))
                    .filter(blocks::blocked.eq_any(&ids))
                    .select(blocks::blocked)
                    .load::<String>(&mut self.conn)?
                    .into_iter()
                    .map(UserId::new)
                    .collect();
                blocked.sort_unstable();
            }
            if self.conversations.len() >= CACHE_LIMIT {
                self.conversations.clear();
            }
            // Forgotten in the middle of a batch, it may be ahead of the table.
            let last_seq = self
                .unsaved
                .get(conversation)
                .map_or(stored_seq, |&(seq, _)| seq);
            let live = Live {
                last_seq,
                key,
                members,
                member_keys,
                direct,
                blocked,
            };
            self.conversations.insert(conversation.to_owned(), live);
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

    fn settle(&mut self) -> QueryResult<()> {
        for (conversation, (seq, at)) in self.unsaved.drain() {
            BumpSeq {
                conversation: &conversation,
                seq,
                at,
            }
            .execute(&mut self.conn)?;
        }
        Ok(())
    }

    fn rolled_back(&mut self) {
        self.conversations.clear();
        // A write's savepoint is undone after a `settle` (nothing is left
        // then); a batch, with whatever its appends left.
        self.unsaved.clear();
    }

    fn between_batches(&mut self, batch: Batch) {
        if let Some(took) = batch.commit {
            self.metrics.commit_seconds.observe(took.as_secs_f64());
            self.metrics.batch_writes.observe(batch.writes as f64);
        }
        if self.checkpointer.after_batch(&mut self.conn, batch.writes) {
            self.metrics.wal_restarts.inc();
        }
    }

    fn upkeep_due(&self) -> Option<std::time::Instant> {
        self.scrub.due
    }

    fn upkeep(&mut self) {
        let start = std::time::Instant::now();
        match scrub(&mut self.conn) {
            Ok(true) => {
                self.scrub.due = None;
                tracing::debug!(took = ?start.elapsed(), "WAL emptied: replaced text scrubbed");
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "emptying the WAL failed; trying again");
                }
                // Readers or a checkpoint pass held on past the busy timeout.
                self.scrub.due = Some(std::time::Instant::now() + SCRUB_RETRY);
            }
        }
    }
}

/// Sets SQLite's process-wide options, which it takes only before its
/// first use (and then refuses with `SQLITE_MISUSE`: a process whose first
/// SQLite connection was not a store's keeps SQLite's defaults, which are
/// slower, not less correct). Multi-thread rather than serialized: each
/// connection here lives on one thread at a time (diesel's connections are
/// not `Sync`), so the lock SQLite takes around every call on a connection
/// guards nothing. No memory statistics: SQLite would otherwise take a
/// process-wide lock on every one of its allocations to count it.
/// Together, 4% of the writer thread's samples. Page caches that skip
/// the truncations that drop nothing (`super::pcache`). Tests that open
/// SQLite connections of their own call this first.
pub(super) fn configure_sqlite() {
    use libsqlite3_sys as ffi;
    use std::os::raw::c_int;

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the options are documented to take these arguments, and
        // are called before SQLite is initialized or refused with an error.
        let refused = unsafe {
            [
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
                super::pcache::install(),
            ]
        }
        .iter()
        .any(|&rc| rc != ffi::SQLITE_OK);
        if refused {
            tracing::debug!("SQLite was in use before the store: its defaults stay");
        }
    });
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

/// Writes after which the writer asks the checkpointer for a pass, which
/// then makes at most one per `PASS_GAP`: the fewer pages a pass writes to
/// the database file at once, the less a commit's fsync of the WAL waits
/// behind them on the disk (at 10,000 msgs/s, a pass every 100 ms made
/// delivery p99 16-20 ms; every few ms, 7-15 ms). Counted in writes, so
/// that a quiet server does not pay for passes that copy a page or two:
/// after 64 rather than 16, a pass costs 12% less CPU per message at
/// 2,000 msgs/s for the same tail at 10,000.
const PASS_AFTER_WRITES: usize = 64;

/// Nor before this many commits: a pass copies the last version of each
/// page, and under heavy load each commit carries hundreds of writes and
/// rewrites many of the index pages the commits just before it wrote
/// (over 8 commits of the closed loop, half the frames are pages written
/// again), so a pass after each commit copied nearly every frame. 16
/// rather than 8 took another fifth off the checkpointer's CPU there.
/// Where commits are small (the open loop: 5-8 writes each at 10,000
/// msgs/s), 64 writes are about that many commits anyway.
const PASS_AFTER_COMMITS: usize = 16;

/// The checkpointer's rest after a pass.
const PASS_GAP: std::time::Duration = std::time::Duration::from_millis(3);

/// While writes go on, a pass at least this often, however few they are.
const PASS_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A WAL this long (in 4 KiB frames: 16 MiB) is restarted from its
/// beginning as soon as it can be. Each restart costs the writer a short
/// pause (see `start_checkpointer`), so not much more often than that.
const WAL_RESTART_FRAMES: i64 = 4096;

/// Runs one PASSIVE checkpoint, which copies what no reader still needs
/// and never blocks the writer; returns the WAL's length in frames.
fn checkpoint(conn: &mut SqliteConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Pass {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        log: i64,
    }
    Ok(diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
        .get_result::<Pass>(conn)?
        .log)
}

/// How soon an emptying of the WAL that could not finish is tried again.
const SCRUB_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies every frame of the WAL back and truncates it to nothing
/// (`wal_checkpoint(TRUNCATE)`): the text an edit or a delete replaced
/// then lives in no file. The database's own pages do not keep it, since
/// `secure_delete` zeroes what a change frees; the WAL does, in the frames
/// written before the change and, as SQLite reuses the file from its
/// start, in whatever lies past the frames written since. Waits, as long
/// as the busy timeout, for readers still on older frames and for a pass
/// of the checkpointer; returns whether it finished.
fn scrub(conn: &mut SqliteConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Outcome {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        busy: i64,
    }
    Ok(diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
        .get_result::<Outcome>(conn)?
        .busy
        == 0)
}

/// Starts the thread that checkpoints the WAL on `conn`, so that commits
/// never wait for it. It runs a pass when the writer asks through the
/// returned `Checkpointer` (see `PASS_AFTER_WRITES`), none while the server
/// is idle, and stops when that is dropped.
///
/// A checkpoint alone never shortens the WAL: SQLite starts writing at its
/// beginning again only when a write finds every frame copied back, which
/// under sustained writes never happens, since the writer appends while the
/// checkpointer copies (a 10 s benchmark grew it to 1.8 GB, and the kernel
/// zeroed every new page of it: a quarter of the server's CPU). So when
/// the WAL is long, the checkpointer raises `wal_long`, and the writer,
/// between two batches, copies back the few frames added since: the next
/// batch then restarts the WAL. Until it has, the checkpointer makes no
/// pass, which would hold the checkpoint lock and turn the writer's copy
/// into a no-op.
fn start_checkpointer(
    mut conn: SqliteConnection,
    metrics: &StoreMetrics,
) -> std::io::Result<Checkpointer> {
    let (nudge, nudges) = std::sync::mpsc::sync_channel::<()>(1);
    let wal_long = Arc::new(AtomicBool::new(false));
    let raised = wal_long.clone();
    let passes = metrics.checkpoint_passes.clone();
    std::thread::Builder::new()
        .name("confab-sqlite-checkpoint".into())
        .spawn(move || {
            while nudges.recv().is_ok() {
                if !raised.load(Ordering::Relaxed) {
                    checkpoint_pass(&mut conn, &raised);
                    passes.inc();
                }
                std::thread::sleep(PASS_GAP);
            }
        })?;
    Ok(Checkpointer::new(wal_long, nudge))
}

/// One pass of the checkpointer: copies back what it can, and raises
/// `wal_long` when the WAL is long enough to be restarted. The writer's
/// share is what was written since this pass began, which it copies while
/// no write can go on: a second pass first takes what was written during
/// the first (the bulk of a long WAL), so that share stays small.
fn checkpoint_pass(conn: &mut SqliteConnection, wal_long: &AtomicBool) {
    let long = checkpoint(conn).and_then(|frames| {
        let long = frames >= WAL_RESTART_FRAMES;
        if long {
            checkpoint(conn)?;
        }
        Ok(long)
    });
    match long {
        Ok(true) => wal_long.store(true, Ordering::Relaxed),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
    }
}

#[derive(Debug)]
struct Pragmas {
    reader: bool,
}

impl Pragmas {
    /// A new connection to the database at `path`, with these pragmas.
    fn open(&self, path: &Path) -> anyhow::Result<SqliteConnection> {
        let url = path
            .to_str()
            .ok_or_else(|| anyhow!("the database path is not valid UTF-8"))?;
        let mut conn = SqliteConnection::establish(url)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        self.apply(&mut conn)?;
        Ok(conn)
    }

    fn apply(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        // busy_timeout first: the other pragmas may need a lock.
        // temp_store: the statement journals of savepoints stay in memory
        // instead of being temporary files created and unlinked per batch.
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )?;
        if self.reader {
            // cache_size (256 KiB, against SQLite's 2 MiB): in WAL mode a
            // connection empties its page cache when it starts reading after
            // any commit, so on a server that writes, a reader's cache serves
            // one query at a time. Larger, four of them filled up with the
            // pages of every user signed in (about 8 MiB at 19,000 sessions).
            conn.batch_execute("PRAGMA query_only = ON; PRAGMA cache_size = -256;")
        } else {
            // FULL: a commit is on disk before the ack, even across power
            // loss; it is also the sync that hands the gathered WAL writes
            // to the system before other connections see the commit
            // (`gather`), which a lower level would not make.
            // secure_delete: a deleted message's text is overwritten, not
            // just unlinked (and the WAL that still holds it is emptied
            // within `sqlite_scrub_secs`, see `scrub`).
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

/// Creates the database file for its user alone before SQLite does (which
/// would make it 0644, and its WAL and shared-memory files after it), or
/// closes an existing one to others.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the database {}", path.display()))?;
    private::restrict(path).with_context(|| format!("cannot make {} private", path.display()))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date; its writer reports to `metrics`, and empties the
    /// WAL within `scrub_within` of an edit or a delete. The folder it
    /// creates and the files are its user's alone (`private`).
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub fn open(
        path: &Path,
        metrics: StoreMetrics,
        scrub_within: std::time::Duration,
    ) -> anyhow::Result<Self> {
        configure_sqlite();
        stable_query_plans();
        super::gather::install();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private::create_dir(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        create_private(path)?;
        let mut writer = Pragmas { reader: false }.open(path)?;
        writer
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow!("database migration failed: {e}"))?;
        let readers = (0..READERS)
            .map(|_| Pragmas { reader: true }.open(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let checkpointer = start_checkpointer(Pragmas { reader: false }.open(path)?, &metrics)
            .context("cannot start the database checkpointer")?;
        // SQLite made them with the database's mode; older ones may be open.
        for suffix in ["-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            private::restrict(Path::new(&file))
                .with_context(|| format!("cannot make {} private", Path::new(&file).display()))?;
        }
        let writer = Writer::new(writer, checkpointer, metrics, scrub_within);
        Ok(Self {
            inner: Arc::new(Inner {
                writer: GroupCommit::start(writer).context("cannot start the database writer")?,
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
    let Ok(member) = live.members.binary_search(&new.sender.id) else {
        return Err(AppendError::NotMember);
    };
    let blocked = live.blocked.binary_search(&new.sender.id).is_ok();
    if !blocking::may_send(live.direct, blocked) {
        return Err(AppendError::Blocked);
    }
    let (conversation, sender_key) = (live.key, live.member_keys[member]);
    let seq = live.last_seq + 1;
    let conn = &mut w.conn;
    let at = new.created_at.millis();
    let id = uuid::Uuid::now_v7().to_string();
    let cmid = new.client_msg_id.as_ref().map(ClientMsgId::as_str);
    // Insert first: a retried clientMsgId is rare, and the unique index
    // finds it while inserting, so the common case needs no lookup.
    let inserted = InsertMessage {
        id: &id,
        conversation,
        seq,
        sender: sender_key,
        body: new.body.as_str(),
        client_msg_id: cmid,
        at,
    }
    .execute(conn);
    match (inserted, cmid) {
        (Ok(_), _) => {}
        (Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)), Some(cmid)) => {
            let original = queries::original(conn, conv, sender, cmid)
                .map_err(|e| AppendError::Unknown(PortError(e)))?
                .ok_or(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    info,
                ))?;
            return Ok(AppendOutcome::Duplicate(original));
        }
        (Err(e), _) => return Err(e.into()),
    }
    // The conversation's row once per batch, in `settle`.
    match w.unsaved.get_mut(conv) {
        Some(unsaved) => *unsaved = (seq, at),
        None => {
            w.unsaved.insert(conv.to_owned(), (seq, at));
        }
    }
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
        let (row, hash) = (user.clone(), hash.clone());
        self.write(move |conn| {
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
        let id = id.as_str().to_owned();
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
        let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        self.read(move |conn| queries::users_last_seen(conn, &ids))
            .await
    }

    async fn users_by_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<User>, PortError> {
        let key = prefix.to_ascii_lowercase();
        self.read(move |conn| queries::users_by_prefix(conn, &key, limit))
            .await
    }

    async fn set_last_seen(&self, id: &UserId, at: Timestamp) -> Result<(), PortError> {
        let id = id.as_str().to_owned();
        self.write(move |conn| Ok::<_, PortError>(queries::set_last_seen(conn, &id, at)?))
            .await
    }
}

// ---------------------------------------------------------------- blocks

/// Makes the writer load the pair's direct conversation again, with the
/// block as it now stands.
fn forget_direct(w: &mut Writer, a: &str, b: &str) -> QueryResult<()> {
    let key = direct_key(&UserId::new(a), &UserId::new(b));
    if let Some(id) = queries::direct_by_key(&mut w.conn, &key)? {
        w.forget(&id);
    }
    Ok(())
}

#[async_trait]
impl BlockStore for SqliteStore {
    async fn block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now: Timestamp,
    ) -> Result<bool, PortError> {
        let (blocker, blocked) = (blocker.as_str().to_owned(), blocked.as_str().to_owned());
        self.write_live(move |w| {
            let added = diesel::insert_or_ignore_into(blocks::table)
                .values((
                    blocks::blocker.eq(&blocker),
                    blocks::blocked.eq(&blocked),
                    blocks::created_at.eq(now.millis()),
                ))
                .execute(&mut w.conn)?;
            forget_direct(w, &blocker, &blocked)?;
            Ok::<_, PortError>(added > 0)
        })
        .await
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, PortError> {
        let (blocker, blocked) = (blocker.as_str().to_owned(), blocked.as_str().to_owned());
        self.write_live(move |w| {
            let removed = queries::delete_block(&mut w.conn, &blocker, &blocked)?;
            forget_direct(w, &blocker, &blocked)?;
            Ok::<_, PortError>(removed)
        })
        .await
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<User>, PortError> {
        let blocker = blocker.as_str().to_owned();
        self.read(move |conn| queries::blocked_by(conn, &blocker))
            .await
    }

    async fn blockers_of(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| Ok(queries::blockers_of(conn, &user)?))
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
        // Almost always it exists already: look without taking the write lock.
        let k = key.clone();
        if let Some(id) = self
            .read(move |conn| Ok(queries::direct_by_key(conn, &k)?))
            .await?
        {
            let id = ConversationId::new(id);
            remember(&self.inner.directs, key, id.clone());
            return Ok(id);
        }
        let (a, b) = (a.as_str().to_owned(), b.as_str().to_owned());
        let cache_key = key.clone();
        let id = self
            .write(move |conn| {
                if let Some(id) = queries::direct_by_key(conn, &key)? {
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
        self.read(move |conn| queries::access(conn, &conv, &user))
            .await
    }

    async fn member_ids(&self, conversation: &ConversationId) -> Result<Vec<UserId>, PortError> {
        let conv = conversation.as_str().to_owned();
        self.read(move |conn| Ok(queries::member_ids(conn, &conv)?))
            .await
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
        self.inner
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
            .await
            .unwrap_or_else(|e| all_failed(n, &e))
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, PortError> {
        let conv = conversation.as_str().to_owned();
        self.read(move |conn| queries::history(conn, &conv, query))
            .await
    }

    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationSummary>, PortError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| queries::conversations_of(conn, &user))
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
            Ok::<_, PortError>(queries::advance_read_marker(conn, &conv, &user, to)?)
        })
        .await
    }

    async fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, PortError> {
        let user = user.as_str().to_owned();
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
        let (name, key) = (name.as_str().to_owned(), name_key(name.as_str()));
        let creator = creator.as_str().to_owned();
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
            let removed = queries::remove_member(&mut w.conn, &conv, &user)?;
            w.forget(&conv);
            Ok::<_, PortError>(removed)
        })
        .await
    }

    async fn summary(
        &self,
        conversation: &ConversationId,
        viewer: &UserId,
    ) -> Result<Option<ConversationSummary>, PortError> {
        let (conv, viewer) = (conversation.as_str().to_owned(), viewer.as_str().to_owned());
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
        let (viewer, key) = (viewer.as_str().to_owned(), name_key(prefix));
        self.read(move |conn| queries::list_rooms(conn, &viewer, &key, after.as_deref(), limit))
            .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (conversation.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |conn| queries::message_by_id(conn, &conv, &id))
            .await
    }

    async fn update_message(
        &self,
        conversation: &ConversationId,
        id: &MessageId,
        change: MessageChange,
    ) -> Result<Option<Message>, PortError> {
        let (conv, id) = (conversation.as_str().to_owned(), id.as_str().to_owned());
        let edit = match change {
            MessageChange::Edit { body, at } => Some((body.into_string(), at)),
            MessageChange::Delete => None,
        };
        self.write_live(move |w| {
            let updated = queries::update_message(&mut w.conn, &conv, &id, edit).map_err(PortError);
            w.text_replaced();
            updated
        })
        .await
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
