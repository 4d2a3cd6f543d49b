//! Storage adapters: the `UserStore` and `MessageStore` ports on diesel.
//! `contract` is the test suite every adapter passes.

mod common;
#[cfg(test)]
mod contract;
pub mod group_commit;
pub mod readers;
pub mod schema;
pub mod sqlite;

pub use sqlite::SqliteStore;
