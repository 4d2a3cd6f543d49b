//! The SQLite store against a temporary database file.
use super::*;
