//! Error replies: the contract's `{error: {code, message}}` with the
//! status its code calls for.

use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use tracing::error;

use super::HttpResponse;
use crate::adapters::failure::ChatError;
use crate::adapters::wire::{self, ErrorDto};

/// An HTTP error reply: status and the contract's `{error: {code, message}}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    /// The contract's code, counted by the caller.
    pub(super) code: &'static str,
    message: String,
    /// Seconds to send as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error reply of `status` with `code` and `message`.
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `429 rate_limited`, to be retried after `wait`.
    pub(super) fn rate_limited(message: &str, wait: Duration) -> Self {
        // Whole seconds, rounded up, so that a retry on time is let in.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// `400 bad_request`.
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `413 too_large`: a body over [`super::MAX_BODY_BYTES`].
    pub(super) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is larger than 64 KiB",
        )
    }
}

/// Any use case's error, through the adapters' [`ChatError`], so that a
/// handler's `?` answers it with the contract's code and text.
impl<E: Into<ChatError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        let e: ChatError = e.into();
        if let ChatError::Internal(cause) = &e {
            error!(error = ?cause, "request failed");
        }
        let (code, message) = wire::error_code(&e);
        let status = match code {
            "bad_request" => StatusCode::BAD_REQUEST,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" => StatusCode::CONFLICT,
            "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
            "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, code, message)
    }
}

/// `body` as JSON, with `status`.
pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("response DTOs serialize");
    let mut res = Response::new(super::full(Bytes::from(bytes)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The reply for `e`, with its `Retry-After` if it has one.
pub(super) fn error_response(e: &ApiError) -> HttpResponse {
    let body = json!({ "error": ErrorDto { code: e.code, message: &e.message } });
    let mut res = json_response(e.status, &body);
    if let Some(secs) = e.retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    res
}
