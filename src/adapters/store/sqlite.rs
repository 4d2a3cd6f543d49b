//! The SQLite engine of the diesel store: `UserStore` and `MessageStore`
//! on an embedded database file.
//!
//! SQLite allows one writer at a time, so writes go through one dedicated
//! connection on its own thread, which commits every write waiting at the
//! time in one transaction (see `group_commit`), and appends there from
//! what it keeps in memory (`writer`); reads use a few reader threads of
//! their own (`readers`), and WAL lets them run alongside the writer, with
//! a checkpointer thread keeping the WAL short (`wal`). Nothing here blocks
//! the async workers.

mod setup;
mod wal;
mod writer;

use std::path::Path;

use anyhow::{Context, anyhow};
use diesel::connection::SimpleConnection;
use diesel::result::Error as DieselError;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::common::all_failed;
use super::engine::{DieselStore, Engine};
use super::group_commit::GroupCommit;
use super::queries::{Sql, shared_queries};
use super::readers::Readers;
use crate::adapters::metrics::StoreMetrics;
use crate::adapters::private;
use crate::domain::error::PortError;
use crate::domain::message::{AppendOutcome, NewMessage};
use crate::domain::ports::AppendError;
pub(super) use setup::configure_sqlite;
use setup::{Pragmas, create_private, stable_query_plans};
use wal::start_checkpointer;
use writer::{Writer, append, refused};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Readers in the pool; SQLite reads are fast, a few suffice on small machines.
const READERS: usize = 4;

/// Both storage ports on one SQLite file.
pub type SqliteStore = DieselStore<SqliteEngine>;

/// How the diesel store reaches an SQLite file: one writer thread, a few
/// reader threads.
pub struct SqliteEngine {
    writer: GroupCommit<Writer>,
    readers: Readers,
}

impl Sql for SqliteConnection {
    /// The rowid grows with every insert: join order, even within one
    /// millisecond, and a member who rejoins goes to the back.
    const JOIN_ORDER: &'static str = "members.rowid";
    /// The same for blocks: the order they were made in.
    const BLOCK_ORDER: &'static str = "blocks.rowid";
    /// Stays well below SQLite's limit on bound parameters.
    const IDS_PER_QUERY: usize = 500;
}

shared_queries!(SqliteConnection);

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
        Ok(Self::new(SqliteEngine {
            writer: GroupCommit::start(writer).context("cannot start the database writer")?,
            readers: Readers::start(readers).context("cannot start the database readers")?,
        }))
    }
}

impl Engine for SqliteEngine {
    type Conn = SqliteConnection;
    type Tx = Writer;

    fn text(s: String) -> String {
        s
    }

    async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
    {
        self.readers.read(work).await
    }

    /// Runs `work` in a transaction on the writer connection, shared with
    /// whatever other writes are waiting (group commit); returns once
    /// committed.
    async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    {
        self.writer.write(work).await
    }

    async fn write_one<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, E> + Send + 'static,
    {
        self.writer.write(|w| work(&mut w.conn)).await
    }

    async fn ping(&self) -> Result<(), PortError> {
        // Both paths: a store whose writer is gone cannot take messages.
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?))
            .await?;
        self.write_one(|conn| Ok::<_, PortError>(conn.batch_execute("SELECT 1")?))
            .await
    }

    async fn append(&self, new: NewMessage) -> Result<AppendOutcome, AppendError> {
        self.writer
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
        self.writer
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
}

#[cfg(test)]
mod tests;
