//! The errors a use case can end in, one variant per answer a client can get.
//! Adapters turn them into the contract's error codes; infrastructure
//! failures arrive here opaque and leave as `internal` without detail.

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request breaks a rule; the message says which.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials or token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The caller may not do this (e.g. not a member).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// It exists already (e.g. a taken username).
    #[error("{0}")]
    Conflict(&'static str),
    /// A limit was reached; trying later may work.
    #[error("{0}")]
    RateLimited(String),
    /// Something broke that the client cannot fix; the detail is for logs only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ChatError {
    /// A bad request with the given explanation.
    pub fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::BadRequest(message.to_string())
    }
}

impl From<super::membership::Denied> for ChatError {
    fn from(d: super::membership::Denied) -> Self {
        ChatError::Forbidden(d.reason())
    }
}

/// An infrastructure failure in a port adapter, opaque to the core.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PortError(#[from] pub anyhow::Error);

impl From<PortError> for ChatError {
    fn from(e: PortError) -> Self {
        ChatError::Internal(e.0)
    }
}
