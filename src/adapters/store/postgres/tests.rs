//! The PostgreSQL store against a scratch schema on the test server: the
//! store contract, and what is particular to a server shared by processes.
use super::*;

use std::time::Instant;

use super::super::contract::{Fixture, store_contract_tests};
use super::super::pg_scratch::{ScratchSchema, server_url};
use super::super::queries::MessageQueries;
use crate::domain::ports::{MessageStore, UserStore};
use crate::domain::user::PasswordHash;
use crate::domain::{MessageId, RoomName, Timestamp, Username, Visibility};

/// A store on a new schema; the schema is dropped after the store closes.
pub(crate) struct PgFixture {
    store: PgStore,
    schema: ScratchSchema,
}

impl Fixture for PgFixture {
    type Store = PgStore;

    async fn fresh() -> Option<Self> {
        let schema = ScratchSchema::create()?;
        let store = PgStore::open(&schema.url()).expect("the store opens");
        Some(Self { store, schema })
    }

    fn store(&self) -> &PgStore {
        &self.store
    }

    async fn reopen(&mut self) {
        self.store = PgStore::open(&self.schema.url()).expect("the store opens again");
    }

    async fn another(&self) -> PgStore {
        PgStore::open(&self.schema.url()).expect("a second store opens")
    }

    async fn raw_message(&self, id: &MessageId) -> (String, bool) {
        let id = id.as_str().to_owned();
        let row = self.store.read(move |conn| Ok(conn.raw_message(&id)?));
        row.await.expect("the message row")
    }
}

mod contract {
    super::store_contract_tests!(super::PgFixture);
}

fn user_name(raw: &str) -> Username {
    Username::parse(raw).unwrap()
}

fn some_hash() -> PasswordHash {
    PasswordHash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$x".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_opening_one_new_database_together_migrate_it_once() {
    let Some(schema) = ScratchSchema::create() else {
        return;
    };
    let url = schema.url();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url))
        })
        .collect();
    let stores: Vec<PgStore> = opened
        .into_iter()
        .map(|t| t.join().unwrap().expect("every opener succeeds"))
        .collect();
    let alice = stores[0]
        .create_user(&user_name("alice"), &some_hash(), Timestamp::from_millis(0))
        .await
        .unwrap();
    assert_eq!(stores[3].user(&alice.id).await.unwrap(), Some(alice));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_recovers_when_the_server_cuts_its_connections() {
    let Some(schema) = ScratchSchema::create() else {
        return;
    };
    // Named, so that only this store's connections are cut.
    let tag = format!("cut_{:x}", rand::random::<u64>());
    let store = PgStore::open(&format!("{}&application_name={tag}", schema.url())).unwrap();
    let alice = store
        .create_user(&user_name("alice"), &some_hash(), Timestamp::from_millis(0))
        .await
        .unwrap();
    // Several connections in the pool at once.
    let pings: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ping().await })
        })
        .collect();
    for ping in pings {
        ping.await.unwrap().unwrap();
    }

    let mut admin = PgConnection::establish(&server_url()).unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{tag}'"
        ))
        .unwrap();

    // Each dead connection fails one call at most, then is replaced.
    let mut failures = 0;
    while store.ping().await.is_err() {
        failures += 1;
        assert!(
            failures <= POOL_SIZE,
            "still failing after {failures} calls"
        );
    }
    for _ in 0..2 * POOL_SIZE {
        store.ping().await.expect("a healthy pool again");
    }
    assert_eq!(
        store.credentials(&user_name("ALICE")).await.unwrap(),
        Some((alice, some_hash()))
    );
}

#[test]
fn an_unreachable_server_fails_at_once_without_echoing_the_password() {
    let started = Instant::now();
    let err = PgStore::open("postgres://confab:s3cret-pw@127.0.0.1:1/confab")
        .err()
        .expect("nothing listens on port 1");
    let message = format!("{err:#}");
    assert!(
        message.contains("cannot connect to PostgreSQL"),
        "{message}"
    );
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_database_not_in_utf8_is_refused() {
    let Some(_reachable) = ScratchSchema::create() else {
        return;
    };
    let mut admin = PgConnection::establish(&server_url()).unwrap();
    let name = format!("confab_test_ascii_{:x}", rand::random::<u64>());
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .unwrap();
    let (base, _) = server_url()
        .rsplit_once('/')
        .map(|(base, db)| (base.to_owned(), db.to_owned()))
        .unwrap();
    let result = PgStore::open(&format!("{base}/{name}"));
    admin
        .batch_execute(&format!("DROP DATABASE {name}"))
        .unwrap();
    let message = format!("{:#}", result.err().expect("refused"));
    assert!(message.contains("needs UTF8"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_give_each_users_conversations_with_their_newest_seq_and_read_marker() {
    use super::super::contract::{direct, new_message, register, ts};
    let Some(f) = PgFixture::fresh().await else {
        return;
    };
    let store = f.store();
    let (ann, bob, cat) = (
        register(store, "ann").await,
        register(store, "bob").await,
        register(store, "cat").await,
    );
    let ab = direct(store, &ann, &bob).await;
    for body in ["one", "two", "three"] {
        store
            .append(new_message(&ab, &ann, body, None, ts(1)))
            .await
            .unwrap();
    }
    store.advance_read_marker(&ab, &bob.id, 2).await.unwrap();
    let room = store
        .create_room(
            &RoomName::parse("lobby").unwrap(),
            Visibility::Public,
            &cat.id,
            ts(2),
        )
        .await
        .unwrap();
    let mut got = store
        .positions(&[ann.id.clone(), bob.id.clone(), cat.id.clone()])
        .await
        .unwrap();
    got.sort_by(|x, y| x.user.cmp(&y.user));
    let mut want = vec![
        Position {
            user: ann.id.clone(),
            conversation: ab.clone(),
            last_seq: 3,
            last_read_seq: 0,
        },
        Position {
            user: bob.id.clone(),
            conversation: ab,
            last_seq: 3,
            last_read_seq: 2,
        },
        Position {
            user: cat.id.clone(),
            conversation: room,
            last_seq: 0,
            last_read_seq: 0,
        },
    ];
    want.sort_by(|x, y| x.user.cmp(&y.user));
    assert_eq!(got, want);
    assert!(store.positions(&[]).await.unwrap().is_empty());
}
