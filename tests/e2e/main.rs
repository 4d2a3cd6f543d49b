//! End-to-end tests: the real server binary, driven over HTTP and WebSocket
//! exactly as a third-party client would, one module per area of the
//! contract (docs/protocol.md). The tests of the store-heavy areas run once
//! per backend, SQLite and PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
//! (The web client's behaviour is tested in a browser: `tests/browser`.)

mod attachments;
mod auth;
mod blocking;
mod edge;
mod files;
mod helpers;
mod http_api;
mod lifecycle;
mod limits;
mod messaging;
mod openapi;
mod outbound;
mod postgres;
mod presence;
mod rooms;
mod sessions;
mod tus;
mod web;
mod websocket;
