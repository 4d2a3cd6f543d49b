//! Adapters: everything that touches the outside world, each implementing
//! or driving the core's ports.
//!
//! - `http` and `ws` are inbound: they parse requests, call the use cases
//!   and render answers, through the one wire format in `wire`; `failure`
//!   turns the core's use-case errors into the contract's codes and texts.
//! - `ws::SessionRegistry` is also the outbound `Transport`; `cluster`
//!   replaces it, and presence, when several nodes serve as one.
//! - `store` (diesel: SQLite or PostgreSQL), `auth` (argon2id + JWT), `presence` (in
//!   memory) and `clock` implement the other ports.
//! - `blob` keeps the bytes of shared files, on disk or on S3; the core
//!   never sees them.
//! - `server` accepts connections and shuts down gracefully; `edge` holds
//!   what guards it: connection caps, the client's address behind proxies,
//!   the failed-login throttle, rate-limited logging.
//! - `files` streams uploads and downloads between `http` and the
//!   `blob` store port (a folder, or S3), with `media` sniffing types and
//!   making thumbnails; the core decides who may read what.
//! - `web` holds the web client's files, embedded, and serves them.
//! - `media` says what an uploaded file is and makes thumbnails of images.
//! - `private` keeps the data folder and its files from other local users.

pub mod auth;
pub mod blob;
pub mod clock;
pub mod cluster;
pub mod edge;
pub mod failure;
pub mod files;
#[cfg(test)]
mod fuzzing;
pub mod http;
pub mod media;
pub mod metrics;
pub mod presence;
pub mod private;
pub mod server;
pub mod store;
pub mod web;
pub mod wire;
pub mod ws;
