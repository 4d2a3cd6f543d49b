//! Group commit for SQLite: one thread owns the write connection and runs
//! every write that is waiting in ONE transaction, so that a burst of
//! concurrent sends costs one fsync instead of one each. Each write still
//! runs in its own savepoint, so a failing write undoes only itself, and
//! each caller hears back only after the transaction that holds its write
//! is committed (persistence before acknowledgement).

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
            // write alone and the batch goes on.
            let result = conn.transaction(work);
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
