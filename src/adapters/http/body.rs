//! What a request carries, read within its limits: the JSON body of
//! register and login, the bearer token, query parameters.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use serde_json::{Map, Value};

use super::MAX_BODY_BYTES;
use super::error::ApiError;

/// The bearer token of the `Authorization` header.
pub(super) fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of query parameter `name`, decoded.
pub(super) fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a JSON object body: 413 over 64 KiB, 400 for anything malformed,
/// 408 when it takes longer than `timeout` to arrive.
pub(super) async fn json_object(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Map<String, Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let read = read_body(body, timeout);
    if let Err(refused) = json_headers(&parts.headers) {
        // Read what the client is still sending before answering.
        let _ = read.await;
        return Err(refused);
    }
    json_body(&read.await?)
}

/// Most bytes of a refused body that are read and thrown away before the
/// answer: a client still writing its body then reads the `413` (or
/// `400`), where an answer sent at once would meet a broken pipe on its
/// side. Past this much the connection is cut short.
const DRAIN_BYTES: usize = 1 << 20;

/// A body of at most [`MAX_BODY_BYTES`]: `413` for a longer one (read on,
/// and thrown away, up to [`DRAIN_BYTES`]), `408` when it takes longer
/// than `timeout`.
async fn read_body(mut body: Incoming, timeout: Duration) -> Result<Bytes, ApiError> {
    let read = async {
        let mut kept = Vec::new();
        let mut seen = 0;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen <= MAX_BODY_BYTES {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN_BYTES {
                break;
            }
        }
        if seen > MAX_BODY_BYTES {
            return Err(ApiError::too_large());
        }
        Ok(Bytes::from(kept))
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            "the request body did not arrive in time",
        )
    })?
}

/// What a JSON body's headers must say before it is read: 413 when they
/// declare more than 64 KiB, 400 without `Content-Type: application/json`.
pub(super) fn json_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::bad_request(
            "expected a JSON body (Content-Type: application/json)",
        ));
    }
    Ok(())
}

/// A body read within the limit, as a JSON object: 400 for anything else.
pub(super) fn json_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(_) => Err(ApiError::bad_request("the body is not valid JSON")),
    }
}

/// The `username` and `password` strings of a register or login body.
pub(super) fn credentials_in(body: &Map<String, Value>) -> Result<(String, String), ApiError> {
    Ok((
        string_field(body, "username")?,
        string_field(body, "password")?,
    ))
}

/// The string field `name` of a JSON body: 400 when missing or not a string.
pub(super) fn string_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    optional_string(body, name)?
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required and must be a string")))
}

/// The string field `name` of a JSON body, if there is one (`null` is
/// none): 400 when it is anything but a string.
pub(super) fn optional_string(
    body: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}
