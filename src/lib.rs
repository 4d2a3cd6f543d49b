//! confab: a real-time chat server, JSON over WebSocket.
//!
//! A tour of the layout, core first:
//!
//! - [`domain`] is the pure core: users, conversations, messages, presence,
//!   the routing rules, the ports (traits) it needs from the world, and the
//!   use cases in [`domain::service`]. It performs no I/O.
//! - [`adapters`] implement and drive the ports: the HTTP endpoints and
//!   WebSocket sessions (inbound), the SQLite and PostgreSQL stores, the
//!   argon2 + JWT authenticator, the in-memory presence registry, and the
//!   session registry that delivers events (the `Transport` port). They
//!   also serve the web client (`adapters::web`), which is a client of
//!   the public contract like any other. `adapters::cluster` swaps in a
//!   `Transport`, `PresenceRegistry` and session `Attach` shared over a
//!   message bus (Redis, behind a `Bus` port) so that several
//!   processes serve as one (docs/cluster.md). `adapters::edge` admits
//!   connections under their caps and throttles logins (docs/security.md).
//! - [`config`] reads the settings; [`app`] wires it all together, and
//!   `main.rs` runs it.
//!
//! The wire contract is `docs/protocol.md`.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
