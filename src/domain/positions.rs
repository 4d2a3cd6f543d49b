//! Where users stand in their conversations: a lean read model that lets a
//! node of a cluster seed and check its delivery cursors (docs/cluster.md,
//! sections 4.1 and 4.3) without building full conversation summaries.

use async_trait::async_trait;

use super::error::PortError;
use super::ids::{ConversationId, UserId};

/// Where a user stands in one conversation, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The member.
    pub user: UserId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Its newest seq.
    pub last_seq: u64,
    /// The member's read marker.
    pub last_read_seq: u64,
}

/// The store's answer to "where does each of these users stand", for many
/// users in one query, where [`super::ports::MessageStore::conversations_of`]
/// builds full summaries one user at a time. Only a store that several
/// nodes share needs it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SeqIndex: Send + Sync {
    /// Every conversation each of `users` is in, with its newest seq and
    /// the user's read marker. MUST read committed state only: a message
    /// whose append returned before the call is counted, so that a cursor
    /// seeded from it misses nothing published after.
    async fn positions(&self, users: &[UserId]) -> Result<Vec<Position>, PortError>;
}
