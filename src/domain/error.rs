//! The ways a use case can fail: one enum per use case, or per family of
//! use cases that fail in exactly the same ways, with a variant per business
//! case and one opaque `Unknown` for whatever broke underneath. Variants
//! carry data, not sentences: the adapters choose the wire code and the
//! words a client reads (`crate::adapters::failure`).

use super::membership::Denied;

/// An infrastructure failure in a port adapter, opaque to the core.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PortError(#[from] pub anyhow::Error);

/// Why `register` failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another user has the name, without regard to case.
    #[error("username taken")]
    Taken,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `login` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No user has this name and password (which of the two is not said).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `authenticate` failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    /// No token, or one that is malformed, expired or of a deleted user.
    #[error("invalid token")]
    InvalidToken,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `refresh` failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, spent long ago, or of an ended device session.
    #[error("invalid refresh token")]
    Invalid,
    /// Spent moments ago by another request: the newest token is elsewhere.
    #[error("refresh token just rotated")]
    Raced,
    /// Spent long ago: a copy was kept, by the client or by a thief. The
    /// device session was ended; the adapter logs it.
    #[error("refresh token reused; device session {device} of user {user} ended")]
    Reused {
        /// Whose device session.
        user: crate::domain::UserId,
        /// Which.
        device: crate::domain::DeviceId,
    },
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why ending a device session failed.
#[derive(Debug, thiserror::Error)]
pub enum EndDeviceError {
    /// The caller has no live device session by that id.
    #[error("no such session")]
    NoSuchDevice,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why a password change or an account deletion failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The password given to confirm it is not the account's.
    #[error("wrong password")]
    WrongPassword,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `presence_of` failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// More ids than one request may ask about.
    #[error("more than {max} ids")]
    TooManyIds {
        /// The most one request may ask about.
        max: usize,
    },
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why a use case in one conversation failed: `history`, `mark_read`,
/// `typing`, `join_room`, `leave_room`.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No conversation has the id.
    #[error("no such conversation")]
    NoSuchConversation,
    /// The membership rules refuse it.
    #[error("refused: {0:?}")]
    Refused(Denied),
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No conversation has the id.
    #[error("no such conversation")]
    NoSuchConversation,
    /// No user has the id the message is addressed to.
    #[error("no such user")]
    NoSuchUser,
    /// The membership or blocking rules refuse it.
    #[error("refused: {0:?}")]
    Refused(Denied),
    /// An attachment names no file the sender uploaded.
    #[error("no such file")]
    NoSuchFile,
    /// A port failed, or the send was interrupted (a retry with its
    /// clientMsgId tells whether it was stored).
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `invite_to_room` failed.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// The membership or blocking rules refuse it.
    #[error("refused: {0:?}")]
    Refused(Denied),
    /// No conversation has the id.
    #[error("no such conversation")]
    NoSuchConversation,
    /// No user has the invitee's id.
    #[error("no such user")]
    NoSuchUser,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `edit_message` or `delete_message` failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeMessageError {
    /// No conversation has the id.
    #[error("no such conversation")]
    NoSuchConversation,
    /// The conversation has no message with the id.
    #[error("no such message")]
    NoSuchMessage,
    /// The membership rules refuse it (not a member, not the sender).
    #[error("refused: {0:?}")]
    Refused(Denied),
    /// The message is deleted and cannot be edited (deleting it again is
    /// not an error).
    #[error("message deleted")]
    Deleted,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// Why `block_user` or `unblock_user` failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The caller named themself.
    #[error("self block")]
    Yourself,
    /// No user has the id.
    #[error("no such user")]
    NoSuchUser,
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}

/// The refusals and failures of a use case that begins as a conversation
/// use case does (`allowed`, `member_of`), in its own error type.
macro_rules! from_conversation {
    ($($error:ident),+) => {$(
        impl From<Denied> for $error {
            fn from(d: Denied) -> Self {
                Self::Refused(d)
            }
        }

        impl From<ConversationError> for $error {
            fn from(e: ConversationError) -> Self {
                match e {
                    ConversationError::NoSuchConversation => Self::NoSuchConversation,
                    ConversationError::Refused(d) => Self::Refused(d),
                    ConversationError::Unknown(e) => Self::Unknown(e),
                }
            }
        }
    )+};
}

from_conversation!(InviteError, ChangeMessageError);

impl From<Denied> for ConversationError {
    fn from(d: Denied) -> Self {
        Self::Refused(d)
    }
}

/// Why a file use case failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No such file or upload, or not one the caller may see: the same
    /// answer, so that ids cannot be probed.
    #[error("no such file")]
    NotFound,
    /// The caller's own resumable upload, past its expiry: it cannot be
    /// continued (tus answers `410 Gone`).
    #[error("the upload expired")]
    UploadExpired,
    /// The size rules refuse the upload.
    #[error(transparent)]
    Refused(#[from] crate::domain::file::UploadRefused),
    /// A port failed.
    #[error(transparent)]
    Unknown(#[from] PortError),
}
