//! Keeping the WAL short and clean: the checkpointer thread, which copies
//! the WAL back into the database so that commits never wait for it, the
//! writer's side of it, and the scrub that empties the WAL of replaced text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use crate::adapters::metrics::StoreMetrics;

/// The writer's side of the checkpointer thread (see `start_checkpointer`):
/// when to ask it for a pass, and whether it asked for the WAL to start over.
pub struct Checkpointer {
    /// Raised by the thread: the WAL is long.
    wal_long: Arc<AtomicBool>,
    /// Asks the thread for a pass.
    nudge: SyncSender<()>,
    /// Writes committed since the thread was last asked for a pass.
    unchecked: usize,
    /// Commits since then.
    commits: usize,
    /// When it was last asked.
    pub(super) asked: std::time::Instant,
}

impl Checkpointer {
    /// The writer's side of a checkpointer thread that raises `wal_long`
    /// and waits for `nudge`.
    pub(super) fn new(wal_long: Arc<AtomicBool>, nudge: SyncSender<()>) -> Self {
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
    pub(super) fn after_batch(&mut self, conn: &mut SqliteConnection, writes: usize) -> bool {
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
/// Writes after which the writer asks the checkpointer for a pass, which
/// then makes at most one per `PASS_GAP`: the fewer pages a pass writes to
/// the database file at once, the less a commit's fsync of the WAL waits
/// behind them on the disk (at 10,000 msgs/s, a pass every 100 ms made
/// delivery p99 16-20 ms; every few ms, 7-15 ms). Counted in writes, so
/// that a quiet server does not pay for passes that copy a page or two:
/// after 64 rather than 16, a pass costs 12% less CPU per message at
/// 2,000 msgs/s for the same tail at 10,000.
pub(super) const PASS_AFTER_WRITES: usize = 64;

/// Nor before this many commits: a pass copies the last version of each
/// page, and under heavy load each commit carries hundreds of writes and
/// rewrites many of the index pages the commits just before it wrote
/// (over 8 commits of the closed loop, half the frames are pages written
/// again), so a pass after each commit copied nearly every frame. 16
/// rather than 8 took another fifth off the checkpointer's CPU there.
/// Where commits are small (the open loop: 5-8 writes each at 10,000
/// msgs/s), 64 writes are about that many commits anyway.
pub(super) const PASS_AFTER_COMMITS: usize = 16;

/// The checkpointer's rest after a pass.
pub(super) const PASS_GAP: std::time::Duration = std::time::Duration::from_millis(3);

/// While writes go on, a pass at least this often, however few they are.
pub(super) const PASS_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A WAL this long (in 4 KiB frames: 16 MiB) is restarted from its
/// beginning as soon as it can be. Each restart costs the writer a short
/// pause (see `start_checkpointer`), so not much more often than that.
pub(super) const WAL_RESTART_FRAMES: i64 = 4096;

/// Runs one PASSIVE checkpoint, which copies what no reader still needs
/// and never blocks the writer; returns the WAL's length in frames.
pub(super) fn checkpoint(conn: &mut SqliteConnection) -> QueryResult<i64> {
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
pub(super) const SCRUB_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies every frame of the WAL back and truncates it to nothing
/// (`wal_checkpoint(TRUNCATE)`): the text an edit or a delete replaced
/// then lives in no file. The database's own pages do not keep it, since
/// `secure_delete` zeroes what a change frees; the WAL does, in the frames
/// written before the change and, as SQLite reuses the file from its
/// start, in whatever lies past the frames written since. Waits, as long
/// as the busy timeout, for readers still on older frames and for a pass
/// of the checkpointer; returns whether it finished.
pub(super) fn scrub(conn: &mut SqliteConnection) -> QueryResult<bool> {
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
pub(super) fn start_checkpointer(
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
pub(super) fn checkpoint_pass(conn: &mut SqliteConnection, wal_long: &AtomicBool) {
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
