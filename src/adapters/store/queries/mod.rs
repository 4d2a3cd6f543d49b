//! The queries both diesel backends run, written once: a trait per family
//! (users and blocks, conversations, messages), which each backend's
//! connection implements through [`shared_queries!`], and which
//! `DieselStore` calls whatever the backend.
//!
//! The implementations are written once in macros, expanded for each
//! connection type, rather than as one implementation generic over the
//! connection: diesel renders parts of a statement per backend (`eq_any`
//! as `= ANY($1)` on PostgreSQL and `IN (?, ...)` on SQLite; `LIMIT`,
//! inserts and `ON CONFLICT` each by their own rules), and the traits a
//! bound could name to say "a backend with ANSI select syntax" are private
//! to diesel unless one opts into its unstable third-party-backend API. A
//! generic body would need a `where` bound spelling out the full type of
//! every one of its ~35 statements (joins, aliases, boxed filters), a copy
//! of each query in type form to keep in step with every edit of it.
//! Expanded per connection, each body is checked and compiled against its
//! backend exactly as handwritten code would be: statements stay cached
//! prepared, nothing is boxed, no call is dynamic.
//!
//! Arguments arrive as the engine stores them (PostgreSQL replaces U+0000
//! first). What only one backend does stays in its engine: SQLite's writer
//! and its prepared append statements, PostgreSQL's row locks and its
//! append.

mod conversations;
mod devices;
mod files;
mod messages;
mod users;

pub use conversations::ConversationQueries;
pub use devices::{DeviceQueries, TokenRow};
pub use files::{FileColumns, FileQueries, FileRow, UploadRow};
pub use messages::{MessageQueries, messages_in};
pub use users::UserQueries;
// Reached by `shared_queries!` wherever it is expanded.
pub(super) use conversations::conversation_queries;
pub(super) use devices::device_queries;
pub(super) use files::file_queries;
pub(super) use messages::message_queries;
pub(super) use users::user_queries;

/// What the shared queries need to know of a backend's connection beyond
/// what diesel types.
pub trait Sql {
    /// The SQL that orders a conversation's members by when they joined,
    /// even within one millisecond (a member who rejoins goes to the back).
    const JOIN_ORDER: &'static str;
    /// The SQL that orders blocks by when they were made.
    const BLOCK_ORDER: &'static str;
    /// How many ids one query may bind.
    const IDS_PER_QUERY: usize;
}

/// Every shared query.
pub trait Queries:
    UserQueries + ConversationQueries + MessageQueries + DeviceQueries + FileQueries
{
}

impl<C> Queries for C where
    C: UserQueries + ConversationQueries + MessageQueries + DeviceQueries + FileQueries
{
}

/// Implements every shared query for a connection type that is [`Sql`].
macro_rules! shared_queries {
    ($conn:ty) => {
        $crate::adapters::store::queries::user_queries!($conn);
        $crate::adapters::store::queries::conversation_queries!($conn);
        $crate::adapters::store::queries::message_queries!($conn);
        $crate::adapters::store::queries::device_queries!($conn);
        $crate::adapters::store::queries::file_queries!($conn);
    };
}
pub(crate) use shared_queries;

/// The bounds of the keys starting with `prefix`. Keys compare bytewise
/// (SQLite's default, `COLLATE "C"` on PostgreSQL), and every key starting
/// with `prefix` sorts below the prefix followed by the highest code point.
pub(super) fn prefix_range(prefix: &str) -> (&str, String) {
    (prefix, format!("{prefix}\u{10FFFF}"))
}
