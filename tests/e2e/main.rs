//! End-to-end tests: the real server binary, driven over HTTP and WebSocket
//! exactly as a third-party client would, one module per area of the
//! contract (docs/protocol.md). The tests of the store-heavy areas run once
//! per backend, SQLite and PostgreSQL (`NAME::sqlite`, `NAME::postgres`).

mod auth;
mod bench;
mod helpers;
mod http_api;
mod lifecycle;
mod limits;
mod messaging;
mod postgres;
mod presence;
mod rooms;
mod websocket;
