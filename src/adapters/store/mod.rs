//! Storage adapters: the `UserStore` and `MessageStore` ports on diesel,
//! over SQLite (the default) or PostgreSQL. `contract` is the test suite
//! every adapter passes; docs/storage.md explains how to add one.

mod common;
#[cfg(test)]
mod contract;
mod gather;
pub mod group_commit;
mod pcache;
#[cfg(test)]
mod pg_scratch;
pub mod postgres;
pub mod readers;
pub mod schema;
pub mod sqlite;
pub mod statements;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
