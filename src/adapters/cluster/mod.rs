//! Cluster mode: several confab nodes sharing one PostgreSQL and one Redis.

pub mod presence;
