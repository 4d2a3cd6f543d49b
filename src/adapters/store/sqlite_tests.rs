//! The SQLite store against temporary database files: the store contract,
//! and what is particular to a file.
use super::*;

use tempfile::TempDir;

use super::super::contract::{Fixture, store_contract_tests};

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("t.db")).expect("the store opens")
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
        let row = self
            .store
            .read(move |conn| Ok(queries::raw_message(conn, &id)?));
        row.await.expect("the message row")
    }
}

mod contract {
    super::store_contract_tests!(super::SqliteFixture);
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_creates_missing_parent_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a/b/t.db")).unwrap();
    store.ping().await.unwrap();
    assert!(dir.path().join("a/b/t.db").exists());
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
        .write_live(|w| {
            diesel::sql_query(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON messages \
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
