//! The file endpoints (docs/files.md): `POST /api/v1/files` streams an
//! upload in; `GET /api/v1/files/{id}` answers who may read it with a
//! short-lived signed link; `GET /files/{id}` serves the bytes to whoever
//! holds such a link, with ranges, validators and the headers that keep a
//! hostile file from running as a page of this origin.

use std::ops::Range;
use std::sync::Arc;

use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::body::{bearer, query_param};
use super::error::{ApiError, json_response};
use super::{HttpBody, HttpResponse, HttpState};
use crate::adapters::blob::BlobError;
use crate::adapters::files::{Files, Link, MakeError, StageError, Variant};
use crate::adapters::media;
use crate::adapters::wire::{FileDto, rfc3339};
use crate::domain::error::FileError;
use crate::domain::file::{Attachment, FileInfo};
use crate::domain::{FileId, Timestamp, UserId};

/// The header that may carry an upload's file name, percent-encoded.
const NAME_HEADER: &str = "x-file-name";

/// `POST /api/v1/files`: the raw body is the file, `Content-Length`
/// bytes of it, named by `?name=` or `X-File-Name`.
pub(super) async fn upload(
    state: &Arc<HttpState>,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let auth = state.service().authenticate(bearer(&req)).await?;
    let files = state.files();
    admit_rate(files, &auth.user.id)?;
    let length = content_length(req.headers())?;
    let name = query_param(&req, "name")
        .or_else(|| header_name(req.headers()))
        .unwrap_or_default();
    state.service().admit_upload(&auth.user.id, length).await?;
    let staged = files
        .stage(req.into_body(), length, false)
        .await
        .map_err(stage_error)?;
    if staged.truncated {
        return Err(ApiError::bad_request(format!(
            "the body ended after {} of the {length} bytes Content-Length announced; nothing was stored",
            staged.size
        )));
    }
    let file = files
        .make(state.service(), &auth.user.id, staged, &name, None)
        .await
        .map_err(make_error)?;
    state.metrics().files_uploaded.inc();
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "file": dto(&file) }),
    ))
}

/// A file as the API shows it.
pub(super) fn dto(file: &FileInfo) -> serde_json::Value {
    let attachment = Attachment::from(file);
    serde_json::to_value(FileDto::from(&attachment)).expect("plain data serializes")
}

/// `429` past the uploads a user may start a minute.
pub(super) fn admit_rate(files: &Files, user: &UserId) -> Result<(), ApiError> {
    use governor::clock::Clock;
    files.uploads.check_key(user).map_err(|not_until| {
        ApiError::rate_limited(
            "too many uploads; try again shortly",
            not_until.wait_time_from(files.uploads.clock().now()),
        )
    })
}

/// The declared length of the body: `411` without one.
fn content_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "bad_request",
            "Content-Length is required: send the file's size",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length must be a number of bytes"))
}

/// The `X-File-Name` header, percent-decoded as UTF-8.
fn header_name(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(NAME_HEADER)?.to_str().ok()?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

pub(super) fn stage_error(e: StageError) -> ApiError {
    match e {
        StageError::TooLong => ApiError::bad_request("the body is longer than its Content-Length"),
        StageError::Io(e) => ApiError::from(crate::domain::error::PortError(e.into())),
    }
}

pub(super) fn make_error(e: MakeError) -> ApiError {
    match e {
        MakeError::File(e) => e.into(),
        MakeError::Blob(e) => ApiError::from(crate::domain::error::PortError(e.into())),
        MakeError::Io(e) => ApiError::from(crate::domain::error::PortError(e.into())),
    }
}

/// `GET /api/v1/files/{id}` and `.../thumbnail`: `302` to a signed link
/// for the caller, if they may read the file (`404` otherwise, as for no
/// file at all); with `?redirect=false`, the link in a JSON answer.
pub(super) async fn link(
    state: &Arc<HttpState>,
    req: &Request<Incoming>,
    id: &str,
    variant: Variant,
) -> Result<HttpResponse, ApiError> {
    let auth = state.service().authenticate(bearer(req)).await?;
    let file = state
        .service()
        .readable_file(&auth.user.id, &FileId::new(id))
        .await?;
    if variant == Variant::Thumbnail && file.thumbnail.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this file has no thumbnail",
        ));
    }
    let files = state.files();
    let (url, expires) = files.link(&file.id, variant, &auth.user.id, state.service());
    if query_param(req, "redirect").as_deref() == Some("false") {
        let thumbnail = file.thumbnail.as_ref().map(|_| {
            files
                .link(&file.id, Variant::Thumbnail, &auth.user.id, state.service())
                .0
        });
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "file": dto(&file),
                "url": url,
                "thumbnailUrl": thumbnail,
                "expiresAt": rfc3339(Timestamp::from_millis(expires.saturating_mul(1000))),
            }),
        ));
    }
    let mut res = Response::new(HttpBody::default());
    *res.status_mut() = StatusCode::FOUND;
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|_| ApiError::bad_request("unusable file id"))?,
    );
    Ok(res)
}

/// `GET` or `HEAD /files/{id}` (and `.../thumbnail`) with a signed link's
/// `u`, `e` and `s`: the bytes, if the link is good and its user may
/// still read the file.
pub(super) async fn serve(
    state: &Arc<HttpState>,
    req: &Request<Incoming>,
    id: &str,
    variant: Variant,
) -> Result<HttpResponse, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this file link is invalid",
        )
    };
    let user = query_param(req, "u").ok_or_else(invalid)?;
    let expires = query_param(req, "e")
        .and_then(|e| e.parse::<i64>().ok())
        .ok_or_else(invalid)?;
    let sig = query_param(req, "s").ok_or_else(invalid)?;
    let link = Link {
        file: FileId::new(id),
        variant,
        user: UserId::new(user),
        expires,
    };
    let files = state.files();
    if !files.signer.verify(&link, &sig) {
        return Err(invalid());
    }
    if state.service().now().millis().div_euclid(1000) > expires {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this file link has expired; ask for a new one",
        ));
    }
    // Asked again: a member who left since the link was made reads no more.
    let file = state
        .service()
        .readable_file(&link.user, &link.file)
        .await?;
    match variant {
        Variant::Original => serve_original(files, req, &file).await,
        Variant::Thumbnail => serve_thumbnail(files, req, &file).await,
    }
}

/// A file's bytes, all or the range asked for.
async fn serve_original(
    files: &Files,
    req: &Request<Incoming>,
    file: &FileInfo,
) -> Result<HttpResponse, ApiError> {
    let etag = format!("\"{}\"", file.sha256);
    let size = file.size;
    let inline = media::shown_inline(&file.content_type);
    let content_type = if inline {
        file.content_type.as_str()
    } else {
        // Whatever it is, the browser is not to take it for anything.
        "application/octet-stream"
    };
    let mut headers = file_headers(files, content_type, &file.name, inline, &etag);
    if matches_etag(req.headers().get(header::IF_NONE_MATCH), &etag) {
        return Ok(with_headers(
            StatusCode::NOT_MODIFIED,
            headers,
            HttpBody::default(),
        ));
    }
    let Ok(range) = requested_range(req.headers(), &etag, size) else {
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{size}")).expect("digits"),
        );
        let mut res = super::error::error_response(&ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bad_request",
            format!("the range is outside the file's {size} bytes"),
        ));
        // The error's own type and no disposition: it is not the file.
        for name in [header::CONTENT_RANGE, header::ETAG, header::ACCEPT_RANGES] {
            if let Some(value) = headers.remove(&name) {
                res.headers_mut().insert(name, value);
            }
        }
        return Ok(res);
    };
    let (status, length) = match &range {
        Some(r) => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
                    .expect("digits"),
            );
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if req.method() == Method::HEAD {
        return Ok(with_headers(status, headers, HttpBody::default()));
    }
    let stream = files
        .read(file, Variant::Original, range)
        .await
        .map_err(blob_error)?;
    let body = StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync();
    Ok(with_headers(status, headers, body))
}

/// An image's thumbnail: a few kilobytes, read whole and sniffed (PNG or
/// JPEG), always whole (a range is ignored, as RFC 9110 allows).
async fn serve_thumbnail(
    files: &Files,
    req: &Request<Incoming>,
    file: &FileInfo,
) -> Result<HttpResponse, ApiError> {
    let sha = file.thumbnail.as_deref().ok_or(FileError::NotFound)?;
    let etag = format!("\"{sha}\"");
    let stream = files
        .read(file, Variant::Thumbnail, None)
        .await
        .map_err(blob_error)?;
    let bytes: Vec<u8> = stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .map_err(|e| blob_error(BlobError::Other(e.to_string())))?;
    let sniffed = media::sniff(&bytes);
    let name = format!("thumbnail-{}", file.name);
    let mut headers = file_headers(files, sniffed.content_type, &name, sniffed.inline, &etag);
    if matches_etag(req.headers().get(header::IF_NONE_MATCH), &etag) {
        return Ok(with_headers(
            StatusCode::NOT_MODIFIED,
            headers,
            HttpBody::default(),
        ));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = if req.method() == Method::HEAD {
        HttpBody::default()
    } else {
        super::full(bytes)
    };
    Ok(with_headers(StatusCode::OK, headers, body))
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::NotFound => FileError::NotFound.into(),
        other => ApiError::from(crate::domain::error::PortError(other.into())),
    }
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: HttpBody) -> HttpResponse {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// The headers of every file answer: its type (only the allowlist as
/// itself), how it is shown, its validator, and what keeps it from acting
/// as a page.
fn file_headers(
    files: &Files,
    content_type: &str,
    name: &str,
    inline: bool,
    etag: &str,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&media::content_disposition(name, inline)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let corp = if files.settings.base_url.is_empty() {
        "same-origin"
    } else {
        // Files served from an origin of their own are shown by the app's.
        "cross-origin"
    };
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static(corp),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    h
}

/// Whether an `If-None-Match` names `etag` (or `*`).
fn matches_etag(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The one byte range a `Range` header asks for, as `start..end`; `None`
/// for the whole file (no header, several ranges, a unit other than bytes,
/// or an `If-Range` that does not match); `Err` for a range outside it.
fn requested_range(headers: &HeaderMap, etag: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Ok(None);
    }
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        // bytes=A-: from A to the end.
        (Ok(a), Err(_)) if last.is_empty() => a..size,
        (Ok(a), Ok(b)) if a <= b => a..b.saturating_add(1).min(size),
        _ => return Ok(None),
    };
    if range.start >= size || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        requested_range(&h, "\"e\"", size)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-0", 10), Ok(Some(0..1)));
        assert_eq!(range("bytes=2-5", 10), Ok(Some(2..6)));
        assert_eq!(range("bytes=5-", 10), Ok(Some(5..10)));
        assert_eq!(range("bytes=-3", 10), Ok(Some(7..10)));
        assert_eq!(range("bytes=-30", 10), Ok(Some(0..10)));
        assert_eq!(range("bytes=8-100", 10), Ok(Some(8..10)));
        assert_eq!(range("bytes=0-18446744073709551615", 10), Ok(Some(0..10)));
        assert_eq!(range("bytes=10-", 10), Err(()));
        assert_eq!(range("bytes=-0", 10), Err(()));
        // Not understood or not one range: the whole file.
        assert_eq!(range("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(range("lines=1-2", 10), Ok(None));
        assert_eq!(range("bytes=5-2", 10), Ok(None));
        assert_eq!(range("bytes=x-y", 10), Ok(None));
    }

    #[test]
    fn if_range_with_another_etag_asks_for_the_whole_file() {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&h, "\"e\"", 10), Ok(None));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"e\""));
        assert_eq!(requested_range(&h, "\"e\"", 10), Ok(Some(0..1)));
    }

    #[test]
    fn if_none_match_matches_the_etag_in_a_list_or_a_star() {
        let e = "\"abc\"";
        assert!(matches_etag(Some(&HeaderValue::from_static("\"abc\"")), e));
        assert!(matches_etag(
            Some(&HeaderValue::from_static("\"x\", W/\"abc\"")),
            e
        ));
        assert!(matches_etag(Some(&HeaderValue::from_static("*")), e));
        assert!(!matches_etag(Some(&HeaderValue::from_static("\"x\"")), e));
        assert!(!matches_etag(None, e));
    }
}
