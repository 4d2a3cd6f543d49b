//! End-to-end tests: the real server binary, driven over HTTP and WebSocket
//! exactly as a third-party client would, one module per area of the
//! contract (docs/protocol.md).

mod auth;
mod bench;
mod helpers;
mod http_api;
mod lifecycle;
mod limits;
mod messaging;
mod presence;
mod rooms;
mod websocket;
