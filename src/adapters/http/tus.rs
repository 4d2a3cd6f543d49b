//! Resumable uploads with the tus 1.0 protocol (<https://tus.io/protocols/resumable-upload>):
//! core, creation, termination, expiration and checksum (SHA-1 and
//! SHA-256), under `/api/v1/uploads`, with the bearer token on every
//! request. Progress is a row in the database and each chunk a blob
//! (`parts/{id}/{offset}`), so any node takes the next chunk of an upload
//! another began. The chunk that completes an upload makes the file exactly
//! as `POST /api/v1/files` makes one, and its answer names it in
//! `X-Confab-File-Id`.

use std::sync::Arc;

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::bearer;
use super::error::{ApiError, error_response};
use super::files::{admit_rate, make_error, stage_error};
use super::{HttpBody, HttpResponse, HttpState};
use crate::adapters::files::Staged;
use crate::adapters::media;
use crate::domain::error::{FileError, PortError};
use crate::domain::file::Upload;
use crate::domain::{Timestamp, UploadId};

/// The protocol version spoken, the only one.
const VERSION: &str = "1.0.0";
/// The extensions supported.
const EXTENSIONS: &str = "creation,termination,expiration,checksum";
/// The checksum algorithms supported.
const CHECKSUMS: &str = "sha1,sha256";
/// The type of a PATCH's body.
const OFFSET_TYPE: &str = "application/offset+octet-stream";
/// Where uploads are.
const UPLOADS: &str = "/api/v1/uploads";
/// The answer header naming the file a completed upload made.
const FILE_ID_HEADER: &str = "x-confab-file-id";
/// The request header that names the method a client could not send.
const METHOD_OVERRIDE: &str = "x-http-method-override";

/// The blob key of an upload's chunk that starts at `offset`: zero-padded,
/// so that listing sorts the chunks in order.
pub fn part_key(upload: &UploadId, offset: u64) -> String {
    format!("parts/{upload}/{offset:020}")
}

/// The method a tus request stands for: `X-HTTP-Method-Override` when
/// present (the core protocol says it replaces the request's own, for
/// clients that cannot send PATCH or DELETE), else `None`.
pub(super) fn method_override(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(METHOD_OVERRIDE)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_ascii_uppercase())
}

/// Serves a request under `/api/v1/uploads` as `method` (the request's
/// own or its override): every answer, error or not, says
/// `Tus-Resumable`, and a HEAD's has no body.
pub(super) async fn serve(
    state: &Arc<HttpState>,
    req: hyper::Request<Incoming>,
    method: &str,
    id: Option<&str>,
) -> HttpResponse {
    let result = match (method, id) {
        ("OPTIONS", _) => Ok(options(state)),
        ("POST", None) => create(state, &req).await,
        ("HEAD", Some(id)) => head(state, &req, id).await,
        ("PATCH", Some(id)) => patch(state, req, id).await,
        ("DELETE", Some(id)) => terminate(state, &req, id).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            format!("{method} is not a tus request here"),
        )),
    };
    let mut res = result.unwrap_or_else(|e| {
        state.metrics().error(e.code);
        failed(e)
    });
    if method == "HEAD" {
        *res.body_mut() = HttpBody::default();
    }
    res
}

/// A tus answer: `Tus-Resumable` on every one.
fn answer(status: StatusCode) -> HttpResponse {
    let mut res = Response::new(HttpBody::default());
    *res.status_mut() = status;
    res.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    res
}

/// An error answer with the tus header.
fn failed(e: ApiError) -> HttpResponse {
    let mut res = error_response(&e);
    res.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    res
}

/// `OPTIONS`: what this server supports. No token and no
/// `Tus-Resumable` needed (the protocol says to ignore it here).
fn options(state: &HttpState) -> HttpResponse {
    let mut res = answer(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUMS),
    );
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.files().settings.max_file_bytes),
    );
    res
}

/// `412` (with `Tus-Version`) unless the request speaks tus 1.0.0: the
/// protocol forbids processing it otherwise.
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get("tus-resumable").and_then(|v| v.to_str().ok()) == Some(VERSION) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "bad_request",
        "this server speaks tus 1.0.0 only: send Tus-Resumable: 1.0.0",
    ))
}

/// [`check_version`]'s refusal as an answer, naming the version spoken.
fn version_refused(e: ApiError) -> HttpResponse {
    let mut res = failed(e);
    res.headers_mut()
        .insert("tus-version", HeaderValue::from_static(VERSION));
    res
}

/// A non-negative integer header (digits only, as the protocol defines
/// them): `None` when absent, an error when malformed.
fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer")))
}

/// The `filename` (or `name`) of `Upload-Metadata`: comma-separated
/// `key base64value` pairs, a value possibly empty.
fn metadata_name(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers.get("upload-metadata") else {
        return Ok(String::new());
    };
    let bad =
        || ApiError::bad_request("Upload-Metadata must be comma-separated `key base64` pairs");
    let raw = raw.to_str().map_err(|_| bad())?;
    for pair in raw.split(',') {
        let mut parts = pair.trim().splitn(2, ' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default().trim();
        if key == "filename" || key == "name" {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| bad())?;
            return String::from_utf8(bytes).map_err(|_| bad());
        }
    }
    Ok(String::new())
}

/// `Upload-Expires`, as an HTTP date.
fn http_date(t: Timestamp) -> HeaderValue {
    let date = chrono::DateTime::from_timestamp_millis(t.millis()).unwrap_or_default();
    HeaderValue::from_str(&date.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .expect("a date is a header value")
}

/// `POST /api/v1/uploads`: a new upload of `Upload-Length` bytes, refused
/// as `POST /api/v1/files` refuses one (413 over the size or the quota,
/// 400 when empty), before any byte is sent.
async fn create(
    state: &Arc<HttpState>,
    req: &hyper::Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    if let Err(e) = check_version(req.headers()) {
        return Ok(version_refused(e));
    }
    let auth = state.service().authenticate(bearer(req)).await?;
    let Some(length) = number(req.headers(), "upload-length")? else {
        return Err(ApiError::bad_request(
            "Upload-Length is required (this server does not take deferred lengths)",
        ));
    };
    let raw_name = metadata_name(req.headers())?;
    // Kept only when given, so that HEAD echoes no name the client did not send.
    let name = if raw_name.is_empty() {
        String::new()
    } else {
        media::sanitize_name(&raw_name)
    };
    admit_rate(state.files(), &auth.user.id)?;
    let now = state.service().now();
    let upload = Upload {
        id: UploadId::new(uuid::Uuid::new_v4().simple().to_string()),
        user: auth.user.id.clone(),
        length,
        offset: 0,
        name,
        created_at: now,
        expires_at: Timestamp::from_millis(
            now.millis()
                .saturating_add(state.files().settings.upload_ttl.as_millis() as i64),
        ),
        file: None,
    };
    let upload = state.service().start_upload(upload).await?;
    let mut res = answer(StatusCode::CREATED);
    let location = format!("{UPLOADS}/{}", upload.id);
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("an id is a header value"),
    );
    res.headers_mut()
        .insert("upload-expires", http_date(upload.expires_at));
    Ok(res)
}

/// The caller's upload `id`: `404` for none or another's, `410` for an
/// expired one of theirs.
async fn upload_for(
    state: &HttpState,
    req: &hyper::Request<Incoming>,
    id: &str,
) -> Result<Upload, ApiError> {
    let auth = state.service().authenticate(bearer(req)).await?;
    match state
        .service()
        .upload_of(&auth.user.id, &UploadId::new(id))
        .await
    {
        Ok(upload) => Ok(upload),
        Err(FileError::UploadExpired) => Err(ApiError::new(
            StatusCode::GONE,
            "not_found",
            "this upload expired; start a new one",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `HEAD`: how far the upload got, never cached.
async fn head(
    state: &Arc<HttpState>,
    req: &hyper::Request<Incoming>,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    if let Err(e) = check_version(req.headers()) {
        return Ok(version_refused(e));
    }
    let upload = upload_for(state, req, id).await?;
    let mut res = answer(StatusCode::OK);
    let h = res.headers_mut();
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    h.insert("upload-expires", http_date(upload.expires_at));
    if !upload.name.is_empty() {
        // Only the name is kept of the metadata: it is what comes back.
        let encoded = base64::engine::general_purpose::STANDARD.encode(&upload.name);
        if let Ok(value) = HeaderValue::from_str(&format!("filename {encoded}")) {
            h.insert("upload-metadata", value);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(file) = &upload.file {
        // Complete: a client that missed the last PATCH's answer learns here.
        h.insert(FILE_ID_HEADER, file_id_value(file));
    }
    Ok(res)
}

fn file_id_value(file: &crate::domain::FileId) -> HeaderValue {
    HeaderValue::from_str(file.as_str()).expect("an id is a header value")
}

/// `DELETE`: ends an upload; its chunks go with the next sweep.
async fn terminate(
    state: &Arc<HttpState>,
    req: &hyper::Request<Incoming>,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    if let Err(e) = check_version(req.headers()) {
        return Ok(version_refused(e));
    }
    let upload = upload_for(state, req, id).await?;
    state.service().forget_upload(&upload.id).await?;
    Ok(answer(StatusCode::NO_CONTENT))
}

/// A checksum a PATCH announced: `Upload-Checksum: <algorithm> <base64>`.
enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

/// The PATCH's `Upload-Checksum`: `400` for an algorithm not supported or
/// a malformed value, as the checksum extension says.
fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
    let Some(raw) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "Upload-Checksum must be `<algorithm> <base64>`, the algorithm one of {CHECKSUMS}"
        ))
    };
    let raw = raw.to_str().map_err(|_| bad())?;
    let (algorithm, digest) = raw.trim().split_once(' ').ok_or_else(bad)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| bad())?;
    match algorithm {
        "sha1" => Ok(Some(Checksum::Sha1(digest))),
        "sha256" => Ok(Some(Checksum::Sha256(digest))),
        _ => Err(bad()),
    }
}

/// Whether the staged chunk has the announced checksum.
fn checksum_matches(expected: &Checksum, staged: &Staged) -> bool {
    match expected {
        Checksum::Sha1(want) => staged
            .sha1
            .is_some_and(|got| got.as_slice() == want.as_slice()),
        // The staged digest is kept in hex, as every file's is.
        Checksum::Sha256(want) => crate::adapters::files::hex(want) == staged.sha256,
    }
}

/// `PATCH`: the next chunk, at `Upload-Offset`. What arrives of a chunk
/// whose connection drops is kept (the client resumes after it) unless a
/// checksum was announced, which only a whole chunk can match.
async fn patch(
    state: &Arc<HttpState>,
    req: hyper::Request<Incoming>,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    if let Err(e) = check_version(req.headers()) {
        return Ok(version_refused(e));
    }
    let is_offset_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_TYPE));
    if !is_offset_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            format!("a PATCH's Content-Type must be {OFFSET_TYPE}"),
        ));
    }
    let upload = upload_for(state, &req, id).await?;
    let Some(offset) = number(req.headers(), "upload-offset")? else {
        return Err(ApiError::bad_request("Upload-Offset is required"));
    };
    if offset != upload.offset {
        return Ok(conflict(
            format!("the upload is at offset {}, not {offset}", upload.offset),
            upload.offset,
        ));
    }
    let expected = checksum(req.headers())?;
    let remaining = upload.length - upload.offset;
    let declared = number(req.headers(), header::CONTENT_LENGTH.as_str())?;
    if declared.is_some_and(|n| n > remaining) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the chunk is longer than the {remaining} bytes the upload still expects"),
        ));
    }
    // A task of its own, so that a connection dropped mid-body (which
    // drops this request's future) still stores what arrived of it.
    let state = state.clone();
    let body = req.into_body();
    tokio::spawn(async move { receive(&state, upload, body, expected, declared).await })
        .await
        .unwrap_or_else(|e| Err(PortError(anyhow::anyhow!("a PATCH's task failed: {e}")).into()))
}

/// `409` with where the upload is.
fn conflict(message: String, offset: u64) -> HttpResponse {
    let mut res = failed(ApiError::new(StatusCode::CONFLICT, "conflict", message));
    res.headers_mut()
        .insert("upload-offset", HeaderValue::from(offset));
    res
}

/// Takes a PATCH's body: stages it, checks its checksum, stores it as the
/// chunk at the upload's offset, and makes the file when it was the last.
async fn receive(
    state: &Arc<HttpState>,
    mut upload: Upload,
    body: Incoming,
    expected: Option<Checksum>,
    declared: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let files = state.files();
    let remaining = upload.length - upload.offset;
    let wants_sha1 = matches!(expected, Some(Checksum::Sha1(_)));
    let mut staged = files
        .stage(body, remaining, wants_sha1)
        .await
        .map_err(stage_error)?;
    let complete_chunk = declared.is_none_or(|n| staged.size == n) && !staged.interrupted;
    if let Some(expected) = &expected {
        if !complete_chunk {
            return Err(ApiError::bad_request(
                "the chunk ended early; its checksum cannot be checked, nothing was kept",
            ));
        }
        if !checksum_matches(expected, &staged) {
            return Err(ApiError::new(
                StatusCode::from_u16(460).expect("a valid status"),
                "bad_request",
                "the chunk does not match its Upload-Checksum; nothing was kept",
            ));
        }
    }
    if staged.size > 0 {
        let to = upload.offset + staged.size;
        // The offset moves first, so that exactly one of two PATCHes at
        // one offset writes its chunk under it.
        if !state.service().advance_upload(&upload, to).await? {
            let now = state
                .service()
                .upload_of(&upload.user, &upload.id)
                .await
                .map_or(upload.offset, |u| u.offset);
            return Ok(conflict(
                "another request moved this upload on; ask where it is with HEAD".to_owned(),
                now,
            ));
        }
        let key = part_key(&upload.id, upload.offset);
        if let Err(e) = files.put_staged(&key, &mut staged).await {
            // Move the offset back; if that fails too, completing finds
            // the gap and says so.
            let _ = state
                .service()
                .advance_upload(
                    &Upload {
                        offset: to,
                        ..upload.clone()
                    },
                    upload.offset,
                )
                .await;
            return Err(make_error(e.into()));
        }
        upload.offset = to;
    }
    let mut res = answer(StatusCode::NO_CONTENT);
    res.headers_mut()
        .insert("upload-offset", HeaderValue::from(upload.offset));
    res.headers_mut()
        .insert("upload-expires", http_date(upload.expires_at));
    if let Some(file) = &upload.file {
        // Complete already: the answer the client may have missed.
        res.headers_mut()
            .insert(FILE_ID_HEADER, file_id_value(file));
    } else if upload.offset == upload.length {
        let file = match files.assemble(&upload).await {
            Ok(staged) => files
                .make(
                    state.service(),
                    &upload.user,
                    staged,
                    &upload.name,
                    Some(&upload.id),
                )
                .await
                .map_err(make_error),
            Err(e) => Err(make_error(e)),
        };
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                // A failed upload starts again from nothing.
                state.service().forget_upload(&upload.id).await?;
                return Err(e);
            }
        };
        res.headers_mut()
            .insert(FILE_ID_HEADER, file_id_value(&file.id));
        state.metrics().files_uploaded.inc();
        files.drop_parts(&upload.id).await;
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn sha256(bytes: &[u8]) -> Vec<u8> {
        Sha256::digest(bytes).to_vec()
    }

    #[test]
    fn metadata_names_the_file_by_filename_or_name() {
        let mut h = HeaderMap::new();
        h.insert(
            "upload-metadata",
            HeaderValue::from_static("filetype aW1hZ2UvcG5n,filename Y2F0LnBuZw=="),
        );
        assert_eq!(metadata_name(&h).unwrap(), "cat.png");
        h.insert(
            "upload-metadata",
            HeaderValue::from_static("name w6l0w6kuanBn"),
        );
        assert_eq!(metadata_name(&h).unwrap(), "été.jpg");
        h.insert("upload-metadata", HeaderValue::from_static("filename !!!"));
        assert!(metadata_name(&h).is_err());
        assert_eq!(metadata_name(&HeaderMap::new()).unwrap(), "");
    }

    #[test]
    fn checksums_name_their_algorithm() {
        let mut h = HeaderMap::new();
        let digest = base64::engine::general_purpose::STANDARD.encode(sha256(b"abc"));
        h.insert(
            "upload-checksum",
            HeaderValue::from_str(&format!("sha256 {digest}")).unwrap(),
        );
        assert!(matches!(checksum(&h).unwrap(), Some(Checksum::Sha256(d)) if d == sha256(b"abc")));
        h.insert("upload-checksum", HeaderValue::from_static("md5 AAAA"));
        assert!(checksum(&h).is_err());
        assert!(checksum(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn integer_headers_are_digits_only() {
        let mut h = HeaderMap::new();
        assert!(number(&h, "upload-length").unwrap().is_none());
        h.insert("upload-length", HeaderValue::from_static(" 42 "));
        assert_eq!(number(&h, "upload-length").unwrap(), Some(42));
        for bad in ["+5", "-1", "", "1e3", "99999999999999999999"] {
            h.insert("upload-length", HeaderValue::from_static(bad));
            assert!(number(&h, "upload-length").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_method_override_names_the_method() {
        let mut h = HeaderMap::new();
        assert_eq!(method_override(&h), None);
        h.insert(METHOD_OVERRIDE, HeaderValue::from_static("patch"));
        assert_eq!(method_override(&h).as_deref(), Some("PATCH"));
        h.insert(METHOD_OVERRIDE, HeaderValue::from_static(" "));
        assert_eq!(method_override(&h), None);
    }

    #[test]
    fn part_keys_sort_in_offset_order() {
        let id = UploadId::new("u");
        assert!(part_key(&id, 9) < part_key(&id, 10));
        assert_eq!(part_key(&id, 5), "parts/u/00000000000000000005");
    }
}
