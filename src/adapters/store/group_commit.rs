//! Group commit for SQLite: one thread owns the write connection and runs
//! every write that is waiting in ONE transaction, so that a burst of
//! concurrent sends costs one fsync instead of one each. Each write still
//! runs in its own savepoint, so a failing write undoes only itself, and
//! each caller hears back only after the transaction that holds its write
//! is committed (persistence before acknowledgement).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use anyhow::anyhow;
use diesel::Connection;
use diesel::result::Error as DieselError;
use diesel::sqlite::SqliteConnection;
use tokio::sync::oneshot;

use crate::domain::error::PortError;

/// Most writes in one transaction; bounds how long the first one waits.
const MAX_BATCH: usize = 512;

/// What runs once the batch's transaction has ended: it receives whether
/// the commit succeeded.
type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// One write: runs inside the batch's transaction, returns its completion.
type Job = Box<dyn FnOnce(&mut SqliteConnection) -> Completion + Send>;

/// The handle to the writer thread.
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer thread on `conn`. It stops when the handle is dropped.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(conn: SqliteConnection) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || run(conn, &queue))?;
        Ok(Self { jobs })
    }

    /// Runs `work` as part of the next transaction and returns its result
    /// once that transaction is committed. Never blocks the caller's thread.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // A nested transaction is a savepoint: an error undoes this
            // write alone and the batch goes on. A panic becomes an error
            // too, so that it cannot take the writer thread down.
            let result = conn.transaction(|conn| {
                catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
                    Err(E::from(PortError(anyhow!("a database write panicked"))))
                })
            });
            Box::new(move |committed: Result<(), &str>| {
                let result = match committed {
                    Ok(()) => result,
                    Err(why) => Err(E::from(PortError(anyhow!("commit failed: {why}")))),
                };
                let _ = reply.send(result);
            })
        });
        let stopped = || E::from(PortError(anyhow!("the database writer has stopped")));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(mut conn: SqliteConnection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(batch.len());
        let committed = conn.immediate_transaction::<_, DieselError, _>(|conn| {
            for job in batch {
                completions.push(job(conn));
            }
            Ok(())
        });
        let committed = committed.as_ref().map(|_| ()).map_err(|e| e.to_string());
        for done in completions {
            done(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::RunQueryDsl;
    use diesel::connection::SimpleConnection;

    use super::*;

    fn writer() -> GroupCommit {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .unwrap();
        GroupCommit::start(conn).unwrap()
    }

    async fn insert(w: &GroupCommit, v: i64) -> Result<(), PortError> {
        w.write(move |conn| {
            diesel::sql_query(format!("INSERT INTO t (v) VALUES ({v})")).execute(conn)?;
            Ok::<_, PortError>(())
        })
        .await
    }

    async fn count(w: &GroupCommit) -> i64 {
        w.write(|conn| {
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let n: N = diesel::sql_query("SELECT COUNT(*) AS n FROM t").get_result(conn)?;
            Ok::<_, PortError>(n.n)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_writes_all_commit_and_a_failing_one_undoes_only_itself() {
        let w = std::sync::Arc::new(writer());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let w = w.clone();
                // 7 is written twice: exactly one of the two must fail.
                let v = if i == 199 { 7 } else { i };
                tokio::spawn(async move { insert(&w, v).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 199);
        assert_eq!(count(&w).await, 199);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panicking_write_is_an_error_and_the_writer_keeps_going() {
        let w = writer();
        let r: Result<(), PortError> = w
            .write(|_conn| -> Result<(), PortError> { panic!("boom") })
            .await;
        assert!(r.is_err());
        insert(&w, 1).await.unwrap();
        assert_eq!(count(&w).await, 1);
    }
}
