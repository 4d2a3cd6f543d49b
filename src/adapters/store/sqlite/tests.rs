//! The SQLite store against temporary database files: the store contract,
//! and what is particular to a file.
use super::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use diesel::prelude::*;
use tempfile::TempDir;

use super::super::group_commit::{Batch, WriterState};
use super::super::queries::MessageQueries;
use super::super::schema::conversations;
use super::wal::{
    Checkpointer, PASS_AFTER_COMMITS, PASS_AFTER_WRITES, PASS_AT_LEAST_EVERY, WAL_RESTART_FRAMES,
    checkpoint, checkpoint_pass,
};
use crate::domain::message::MessageChange;
use crate::domain::ports::MessageStore;
use crate::domain::{ConversationId, HistoryQuery, MessageId, User, UserId, Username};

use super::super::contract::{Fixture, register, store_contract_tests};

/// Long enough that no test but those on scrubbing sees the WAL emptied.
const SCRUB: std::time::Duration = std::time::Duration::from_secs(30);

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("t.db"), StoreMetrics::default(), SCRUB)
        .expect("the store opens")
}

/// A store on a new file in a temporary folder.
pub(crate) struct SqliteFixture {
    store: SqliteStore,
    dir: TempDir,
}

impl Fixture for SqliteFixture {
    type Store = SqliteStore;

    async fn fresh() -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = open(&dir);
        Some(Self { store, dir })
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn reopen(&mut self) {
        self.store = open(&self.dir);
    }

    async fn another(&self) -> SqliteStore {
        open(&self.dir)
    }

    async fn raw_message(&self, id: &MessageId) -> (String, bool) {
        let id = id.as_str().to_owned();
        let row = self.store.read(move |conn| Ok(conn.raw_message(&id)?));
        row.await.expect("the message row")
    }
}

mod contract {
    super::store_contract_tests!(super::SqliteFixture);
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_creates_missing_parent_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("a/b/t.db"), StoreMetrics::default(), SCRUB).unwrap();
    store.ping().await.unwrap();
    assert!(dir.path().join("a/b/t.db").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_folder_it_creates_and_every_file_are_its_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let path = dir.join("t.db");
    let store = SqliteStore::open(&path, StoreMetrics::default(), SCRUB).unwrap();
    register(&store, "alice").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for name in ["t.db", "t.db-wal", "t.db-shm"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    drop(store);
    // Files an earlier version left open to others are closed on opening.
    for name in ["t.db", "t.db-wal", "t.db-shm"] {
        let file = dir.join(name);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let _store = SqliteStore::open(&path, StoreMetrics::default(), SCRUB).unwrap();
    for name in ["t.db", "t.db-wal", "t.db-shm"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name} reopened");
    }
}

/// Every file of the folder that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// The text an edit or a delete replaced is in no file of the folder once
/// the scrub interval has passed, without any further write.
#[tokio::test(flavor = "multi_thread")]
async fn replaced_text_is_gone_from_every_file_within_the_scrub_interval() {
    use super::super::contract::{direct, new_message, register, stored, ts};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("t.db"),
        StoreMetrics::default(),
        std::time::Duration::from_millis(200),
    )
    .unwrap();
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    let (edited, deleted) = ("marker-edited-7f3a9c", "marker-deleted-51be02");
    let mut ids = Vec::new();
    for body in [edited, deleted, "kept"] {
        let sent = store
            .append(new_message(&ab, &alice, body, None, ts(1)))
            .await;
        ids.push(stored(sent.unwrap()).0.id);
    }
    let body = crate::domain::MessageBody::parse("new text").unwrap();
    let edit = MessageChange::Edit { body, at: ts(2) };
    store.update_message(&ab, &ids[0], edit).await.unwrap();
    store
        .update_message(&ab, &ids[1], MessageChange::Delete)
        .await
        .unwrap();
    let wal = dir.path().join("t.db-wal");
    assert!(
        !files_holding(dir.path(), edited.as_bytes()).is_empty(),
        "the WAL holds it at first"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&wal).unwrap().len() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was never emptied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for marker in [edited, deleted] {
        assert_eq!(
            files_holding(dir.path(), marker.as_bytes()),
            Vec::<String>::new()
        );
    }
    assert!(!files_holding(dir.path(), b"new text").is_empty());
    assert!(!files_holding(dir.path(), b"kept").is_empty());
}

/// A batch of messages shares one write without a savepoint per message,
/// so a database error half-way must fail all of it: none stored, none
/// acknowledged, and the seqs the writer remembers rolled back with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_error_in_a_batch_fails_all_of_it_and_seqs_stay_dense() {
    use super::super::contract::{direct, new_message, register, stored, ts};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let alice = register(&store, "alice").await;
    let bob = register(&store, "bob").await;
    let ab = direct(&store, &alice, &bob).await;
    store
        .engine()
        .write(|w| {
            diesel::sql_query(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON message_rows \
                 WHEN NEW.body = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .execute(&mut w.conn)?;
            Ok::<_, PortError>(())
        })
        .await
        .unwrap();
    let results = store
        .append_all(vec![
            new_message(&ab, &alice, "one", None, ts(1)),
            new_message(&ab, &bob, "boom", None, ts(2)),
            new_message(&ab, &alice, "three", None, ts(3)),
        ])
        .await;
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AppendError::Unknown(_)))),
        "{results:?}"
    );
    let after = store
        .append(new_message(&ab, &alice, "after", None, ts(4)))
        .await
        .unwrap();
    assert_eq!(
        stored(after).0.seq,
        1,
        "nothing of the failed batch is kept"
    );
    let page = store
        .history(&ab, HistoryQuery::new(None, None, Some(10)).unwrap())
        .await
        .unwrap();
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["after"]);
}

/// A database made before messages were keyed by integers keeps all it
/// held: history, duplicates found by clientMsgId, edits, and new messages
/// after the old ones, by users and conversations made before and after.
#[tokio::test(flavor = "multi_thread")]
async fn messages_stored_before_the_integer_keys_survive_the_migration() {
    use super::super::contract::{direct, new_message, register, stored, ts};
    use crate::domain::ports::AppendError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let mut conn = connection(&path);
        conn.run_next_migration(MIGRATIONS).unwrap();
        conn.batch_execute(
            "INSERT INTO users (id, username, username_key, password_hash, created_at) VALUES \
               ('u-a', 'alice', 'alice', 'x', 1), ('u-b', 'bob', 'bob', 'x', 2); \
             INSERT INTO conversations (id, kind, direct_key, last_seq, member_count, created_by, \
               created_at, last_activity) VALUES ('c-ab', 'direct', 'u-a|u-b', 2, 2, 'u-a', 3, 5); \
             INSERT INTO members (conversation_id, user_id, joined_at) VALUES \
               ('c-ab', 'u-a', 3), ('c-ab', 'u-b', 3); \
             INSERT INTO messages (id, conversation_id, seq, sender_id, body, client_msg_id, \
               created_at, edited_at) VALUES \
               ('m-1', 'c-ab', 1, 'u-a', 'hello', 'k-1', 4, NULL), \
               ('m-2', 'c-ab', 2, 'u-b', 'hi', NULL, 5, 6);",
        )
        .unwrap();
    }
    let store = open(&dir);
    let ab = ConversationId::new("c-ab".to_owned());
    let page = store
        .history(&ab, HistoryQuery::new(None, None, Some(10)).unwrap())
        .await
        .unwrap();
    let seen: Vec<_> = page
        .messages
        .iter()
        .map(|m| {
            (
                m.id.as_str(),
                m.seq,
                m.sender_id.as_str(),
                m.sender.as_str(),
                m.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("m-1", 1, "u-a", "alice", "hello"),
            ("m-2", 2, "u-b", "bob", "hi")
        ]
    );
    assert!(page.messages[1].edited_at.is_some());

    let alice = User {
        id: UserId::new("u-a".to_owned()),
        username: Username::parse("alice").unwrap(),
    };
    let resent = store
        .append(new_message(&ab, &alice, "hello again", Some("k-1"), ts(7)))
        .await
        .unwrap();
    assert!(
        matches!(&resent, AppendOutcome::Duplicate(m) if m.id.as_str() == "m-1"),
        "{resent:?}"
    );
    let next = stored(
        store
            .append(new_message(&ab, &alice, "third", Some("k-2"), ts(8)))
            .await
            .unwrap(),
    );
    assert_eq!(next.0.seq, 3);
    let edited = store
        .update_message(
            &ab,
            &MessageId::new("m-1".to_owned()),
            MessageChange::Edit {
                body: crate::domain::MessageBody::parse("hello, edited").unwrap(),
                at: ts(9),
            },
        )
        .await;
    assert!(matches!(edited, Ok(Some(_))), "{edited:?}");

    // Users and conversations made after the migration get keys too.
    let carol = register(&store, "carol").await;
    let ac = direct(&store, &alice, &carol).await;
    let first = stored(
        store
            .append(new_message(&ac, &carol, "hey", None, ts(10)))
            .await
            .unwrap(),
    );
    assert_eq!((first.0.seq, first.0.sender.as_str()), (1, "carol"));
    let refused = store
        .append(new_message(&ab, &carol, "not mine", None, ts(11)))
        .await;
    assert!(
        matches!(refused, Err(AppendError::NotMember)),
        "{refused:?}"
    );

    drop(store);
    let store = open(&dir);
    let page = store
        .history(&ab, HistoryQuery::new(None, None, Some(10)).unwrap())
        .await
        .unwrap();
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hello, edited", "hi", "third"]);
}

/// Appends leave their conversation's row to `settle`, once per batch: the
/// writer keeps counting from what it appended even when it forgets the
/// conversation half-way, and the row holds the last seq once settled.
#[tokio::test(flavor = "multi_thread")]
async fn appends_settle_the_conversation_row_once_and_seqs_survive_a_forgotten_cache() {
    use super::super::contract::{direct, new_message, register, ts};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (alice, ab) = {
        let store = open(&dir);
        let alice = register(&store, "alice").await;
        let bob = register(&store, "bob").await;
        let ab = direct(&store, &alice, &bob).await;
        (alice, ab)
    };
    let (nudge, _nudges) = std::sync::mpsc::sync_channel(1);
    let checkpointer = Checkpointer::new(Arc::new(AtomicBool::new(false)), nudge);
    let mut w = Writer::new(
        connection(&path),
        checkpointer,
        StoreMetrics::default(),
        SCRUB,
    );
    let stored_seq = |w: &mut Writer| {
        conversations::table
            .find(ab.as_str())
            .select(conversations::last_seq)
            .first::<i64>(&mut w.conn)
            .unwrap()
    };
    w.conn.batch_execute("BEGIN IMMEDIATE").unwrap();
    let mut seqs = Vec::new();
    for i in 0..3 {
        if i == 2 {
            // As when the cache is full, or another write forgot it.
            w.conversations.clear();
        }
        let outcome = append(&mut w, new_message(&ab, &alice, "hi", None, ts(i))).unwrap();
        let AppendOutcome::Stored { message, .. } = outcome else {
            panic!("stored");
        };
        seqs.push(message.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(stored_seq(&mut w), 0, "not written per message");
    w.settle().unwrap();
    assert_eq!(stored_seq(&mut w), 3);
    assert!(w.unsaved.is_empty());
    w.conn.batch_execute("COMMIT").unwrap();

    // A batch undone takes what it left unsettled with it.
    w.conn.batch_execute("BEGIN IMMEDIATE").unwrap();
    append(&mut w, new_message(&ab, &alice, "lost", None, ts(9))).unwrap();
    w.conn.batch_execute("ROLLBACK").unwrap();
    w.rolled_back();
    assert!(w.unsaved.is_empty());
    w.conn.batch_execute("BEGIN IMMEDIATE").unwrap();
    let outcome = append(&mut w, new_message(&ab, &alice, "again", None, ts(10))).unwrap();
    assert!(matches!(outcome, AppendOutcome::Stored { message, .. } if message.seq == 4));
    w.settle().unwrap();
    w.conn.batch_execute("COMMIT").unwrap();
    assert_eq!(stored_seq(&mut w), 4);
}

/// A committed batch of `n` writes.
fn writes(n: usize) -> Batch {
    Batch {
        writes: n,
        commit: Some(std::time::Duration::from_micros(300)),
    }
}

/// A connection as the store opens its writer and checkpointer.
fn connection(path: &Path) -> SqliteConnection {
    Pragmas { reader: false }.open(path).unwrap()
}

/// Appends `pages` pages' worth of rows in one transaction.
fn write_pages(conn: &mut SqliteConnection, pages: usize) {
    conn.batch_execute(&format!(
        "BEGIN IMMEDIATE; \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {pages}) \
         INSERT INTO t (b) SELECT zeroblob(3000) FROM n; COMMIT;"
    ))
    .unwrap();
}

#[test]
fn a_long_wal_is_restarted_though_the_writer_never_stops_while_it_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal_long = Arc::new(AtomicBool::new(false));
    let (nudge, _nudges) = std::sync::mpsc::sync_channel(1);
    let metrics = StoreMetrics::default();
    let checkpointer = Checkpointer::new(wal_long.clone(), nudge);
    let mut writer = Writer::new(connection(&path), checkpointer, metrics.clone(), SCRUB);
    let mut checkpointer = connection(&path);
    let mut reader = connection(&path);
    writer
        .conn
        .batch_execute("CREATE TABLE t (b BLOB NOT NULL)")
        .unwrap();
    let frames = |c: &mut SqliteConnection| checkpoint(c).unwrap();

    for flag_heeded in [false, true] {
        write_pages(&mut writer.conn, WAL_RESTART_FRAMES as usize + 200);
        // Sustained writes: some frames are always newer than what a pass
        // of the checkpointer could copy. A reader's snapshot stands for
        // the writes that land while a pass runs.
        reader
            .batch_execute("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        write_pages(&mut writer.conn, 10);
        checkpoint_pass(&mut checkpointer, &wal_long);
        reader.batch_execute("COMMIT;").unwrap();
        assert!(wal_long.load(Ordering::Relaxed), "the WAL is long");
        if !flag_heeded {
            wal_long.store(false, Ordering::Relaxed);
        }

        writer.between_batches(writes(1));
        write_pages(&mut writer.conn, 1);
        let now = frames(&mut checkpointer);
        if flag_heeded {
            assert!(now < 20, "the WAL started over: {now} frames");
            assert!(!wal_long.load(Ordering::Relaxed));
        } else {
            assert!(
                now > WAL_RESTART_FRAMES,
                "without the writer's copy it only grows: {now}"
            );
        }
    }
    assert_eq!(metrics.wal_restarts.get(), 1, "one restart counted");
}

#[test]
fn the_writer_asks_for_a_checkpoint_after_enough_writes_and_commits_or_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
    let wal_long = Arc::new(AtomicBool::new(false));
    let mut writer = Writer::new(
        connection(&dir.path().join("n.db")),
        Checkpointer::new(wal_long, nudge),
        StoreMetrics::default(),
        SCRUB,
    );
    let asked = |nudges: &std::sync::mpsc::Receiver<()>| nudges.try_recv().is_ok();

    // Small commits: the writes decide.
    for _ in 0..PASS_AFTER_WRITES - 1 {
        writer.between_batches(writes(1));
    }
    assert!(!asked(&nudges), "too few writes for a pass");
    writer.between_batches(writes(1));
    assert!(asked(&nudges), "enough writes: a pass");
    writer.between_batches(writes(1));
    assert!(!asked(&nudges), "the count starts over after a pass");
    writer.checkpointer.asked = std::time::Instant::now();

    // Large commits: the commits decide (the commit above counts).
    for _ in 0..PASS_AFTER_COMMITS - 2 {
        writer.between_batches(writes(PASS_AFTER_WRITES * 4));
    }
    assert!(!asked(&nudges), "too few commits for a pass");
    writer.between_batches(writes(PASS_AFTER_WRITES * 4));
    assert!(asked(&nudges), "enough commits: a pass");

    writer.checkpointer.asked -= PASS_AT_LEAST_EVERY;
    writer.between_batches(writes(1));
    assert!(asked(&nudges), "few writes, but the last pass is long ago");

    // A pass already asked for and not yet begun is not asked twice.
    for _ in 0..PASS_AFTER_COMMITS * 2 {
        writer.between_batches(writes(PASS_AFTER_WRITES));
    }
    assert!(asked(&nudges));
    assert!(!asked(&nudges));
}

#[tokio::test]
async fn the_writer_reports_its_commits_to_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = StoreMetrics::default();
    let store = SqliteStore::open(&dir.path().join("m.db"), metrics.clone(), SCRUB).unwrap();
    assert_eq!(metrics.commit_seconds.count(), 0);
    register(&store, "ann").await;
    register(&store, "bob").await;
    // Counted between batches, after the callers have heard.
    for _ in 0..500 {
        if metrics.commit_seconds.count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.commit_seconds.count(), 2, "one commit each");
    assert_eq!(metrics.batch_writes.count(), 2);
    assert_eq!(metrics.batch_writes.sum(), 2.0, "one write in each batch");
    assert!(metrics.commit_seconds.sum() > 0.0);
}
