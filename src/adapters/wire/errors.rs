//! Use-case errors as the contract names them: the one place a core error
//! becomes a wire code and the text a client may see (HTTP maps the code
//! to a status).

use crate::adapters::failure::ChatError;

/// The contract's code for a use-case error, and the text a client may see.
pub fn error_code(e: &ChatError) -> (&'static str, String) {
    let code = match e {
        ChatError::BadRequest(_) => "bad_request",
        ChatError::Unauthorized(_) => "unauthorized",
        ChatError::Forbidden(_) => "forbidden",
        ChatError::NotFound(_) => "not_found",
        ChatError::Conflict(_) => "conflict",
        ChatError::TooLarge(_) => "too_large",
        ChatError::RateLimited(_) => "rate_limited",
        ChatError::Internal(_) => "internal",
    };
    // Display of Internal is a fixed "internal error": the cause stays in logs.
    (code, e.to_string())
}
