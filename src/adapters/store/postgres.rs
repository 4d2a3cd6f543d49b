//! The PostgreSQL engine of the diesel store: `UserStore` and
//! `MessageStore` on a database that several server processes may share.
//!
//! Every call runs on tokio's blocking pool with a connection from a small
//! pool; a semaphore as large as the pool makes a burst of calls wait as
//! tasks instead of as blocked threads. Nothing that orders writes lives in
//! this process: a conversation's `seq` comes from its row, locked by the
//! transaction that appends (`append`; docs/storage.md says why), so
//! another process on the same database sees and respects the same lock.

mod append;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool};
use diesel::result::Error as DieselError;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::sync::Semaphore;

use super::common::{all_failed, seq};
use super::engine::{DieselStore, Engine, Tx};
use super::queries::{Sql, shared_queries};
use super::schema::{conversations, members};
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, NewMessage};
use crate::domain::ports::AppendError;
use crate::domain::positions::{Position, SeqIndex};
use crate::domain::{ConversationId, UserId};
use append::{append, append_batch, lock_conversation};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Connections per process. Several processes share one server, whose
/// default limit is 100 connections.
const POOL_SIZE: u32 = 16;

/// How long opening the store, or a call, waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Both storage ports on one PostgreSQL database.
pub type PgStore = DieselStore<PgEngine>;

/// How the diesel store reaches PostgreSQL: a pool of connections, used
/// from tokio's blocking pool.
pub struct PgEngine {
    pool: Pool<Manager>,
    permits: Arc<Semaphore>,
}

impl Sql for PgConnection {
    /// An identity column numbers every insert: join order, even within
    /// one millisecond, and a member who rejoins goes to the back.
    const JOIN_ORDER: &'static str = "members.join_order";
    /// The same for blocks: the order they were made in.
    const BLOCK_ORDER: &'static str = "blocks.block_order";
    /// One array parameter however many ids: no limit to stay under.
    const IDS_PER_QUERY: usize = usize::MAX;
}

shared_queries!(PgConnection);

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
        Ok(Self::new(PgEngine {
            pool,
            permits: Arc::new(Semaphore::new(POOL_SIZE as usize)),
        }))
    }
}

impl PgEngine {
    /// Runs `work` with a pooled connection on the blocking pool.
    async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PortError> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        let stopped = || E::from(PortError(anyhow!("the database pool has stopped")));
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool
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

impl Engine for PgEngine {
    type Conn = PgConnection;
    type Tx = PgConnection;

    fn text(s: String) -> String {
        if s.contains('\0') { text(&s) } else { s }
    }

    async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> anyhow::Result<T> + Send + 'static,
    {
        self.run(move |conn| work(conn).map_err(PortError)).await
    }

    async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        self.run(move |conn| conn.transaction(work)).await
    }

    /// Without a transaction: one statement is atomic on its own.
    async fn write_one<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        self.run(work).await
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?)).await
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
}

impl Tx for PgConnection {
    type Conn = PgConnection;

    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    fn lock_conversation(&mut self, conversation: &str) -> QueryResult<Option<i64>> {
        lock_conversation(self, conversation)
    }
}

/// Cluster mode seeds and resyncs delivery cursors from here: one indexed
/// query for many users (members' primary key leads with the conversation,
/// so the user lookup uses `members_by_user`).
#[async_trait::async_trait]
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

#[cfg(test)]
mod tests;
