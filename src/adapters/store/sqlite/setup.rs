//! Opening SQLite as the store wants it: the process-wide options, the
//! pragmas of each kind of connection, and a file for its user alone.

use std::path::Path;

use anyhow::{Context, anyhow};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use crate::adapters::private;

/// Sets SQLite's process-wide options, which it takes only before its
/// first use (and then refuses with `SQLITE_MISUSE`: a process whose first
/// SQLite connection was not a store's keeps SQLite's defaults, which are
/// slower, not less correct). Multi-thread rather than serialized: each
/// connection here lives on one thread at a time (diesel's connections are
/// not `Sync`), so the lock SQLite takes around every call on a connection
/// guards nothing. No memory statistics: SQLite would otherwise take a
/// process-wide lock on every one of its allocations to count it.
/// Together, 4% of the writer thread's samples. Page caches that skip
/// the truncations that drop nothing (`store::pcache`). Tests that open
/// SQLite connections of their own call this first.
pub(in crate::adapters::store) fn configure_sqlite() {
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
                super::super::pcache::install(),
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
pub(super) fn stable_query_plans() {
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
/// The pragmas a new connection gets, by what it is for.
#[derive(Debug)]
pub(super) struct Pragmas {
    /// A reader (rather than the writer or the checkpointer).
    pub(super) reader: bool,
}

impl Pragmas {
    /// A new connection to the database at `path`, with these pragmas.
    pub(super) fn open(&self, path: &Path) -> anyhow::Result<SqliteConnection> {
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
pub(super) fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the database {}", path.display()))?;
    private::restrict(path).with_context(|| format!("cannot make {} private", path.display()))
}
