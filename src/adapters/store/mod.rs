//! Storage adapters: the `UserStore` and `MessageStore` ports on diesel,
//! over SQLite (the default) or PostgreSQL. The ports are implemented once
//! (`ports`), on the queries both backends share (`queries`), by a store
//! generic over the backend's engine (`engine`); `sqlite` and `postgres`
//! hold only what the two truly do differently. `contract` is the test
//! suite every adapter passes; docs/storage.md explains how to add one.

mod common;
#[cfg(test)]
mod contract;
mod devices;
mod engine;
mod files;
mod gather;
pub mod group_commit;
mod pcache;
#[cfg(test)]
mod pg_scratch;
mod ports;
pub mod postgres;
mod queries;
pub mod readers;
pub mod schema;
pub mod sqlite;
pub mod statements;

pub use engine::DieselStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
