//! The pure core of confab: users, conversations, messages, presence and the
//! routing rules, plus the ports (traits) through which it reaches the world
//! and the use cases that tie them together.
//!
//! Nothing in here performs I/O or knows about JSON, SQL, HTTP or tokio: the
//! adapters in `crate::adapters` do that and translate into these types.

pub mod blocking;
pub mod conversation;
pub mod device;
pub mod error;
pub mod event;
pub mod file;
pub mod ids;
pub mod membership;
pub mod message;
pub mod page;
pub mod ports;
pub mod positions;
pub mod presence;
pub mod routing;
pub mod service;
pub mod time;
pub mod user;

pub use conversation::{
    Conversation, ConversationKind, ConversationSummary, Membership, RoomName, RoomsPage,
    Visibility,
};
pub use event::Event;
pub use file::{Attachment, FileInfo};
pub use ids::{ConversationId, DeviceId, FileId, MessageId, SessionId, UploadId, UserId};
pub use message::{ClientMsgId, HistoryPage, HistoryQuery, Message, MessageBody};
pub use page::PageLimit;
pub use presence::{ActiveStatus, Presence, Status};
pub use time::Timestamp;
pub use user::{Password, User, Username};
