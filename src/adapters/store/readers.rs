//! A few threads, each with its own read-only SQLite connection, serving
//! reads from a shared queue. Dedicated threads instead of the async
//! runtime's blocking pool: a burst of reads waits in the queue rather than
//! growing hundreds of threads that fight over a handful of connections.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::anyhow;
use diesel::sqlite::SqliteConnection;
use tokio::sync::oneshot;

use crate::domain::error::PortError;

type Job = Box<dyn FnOnce(&mut SqliteConnection) + Send>;

/// The handle to the reader threads; they stop when it is dropped.
pub struct Readers {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Readers {
    /// Starts one thread per connection.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(connections: Vec<SqliteConnection>) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for (i, mut conn) in connections.into_iter().enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("confab-sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        job(&mut conn);
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on the next free reader and returns its result.
    pub async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // A panicking read must not take its thread down with it.
            let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(anyhow!("a database read panicked")));
            let _ = reply.send(result);
        });
        let stopped = || PortError(anyhow!("the database readers have stopped"));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(PortError)
    }
}
