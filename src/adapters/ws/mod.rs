//! The WebSocket adapter: the session registry (which is also the
//! `Transport` port) and the per-connection session loop.

pub mod alarms;
pub mod attach;
pub mod registry;
pub mod session;
pub mod socket;

pub use attach::Attach;
pub use registry::{MAX_QUEUE_FRAMES, Mailbox, Outbound, SessionHandle, SessionRegistry};
