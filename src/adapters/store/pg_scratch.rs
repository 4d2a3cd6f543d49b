//! Scratch PostgreSQL schemas for tests: each test works in a schema of its
//! own, dropped when the test ends, pass or fail. Compiled into the
//! library's tests and, by path, into tests/e2e.
//!
//! The server is `CONFAB_TEST_POSTGRES_URL`, by default the local one. When
//! it does not answer, the tests that need it fail under `CI=true` and are
//! skipped, with a message on standard error, everywhere else.

use std::io::Write;
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;

/// Schemas left by a run that was killed are dropped after this long.
const STALE_SECS: u64 = 3_600;

/// An empty schema on the test server, dropped with this value.
pub struct ScratchSchema {
    server: String,
    name: String,
}

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("CONFAB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl ScratchSchema {
    /// Creates a schema, or returns `None` when the server does not answer
    /// and this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when the server does not answer, and when the schema
    /// cannot be created.
    pub fn create() -> Option<Self> {
        let server = server_url();
        let mut conn = match PgConnection::establish(&server) {
            Ok(conn) => conn,
            Err(e) => {
                unavailable(&server, &e);
                return None;
            }
        };
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_stale(&mut conn));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("confab_test_{now}_{:016x}", rand::random::<u64>());
        conn.batch_execute(&format!("CREATE SCHEMA {name}"))
            .expect("a scratch schema");
        Some(Self { server, name })
    }

    /// The database URL for confab: the server's, with this schema first
    /// (and only) on the search path.
    pub fn url(&self) -> String {
        let glue = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{glue}options=-csearch_path%3D{}", self.server, self.name)
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        // Best effort: a schema left behind is swept by a later run.
        if let Ok(mut conn) = PgConnection::establish(&self.server) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn unavailable(server: &str, error: &dyn std::fmt::Display) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true needs PostgreSQL, and {server} does not answer: {error}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // eprintln! from tests that pass, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipping: PostgreSQL not reachable at {server} ({error}); \
             its tests pass without running (CI=true makes this a failure)"
        );
    });
}

/// Drops the schemas of earlier runs that were killed before cleaning up.
fn sweep_stale(conn: &mut PgConnection) {
    let _ = conn.batch_execute(&format!(
        "DO $$ DECLARE s text; BEGIN
           FOR s IN SELECT nspname FROM pg_namespace
                    WHERE nspname ~ '^confab_test_[0-9]+_'
                      AND split_part(nspname, '_', 3)::bigint
                          < extract(epoch FROM now()) - {STALE_SECS}
           LOOP EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', s); END LOOP;
         END $$;"
    ));
}
