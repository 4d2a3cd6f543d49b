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
