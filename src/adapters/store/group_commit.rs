//! Group commit for SQLite: one thread owns the write connection and runs
//! every write that is waiting in ONE transaction, so that a burst of
//! concurrent sends costs one fsync instead of one each. Each write still
//! runs in its own savepoint, so a failing write undoes only itself, and
//! each caller hears back only after the transaction that holds its write
//! is committed (persistence before acknowledgement).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use diesel::RunQueryDsl;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::result::Error as DieselError;
use diesel::sqlite::SqliteConnection;
use tokio::sync::oneshot;

use super::statements::{RELEASE, ROLLBACK, SAVEPOINT};
use crate::domain::error::PortError;

/// Most writes in one transaction; bounds how long the first one waits.
const MAX_BATCH: usize = 512;

/// How long after a commit the next batch keeps gathering writes that
/// arrive one by one. A commit costs its fsync whatever it carries: at
/// 10,000 msgs/s from 2,000 connections, commits of 2.3 writes became
/// commits of 8, and the server's CPU per message fell by 9-12%, for
/// 0.3-0.5 ms more of delivery latency at p50 (docs/performance-log.md,
/// "Commits gathered under load"). A write that finds the last commit
/// further back than this (a server under a few thousand commits a
/// second) goes at once.
const GATHER: Duration = Duration::from_micros(300);

/// What runs once the batch's transaction has ended: it receives whether
/// the commit succeeded.
type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// One write: runs inside the batch's transaction (or, given `None`, not at
/// all, because the batch is already lost) and returns its completion, and
/// whether it spoiled the batch.
type Job<S> = Box<dyn FnOnce(Option<&mut S>) -> (Completion, Spoiled) + Send>;
/// Set by a write that failed half-way without a savepoint: the whole
/// transaction must be rolled back. Holds why.
type Spoiled = Option<String>;

/// What the writer thread owns: the write connection, and whatever the
/// store keeps in memory alongside it (only this thread writes, so memory
/// kept here cannot disagree with the database but by a failed commit).
pub trait WriterState: Send + 'static {
    /// The write connection.
    fn conn(&mut self) -> &mut SqliteConnection;
    /// A batch's transaction has begun: no other connection can write
    /// until it ends, so this is the moment to notice what others wrote.
    fn began(&mut self) -> Result<(), DieselError> {
        Ok(())
    }
    /// Writes what unguarded writes left for later (see
    /// [`GroupCommit::write_unguarded`]): runs before every guarded write,
    /// so that it reads the database as those left it, and before the
    /// commit. A failure spoils the batch.
    fn settle(&mut self) -> Result<(), DieselError> {
        Ok(())
    }
    /// A write or a batch was undone: forget whatever was learned during it.
    fn rolled_back(&mut self);
    /// A batch has ended and its callers have heard: the moment for upkeep
    /// that must not run inside a transaction nor delay an answer.
    fn between_batches(&mut self, _batch: Batch) {}
    /// When [`Self::upkeep`] is due, whether or not writes come; `None`
    /// while there is nothing to do.
    fn upkeep_due(&self) -> Option<Instant> {
        None
    }
    /// Runs, outside any transaction, once `upkeep_due` has passed: after
    /// the batch that ends past it, or when it passes with no write
    /// waiting. Must move `upkeep_due` on, even when it fails.
    fn upkeep(&mut self) {}
}

impl WriterState for SqliteConnection {
    fn conn(&mut self) -> &mut SqliteConnection {
        self
    }

    fn rolled_back(&mut self) {}
}

/// What a batch was, for the upkeep after it.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Writes it held.
    pub writes: usize,
    /// How long its COMMIT took, if it was committed.
    pub commit: Option<Duration>,
}

/// The handle to the writer thread.
pub struct GroupCommit<S> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S: WriterState> GroupCommit<S> {
    /// Starts the writer thread, which owns `state` from now on.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(state: S) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job<S>>();
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || run(state, &queue))?;
        Ok(Self { jobs })
    }

    /// Runs `work` as part of the next transaction and returns its result
    /// once that transaction is committed. Never blocks the caller's thread.
    /// The write runs in a savepoint of its own: an error undoes it alone
    /// and the batch goes on.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        self.submit(|state| match state.settle() {
            Ok(()) => (savepoint(state, work), None),
            Err(e) => {
                let why = e.to_string();
                (Err(E::from(e)), Some(why))
            }
        })
        .await
    }

    /// Like [`Self::write`], without the savepoint, which costs a copy of
    /// every page the batch has already changed and this write changes
    /// again: for hot writes whose refusals write nothing. An error for
    /// which `refused` says no may have left the write half-done, so it
    /// undoes the whole transaction, and every write in it fails. Such a
    /// write may leave part of itself to [`WriterState::settle`].
    pub async fn write_unguarded<T, E, F>(&self, refused: fn(&E) -> bool, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        self.submit(move |state| {
            let result = guard_panics(state, work);
            let spoiled = match &result {
                Err(e) if !refused(e) => Some(e.to_string()),
                _ => None,
            };
            (result, spoiled)
        })
        .await
    }

    async fn submit<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + From<PortError> + Send + 'static,
        F: FnOnce(&mut S) -> (Result<T, E>, Spoiled) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            let (result, spoiled) = match state {
                Some(state) => work(state),
                None => (
                    Err(E::from(PortError(anyhow!("the batch was rolled back")))),
                    None,
                ),
            };
            let done: Completion = Box::new(move |committed: Result<(), &str>| {
                let result = match committed {
                    Ok(()) => result,
                    Err(why) => Err(E::from(PortError(anyhow!("commit failed: {why}")))),
                };
                let _ = reply.send(result);
            });
            (done, spoiled)
        });
        let stopped = || E::from(PortError(anyhow!("the database writer has stopped")));
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Runs `work`, turning a panic into an error so that it cannot take the
/// writer thread down.
fn guard_panics<S, T, E>(state: &mut S, work: impl FnOnce(&mut S) -> Result<T, E>) -> Result<T, E>
where
    E: From<PortError>,
{
    catch_unwind(AssertUnwindSafe(|| work(state)))
        .unwrap_or_else(|_| Err(E::from(PortError(anyhow!("a database write panicked")))))
}

/// Runs `work` in a savepoint on the state's connection: undone if it
/// fails. Savepoints nest, so a write may use them for parts of itself.
fn savepoint<S, T, E>(state: &mut S, work: impl FnOnce(&mut S) -> Result<T, E>) -> Result<T, E>
where
    S: WriterState,
    E: From<DieselError> + From<PortError>,
{
    SAVEPOINT.execute(state.conn())?;
    let result = guard_panics(state, work);
    if result.is_err() {
        // What the write remembered may be ahead of the database now.
        state.rolled_back();
        ROLLBACK.execute(state.conn())?;
    }
    RELEASE.execute(state.conn())?;
    result
}

/// Runs `work` in one `BEGIN IMMEDIATE` transaction and commits it, or
/// rolls it back when `work` says why it must be; returns how long the
/// COMMIT took.
fn in_transaction<S: WriterState>(
    state: &mut S,
    work: impl FnOnce(&mut S) -> Spoiled,
) -> Result<Duration, String> {
    type Tm = AnsiTransactionManager;
    Tm::begin_transaction_sql(state.conn(), "BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    if let Err(e) = state.began() {
        let _ = Tm::rollback_transaction(state.conn());
        return Err(e.to_string());
    }
    if let Some(why) = work(state) {
        let _ = Tm::rollback_transaction(state.conn());
        return Err(format!("rolled back: {why}"));
    }
    if let Err(e) = state.settle() {
        let _ = Tm::rollback_transaction(state.conn());
        return Err(format!("rolled back: {e}"));
    }
    let start = Instant::now();
    // On failure this also rolls back, so the next batch can begin.
    Tm::commit_transaction(state.conn()).map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

fn run<S: WriterState>(mut state: S, queue: &mpsc::Receiver<Job<S>>) {
    let mut last_commit = Instant::now();
    while let Some(first) = next_write(&mut state, queue) {
        let mut batch = vec![first];
        gather(queue, &mut batch, last_commit + GATHER);
        let writes = batch.len();
        let mut completions = Vec::with_capacity(writes);
        let committed = in_transaction(&mut state, |state| {
            let mut spoiled = None;
            for job in batch {
                // Once the batch is lost, the rest do not run: SQLite may
                // have ended the transaction itself, and what they wrote
                // would then be committed on its own.
                let (done, spoils) = job(spoiled.is_none().then_some(&mut *state));
                spoiled = spoiled.or(spoils);
                completions.push(done);
            }
            spoiled
        });
        if committed.is_err() {
            state.rolled_back();
        }
        for done in completions {
            done(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
        last_commit = Instant::now();
        state.between_batches(Batch {
            writes,
            commit: committed.ok(),
        });
    }
}

/// Waits for the next write, running the state's upkeep whenever it falls
/// due first; `None` once every sender is gone.
fn next_write<S: WriterState>(state: &mut S, queue: &mpsc::Receiver<Job<S>>) -> Option<Job<S>> {
    loop {
        let Some(due) = state.upkeep_due() else {
            return queue.recv().ok();
        };
        match due.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => match queue.recv_timeout(left) {
                Ok(job) => return Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            },
            _ => state.upkeep(),
        }
    }
}

/// Adds to `batch` what is queued and, until `until`, what arrives, up to
/// [`MAX_BATCH`] writes.
fn gather<T>(queue: &mpsc::Receiver<T>, batch: &mut Vec<T>, until: Instant) {
    while batch.len() < MAX_BATCH {
        let next = match queue.try_recv() {
            Err(mpsc::TryRecvError::Empty) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => queue.recv_timeout(left).ok(),
                _ => None,
            },
            other => other.ok(),
        };
        match next {
            Some(job) => batch.push(job),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;

    use super::*;

    #[test]
    fn a_batch_past_its_gathering_time_takes_only_what_is_queued() {
        let (tx, rx) = mpsc::channel();
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        let mut batch = vec![1];
        gather(&rx, &mut batch, Instant::now());
        assert_eq!(batch, [1, 2, 3]);
        tx.send(4).unwrap();
        let mut next = vec![];
        gather(&rx, &mut next, Instant::now() - Duration::from_millis(1));
        assert_eq!(next, [4], "the next batch's");
    }

    #[test]
    fn a_batch_within_its_gathering_time_waits_for_what_arrives_up_to_the_cap() {
        let (tx, rx) = mpsc::channel();
        let sender = std::thread::spawn(move || {
            for i in 0..MAX_BATCH + 10 {
                std::thread::sleep(Duration::from_micros(10));
                tx.send(i).unwrap();
            }
        });
        // Far enough ahead that only the cap ends the batch.
        let mut batch = vec![usize::MAX];
        gather(&rx, &mut batch, Instant::now() + Duration::from_secs(600));
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[1..], (0..MAX_BATCH - 1).collect::<Vec<_>>()[..]);
        sender.join().unwrap();
        // And a queue whose senders are gone ends it at once.
        let mut rest = Vec::new();
        gather(&rx, &mut rest, Instant::now() + Duration::from_secs(600));
        assert_eq!(rest, (MAX_BATCH - 1..MAX_BATCH + 10).collect::<Vec<_>>());
    }

    fn writer() -> GroupCommit<SqliteConnection> {
        crate::adapters::store::sqlite::configure_sqlite();
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .unwrap();
        GroupCommit::start(conn).unwrap()
    }

    async fn insert(w: &GroupCommit<SqliteConnection>, v: i64) -> Result<(), PortError> {
        w.write(move |conn| {
            diesel::sql_query(format!("INSERT INTO t (v) VALUES ({v})")).execute(conn)?;
            Ok::<_, PortError>(())
        })
        .await
    }

    async fn count(w: &GroupCommit<SqliteConnection>) -> i64 {
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

    /// Holds the writer thread until the returned sender is dropped, so
    /// that the writes queued meanwhile form the next batch.
    async fn hold(
        w: &std::sync::Arc<GroupCommit<SqliteConnection>>,
    ) -> std::sync::mpsc::Sender<()> {
        let (started, running) = oneshot::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let w = w.clone();
        tokio::spawn(async move {
            w.write(move |_conn| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok::<_, PortError>(())
            })
            .await
        });
        running.await.unwrap();
        release
    }

    async fn unguarded(
        w: &GroupCommit<SqliteConnection>,
        v: i64,
        fail: Option<bool>,
    ) -> Result<(), PortError> {
        // `fail`: None succeeds, Some(true) is a refusal, Some(false) fails
        // after writing.
        let refused = |e: &PortError| e.to_string() == "refused";
        w.write_unguarded(refused, move |conn| {
            if fail == Some(true) {
                return Err(PortError(anyhow!("refused")));
            }
            diesel::sql_query(format!("INSERT INTO t (v) VALUES ({v})")).execute(conn)?;
            match fail {
                Some(false) => Err(PortError(anyhow!("half-way"))),
                _ => Ok(()),
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unguarded_write_failing_half_way_undoes_its_whole_batch_and_a_refusal_nothing() {
        let w = std::sync::Arc::new(writer());
        let release = hold(&w).await;
        let (before, refusal, after) = tokio::join!(
            async {
                tokio::task::yield_now().await;
                drop(release);
                unguarded(&w, 1, None).await
            },
            unguarded(&w, 2, Some(true)),
            unguarded(&w, 3, None),
        );
        // The joined futures queue in the order polled: 2, 3, then 1 after
        // the release; 1 may or may not share their batch.
        assert!(before.is_ok() && after.is_ok());
        assert_eq!(refusal.unwrap_err().to_string(), "refused");
        assert_eq!(count(&w).await, 2);

        let release = hold(&w).await;
        let (first, spoiler, skipped, ()) = tokio::join!(
            unguarded(&w, 4, None),
            unguarded(&w, 5, Some(false)),
            unguarded(&w, 6, None),
            async {
                tokio::task::yield_now().await;
                drop(release);
            },
        );
        assert!(first.is_err() && spoiler.is_err() && skipped.is_err());
        assert_eq!(count(&w).await, 2, "nothing of the spoiled batch is kept");
        unguarded(&w, 7, None).await.unwrap();
        assert_eq!(count(&w).await, 3);
    }

    /// A state whose upkeep falls due at a set time, counting its runs.
    struct Upkeeping {
        conn: SqliteConnection,
        due: Option<Instant>,
        runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl WriterState for Upkeeping {
        fn conn(&mut self) -> &mut SqliteConnection {
            &mut self.conn
        }

        fn rolled_back(&mut self) {}

        fn upkeep_due(&self) -> Option<Instant> {
            self.due
        }

        fn upkeep(&mut self) {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.due = None;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn upkeep_runs_once_when_due_though_no_write_comes() {
        use std::sync::atomic::Ordering::SeqCst;
        crate::adapters::store::sqlite::configure_sqlite();
        let runs = std::sync::Arc::default();
        let w = GroupCommit::start(Upkeeping {
            conn: SqliteConnection::establish(":memory:").unwrap(),
            due: Some(Instant::now() + Duration::from_millis(100)),
            runs: std::sync::Arc::clone(&runs),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while runs.load(SeqCst) == 0 {
            assert!(Instant::now() < deadline, "upkeep never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Done, it is not run again; writes go on.
        w.write(|_: &mut Upkeeping| Ok::<_, PortError>(()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runs.load(SeqCst), 1);
    }

    /// A state that counts its `settle` calls, and fails them when told.
    struct Settling {
        conn: SqliteConnection,
        settles: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail: bool,
    }

    impl WriterState for Settling {
        fn conn(&mut self) -> &mut SqliteConnection {
            &mut self.conn
        }

        fn settle(&mut self) -> Result<(), DieselError> {
            self.settles
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail {
                return Err(DieselError::QueryBuilderError("settling failed".into()));
            }
            Ok(())
        }

        fn rolled_back(&mut self) {}
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn settle_runs_before_each_guarded_write_and_the_commit_and_its_failure_fails_the_batch()
    {
        use std::sync::atomic::Ordering::SeqCst;
        for fail in [false, true] {
            let settles = std::sync::Arc::default();
            crate::adapters::store::sqlite::configure_sqlite();
            let mut conn = SqliteConnection::establish(":memory:").unwrap();
            conn.batch_execute("CREATE TABLE t (v INTEGER NOT NULL)")
                .unwrap();
            let w = GroupCommit::start(Settling {
                conn,
                settles: std::sync::Arc::clone(&settles),
                fail,
            })
            .unwrap();
            let insert = |s: &mut Settling| {
                diesel::sql_query("INSERT INTO t (v) VALUES (1)").execute(&mut s.conn)?;
                Ok::<_, PortError>(())
            };
            let unguarded = w.write_unguarded(|_: &PortError| false, insert).await;
            assert_eq!(settles.load(SeqCst), 1, "before the commit only");
            let guarded = w.write(insert).await;
            assert_eq!(settles.load(SeqCst), if fail { 2 } else { 3 });
            assert_eq!((unguarded.is_ok(), guarded.is_ok()), (!fail, !fail));
        }
    }
}
