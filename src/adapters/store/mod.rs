//! Storage adapters: the `UserStore` and `MessageStore` ports on diesel.

pub mod group_commit;
pub mod readers;
pub mod schema;
pub mod sqlite;
pub mod statements;

pub use sqlite::SqliteStore;
