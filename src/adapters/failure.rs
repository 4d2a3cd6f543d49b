//! The adapters' answer to a failed use case: the contract's error code and
//! the text a client reads. Every use-case error of the core turns into one
//! here, and this is the only place those texts are written.

use crate::domain::error::{
    AccountError, AuthenticateError, BlockError, ChangeMessageError, ConversationError,
    EndDeviceError, FileError, InviteError, LoginError, PortError, PresenceError, RefreshError,
    RegisterError, SendError,
};
use crate::domain::file::UploadRefused;
use crate::domain::membership::Denied;
use crate::domain::ports::OpenSessionError;
use crate::domain::user::{InvalidPassword, InvalidUsername};

/// A use case's failure as the contract answers it: one variant per error
/// code, with the text a client may see.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// `bad_request`: the request breaks a rule; the message says which.
    #[error("{0}")]
    BadRequest(String),
    /// `unauthorized`: missing or wrong credentials or token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// `forbidden`: the caller may not do this (e.g. not a member).
    #[error("{0}")]
    Forbidden(&'static str),
    /// `not_found`: the named thing does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// `conflict`: it exists already (e.g. a taken username).
    #[error("{0}")]
    Conflict(&'static str),
    /// `too_large`: the request is larger than a limit allows.
    #[error("{0}")]
    TooLarge(String),
    /// `rate_limited`: a limit was reached; trying later may work.
    #[error("{0}")]
    RateLimited(String),
    /// `internal`: something broke that the client cannot fix; the detail
    /// is for logs only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

const NO_CONVERSATION: &str = "conversation not found";
const NO_USER: &str = "user not found";
const NO_FILE: &str = "file not found";

impl ChatError {
    /// A bad request with the given explanation.
    pub fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::BadRequest(message.to_string())
    }
}

impl From<PortError> for ChatError {
    fn from(e: PortError) -> Self {
        Self::Internal(e.0)
    }
}

impl From<Denied> for ChatError {
    fn from(d: Denied) -> Self {
        Self::Forbidden(match d {
            Denied::NotMember => "not a member of this conversation",
            Denied::PrivateRoom => "this room is private; ask a member for an invitation",
            Denied::NotARoom => "this is a direct conversation, not a room",
            Denied::NotSender => "only the sender may change a message",
            Denied::Blocked => "this user does not accept this from you",
        })
    }
}

impl From<InvalidUsername> for ChatError {
    fn from(e: InvalidUsername) -> Self {
        Self::bad_request(e)
    }
}

impl From<InvalidPassword> for ChatError {
    fn from(e: InvalidPassword) -> Self {
        Self::bad_request(e)
    }
}

impl From<RegisterError> for ChatError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Taken => Self::Conflict("username is taken"),
            RegisterError::Unknown(e) => e.into(),
        }
    }
}

impl From<LoginError> for ChatError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => Self::Unauthorized("invalid username or password"),
            LoginError::Unknown(e) => e.into(),
        }
    }
}

impl From<AuthenticateError> for ChatError {
    fn from(e: AuthenticateError) -> Self {
        match e {
            AuthenticateError::InvalidToken => {
                Self::Unauthorized("missing, invalid or expired token")
            }
            AuthenticateError::Unknown(e) => e.into(),
        }
    }
}

impl From<RefreshError> for ChatError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::Invalid | RefreshError::Reused { .. } => {
                Self::Unauthorized("invalid, expired or revoked refresh token")
            }
            RefreshError::Raced => Self::Conflict(
                "this refresh token was just used by another request; use the newest one",
            ),
            RefreshError::Unknown(e) => e.into(),
        }
    }
}

impl From<EndDeviceError> for ChatError {
    fn from(e: EndDeviceError) -> Self {
        match e {
            EndDeviceError::NoSuchDevice => Self::NotFound("session not found"),
            EndDeviceError::Unknown(e) => e.into(),
        }
    }
}

impl From<AccountError> for ChatError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::WrongPassword => Self::Forbidden("the password is wrong"),
            AccountError::Unknown(e) => e.into(),
        }
    }
}

impl From<FileError> for ChatError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::NotFound => Self::NotFound(NO_FILE),
            FileError::UploadExpired => Self::NotFound("the upload expired; start a new one"),
            FileError::Refused(UploadRefused::Empty) => Self::bad_request(UploadRefused::Empty),
            FileError::Refused(r) => Self::TooLarge(r.to_string()),
            FileError::Unknown(e) => e.into(),
        }
    }
}

impl From<OpenSessionError> for ChatError {
    fn from(e: OpenSessionError) -> Self {
        match e {
            OpenSessionError::TooMany(t) => {
                Self::RateLimited(format!("at most {} sessions per user", t.limit))
            }
            OpenSessionError::Unknown(e) => e.into(),
        }
    }
}

impl From<PresenceError> for ChatError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::TooManyIds { max } => {
                Self::BadRequest(format!("userIds must list at most {max} ids"))
            }
            PresenceError::Unknown(e) => e.into(),
        }
    }
}

impl From<ConversationError> for ChatError {
    fn from(e: ConversationError) -> Self {
        match e {
            ConversationError::NoSuchConversation => Self::NotFound(NO_CONVERSATION),
            ConversationError::Refused(d) => d.into(),
            ConversationError::Unknown(e) => e.into(),
        }
    }
}

impl From<SendError> for ChatError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::NoSuchUser => Self::NotFound(NO_USER),
            SendError::NoSuchConversation => Self::NotFound(NO_CONVERSATION),
            SendError::Refused(d) => d.into(),
            SendError::NoSuchFile => Self::NotFound(NO_FILE),
            SendError::Unknown(e) => e.into(),
        }
    }
}

impl From<InviteError> for ChatError {
    fn from(e: InviteError) -> Self {
        match e {
            InviteError::NoSuchConversation => Self::NotFound(NO_CONVERSATION),
            InviteError::NoSuchUser => Self::NotFound(NO_USER),
            InviteError::Refused(d) => d.into(),
            InviteError::Unknown(e) => e.into(),
        }
    }
}

impl From<ChangeMessageError> for ChatError {
    fn from(e: ChangeMessageError) -> Self {
        match e {
            ChangeMessageError::NoSuchConversation => Self::NotFound(NO_CONVERSATION),
            ChangeMessageError::NoSuchMessage => Self::NotFound("message not found"),
            ChangeMessageError::Refused(d) => d.into(),
            ChangeMessageError::Deleted => Self::bad_request("the message is deleted"),
            ChangeMessageError::Unknown(e) => e.into(),
        }
    }
}

impl From<BlockError> for ChatError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::Yourself => Self::bad_request("you cannot block or unblock yourself"),
            BlockError::NoSuchUser => Self::NotFound(NO_USER),
            BlockError::Unknown(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::wire::error_code;

    fn answer(e: impl Into<ChatError>) -> (&'static str, String) {
        error_code(&e.into())
    }

    #[test]
    fn each_refusal_is_forbidden_and_says_which_rule() {
        assert_eq!(
            answer(ConversationError::Refused(Denied::NotMember)),
            ("forbidden", "not a member of this conversation".into())
        );
        assert_eq!(
            answer(SendError::Refused(Denied::Blocked)),
            (
                "forbidden",
                "this user does not accept this from you".into()
            )
        );
    }

    #[test]
    fn what_is_missing_is_not_found_and_named() {
        assert_eq!(
            answer(InviteError::NoSuchUser),
            ("not_found", "user not found".into())
        );
        assert_eq!(
            answer(ChangeMessageError::NoSuchMessage),
            ("not_found", "message not found".into())
        );
    }

    #[test]
    fn a_port_failure_is_internal_and_its_cause_stays_in_the_logs() {
        let e = RegisterError::Unknown(PortError(anyhow::anyhow!("disk on fire")));
        assert_eq!(answer(e), ("internal", "internal error".into()));
    }

    #[test]
    fn the_session_limit_is_rate_limited_and_names_the_limit() {
        let e = OpenSessionError::TooMany(crate::domain::presence::TooManySessions { limit: 3 });
        assert_eq!(
            answer(e),
            ("rate_limited", "at most 3 sessions per user".into())
        );
    }
}
