//! Storage adapters: the `UserStore` and `MessageStore` ports on diesel.

mod common;
pub mod group_commit;
pub mod readers;
pub mod schema;
pub mod sqlite;

pub use sqlite::SqliteStore;
