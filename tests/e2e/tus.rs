//! Resumable uploads (tus 1.0 at `/api/v1/uploads`): the real
//! `tus-js-client` uploading and resuming against the server, and raw HTTP
//! for each rule of the protocol's core, creation, termination, expiration
//! and checksum extensions that a client meets.
//!
//! The Node test needs `node` and `npm`: tus-js-client is installed into
//! `target/tus-node` when missing. Without them it is skipped, unless
//! `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::helpers::{Account, Backend, TestServer, WAIT, on_each_backend};

/// The one version of the protocol spoken.
const TUS: &str = "1.0.0";
/// A PATCH body's type.
const OFFSET_TYPE: &str = "application/offset+octet-stream";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` bytes that differ from one run of bytes to the next (no two
/// chunks alike, so a chunk stored at the wrong offset shows).
fn bytes_of(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tus request: the version header and the bearer token.
fn tus(s: &TestServer, method: Method, path: &str, token: &str) -> RequestBuilder {
    s.http()
        .request(method, s.url(path))
        .header("Tus-Resumable", TUS)
        .bearer_auth(token)
}

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Status and the contract's error code of an error answer, after checking
/// it says `Tus-Resumable`.
async fn refused(res: Response) -> (u16, String) {
    let status = res.status().as_u16();
    assert_eq!(header(&res, "tus-resumable"), Some(TUS), "{status}");
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str();
    assert!(
        code.is_some() && body["error"]["message"].is_string(),
        "{status}: {body}"
    );
    (status, code.unwrap().to_owned())
}

/// Creates an upload of `length` bytes: its path.
async fn create(s: &TestServer, who: &Account, length: u64, name: &str) -> String {
    let res = tus(s, Method::POST, "/api/v1/uploads", &who.token)
        .header("Upload-Length", length)
        .header(
            "Upload-Metadata",
            format!("filename {},filetype ", b64(name.as_bytes())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "tus-resumable"), Some(TUS));
    let expires = header(&res, "upload-expires").expect("Upload-Expires");
    chrono::DateTime::parse_from_rfc2822(expires).expect("an HTTP date");
    let location = header(&res, "location").expect("Location").to_owned();
    assert!(location.starts_with("/api/v1/uploads/"), "{location}");
    location
}

/// A PATCH of `body` at `offset`, with `extra` headers.
async fn patch(
    s: &TestServer,
    who: &Account,
    path: &str,
    offset: u64,
    body: &[u8],
    extra: &[(&str, String)],
) -> Response {
    let mut req = tus(s, Method::PATCH, path, &who.token)
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Offset", offset);
    for (name, value) in extra {
        req = req.header(*name, value);
    }
    req.body(body.to_vec()).send().await.unwrap()
}

/// `HEAD`: status and offset.
async fn head(s: &TestServer, who: &Account, path: &str) -> (u16, Option<u64>) {
    let res = tus(s, Method::HEAD, path, &who.token).send().await.unwrap();
    assert_eq!(header(&res, "tus-resumable"), Some(TUS));
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    let offset = header(&res, "upload-offset").map(|v| v.parse().unwrap());
    (res.status().as_u16(), offset)
}

/// The file `id` as the API shows it, and its bytes through its link.
async fn stored(s: &TestServer, who: &Account, id: &str) -> (Value, Vec<u8>) {
    let (status, body) = s
        .get(
            &format!("/api/v1/files/{id}?redirect=false"),
            Some(&who.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap();
    let url = if url.starts_with('/') {
        s.url(url)
    } else {
        url.to_owned()
    };
    let res = s.http().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    (body["file"].clone(), res.bytes().await.unwrap().to_vec())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The folder tus-js-client is installed in, installing it when missing;
/// why not, when node or npm is missing or the install failed.
fn tus_node() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/tus-node");
    if dir
        .join("node_modules/tus-js-client/package.json")
        .is_file()
    {
        return Ok(dir);
    }
    for tool in ["node", "npm"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{tool} is not installed"));
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // No lock file: the one dependency is pinned to its major version.
    let out = std::process::Command::new("npm")
        .args(["install", "--prefix"])
        .arg(&dir)
        .args([
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "tus-js-client@4",
        ])
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm install tus-js-client@4 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}

/// [`tus_node`], once for all the tests of this process.
async fn tus_node_once() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = tokio::task::spawn_blocking(|| INSTALLED.get_or_init(tus_node).clone())
        .await
        .unwrap();
    match installed {
        Ok(dir) => Some(dir),
        Err(why) if in_ci() => panic!("tus-js-client is required under CI=true: {why}"),
        Err(why) => {
            println!("skipping: {why}");
            None
        }
    }
}

/// tus-js-client uploads a 3 MiB file in 1 MiB chunks, then another
/// aborted after its first chunk and resumed from the server's offset:
/// both files are stored whole.
async fn tus_js_client_uploads_and_resumes(backend: Backend) {
    let Some(node_dir) = tus_node_once().await else {
        return;
    };
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let ann = s.register("ann").await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("report.bin");
    let bytes = bytes_of(3 * 1024 * 1024 + 12_345, 7);
    std::fs::write(&path, &bytes).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus/upload.mjs");
    let url = s.url("");
    let token = ann.token.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .args([url.as_str(), token.as_str()])
            .arg(&path)
            .env("TUS_NODE_DIR", node_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed:\n{stdout}\n{stderr}");
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"))
            .trim()
            .to_owned()
    };
    // onProgress ran as the chunks went.
    assert!(
        stderr.contains(&format!("first: {}/{}", bytes.len(), bytes.len())),
        "{stderr}"
    );
    let resumed_from: u64 = field("resumed-from ").parse().unwrap();
    assert!(
        (1024 * 1024..bytes.len() as u64).contains(&resumed_from),
        "resumed from {resumed_from}"
    );
    let want = sha256_hex(&bytes);
    for id in [field("file-id first "), field("file-id resumed ")] {
        let (file, got) = stored(&s, &ann, &id).await;
        assert_eq!(file["sha256"], want.as_str());
        assert_eq!(file["size"], bytes.len());
        assert_eq!(file["name"], "report.bin");
        assert_eq!(sha256_hex(&got), want);
    }
}

#[tokio::test]
async fn options_describes_the_server_without_a_token_or_version() {
    let s = TestServer::start_with(&[("CONFAB_MAX_FILE_BYTES", "5000")]).await;
    for version in [None, Some("0.2.2")] {
        let mut req = s.http().request(Method::OPTIONS, s.url("/api/v1/uploads"));
        if let Some(v) = version {
            req = req.header("Tus-Resumable", v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 204, "{version:?}");
        assert_eq!(header(&res, "tus-resumable"), Some(TUS));
        assert_eq!(header(&res, "tus-version"), Some(TUS));
        let extensions: Vec<&str> = header(&res, "tus-extension").unwrap().split(',').collect();
        for ext in ["creation", "termination", "expiration", "checksum"] {
            assert!(extensions.contains(&ext), "{extensions:?}");
        }
        let algorithms: Vec<&str> = header(&res, "tus-checksum-algorithm")
            .unwrap()
            .split(',')
            .collect();
        assert!(algorithms.contains(&"sha1") && algorithms.contains(&"sha256"));
        assert_eq!(header(&res, "tus-max-size"), Some("5000"));
    }
}

#[tokio::test]
async fn creation_is_refused_as_the_protocol_says() {
    let s = TestServer::start_with(&[
        ("CONFAB_MAX_FILE_BYTES", "5000"),
        ("CONFAB_FILE_QUOTA_BYTES", "8000"),
    ])
    .await;
    let ann = s.register("ann").await;
    let post = || tus(&s, Method::POST, "/api/v1/uploads", &ann.token);

    // No version, or another: 412 naming the one spoken.
    for version in [None, Some("0.2.2")] {
        let mut req = s
            .http()
            .post(s.url("/api/v1/uploads"))
            .bearer_auth(&ann.token)
            .header("Upload-Length", 10);
        if let Some(v) = version {
            req = req.header("Tus-Resumable", v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(header(&res, "tus-version"), Some(TUS));
        assert_eq!(refused(res).await.0, 412, "{version:?}");
    }
    // No length (deferred lengths are not taken), or not a number.
    let res = post().send().await.unwrap();
    assert_eq!(refused(res).await, (400, "bad_request".into()));
    let res = post()
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 400);
    for bad in ["-1", "ten", "+5", ""] {
        let res = post().header("Upload-Length", bad).send().await.unwrap();
        assert_eq!(refused(res).await.0, 400, "{bad:?}");
    }
    // Over the maximum: 413 before a byte is sent; empty: 400.
    let res = post().header("Upload-Length", 5001).send().await.unwrap();
    assert_eq!(refused(res).await, (413, "too_large".into()));
    let res = post().header("Upload-Length", 0).send().await.unwrap();
    assert_eq!(refused(res).await.0, 400);
    let res = post()
        .header("Upload-Metadata", "filename ***")
        .header("Upload-Length", 9)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 400);
    // No token: 401, still a tus answer.
    let res = s
        .http()
        .post(s.url("/api/v1/uploads"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", 10)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, (401, "unauthorized".into()));
    // At the maximum: created, and its length reserved of the quota.
    create(&s, &ann, 5000, "max.bin").await;
    let res = post().header("Upload-Length", 3001).send().await.unwrap();
    let (status, message) = refused(res).await;
    assert_eq!(status, 413, "{message}");
    create(&s, &ann, 3000, "rest.bin").await;
}

/// PATCH: the offset, type, length and checksum rules; the method
/// override; the last chunk's file; and uploads no one else can see.
async fn patches_follow_the_offset_and_checksum_rules(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let ann = s.register("ann").await;
    let bob = s.register("bob").await;
    let bytes = bytes_of(30, 3);
    let path = create(&s, &ann, 30, "été.txt").await;

    let res = tus(&s, Method::HEAD, &path, &ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "upload-offset"), Some("0"));
    assert_eq!(header(&res, "upload-length"), Some("30"));
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    let echoed = format!("filename {}", b64("été.txt".as_bytes()));
    assert_eq!(header(&res, "upload-metadata"), Some(echoed.as_str()));
    assert!(header(&res, "upload-expires").is_some());

    // Another user sees no such upload.
    assert_eq!(head(&s, &bob, &path).await, (404, None));
    let res = patch(&s, &bob, &path, 0, &bytes[..10], &[]).await;
    assert_eq!(refused(res).await, (404, "not_found".into()));

    // Wrong type, wrong offset, too long: refused, nothing kept.
    let res = tus(&s, Method::PATCH, &path, &ann.token)
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", 0)
        .body(bytes[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 415);
    let res = patch(&s, &ann, &path, 5, &bytes[5..15], &[]).await;
    assert_eq!(header(&res, "upload-offset"), Some("0"));
    assert_eq!(refused(res).await, (409, "conflict".into()));
    let res = patch(&s, &ann, &path, 0, &bytes_of(31, 1), &[]).await;
    assert_eq!(refused(res).await.0, 413);
    assert_eq!(head(&s, &ann, &path).await, (200, Some(0)));

    // A checksum that does not match: 460, the chunk dropped; an algorithm
    // not supported: 400.
    let wrong = format!("sha1 {}", b64(&Sha1::digest(&bytes[1..11])));
    let res = patch(
        &s,
        &ann,
        &path,
        0,
        &bytes[..10],
        &[("Upload-Checksum", wrong)],
    )
    .await;
    assert_eq!(refused(res).await.0, 460);
    let md5 = format!("md5 {}", b64(&[0; 16]));
    let res = patch(
        &s,
        &ann,
        &path,
        0,
        &bytes[..10],
        &[("Upload-Checksum", md5)],
    )
    .await;
    assert_eq!(refused(res).await.0, 400);
    assert_eq!(head(&s, &ann, &path).await, (200, Some(0)));

    // Matching SHA-1, then SHA-256: stored.
    let sha1 = format!("sha1 {}", b64(&Sha1::digest(&bytes[..10])));
    let res = patch(
        &s,
        &ann,
        &path,
        0,
        &bytes[..10],
        &[("Upload-Checksum", sha1)],
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset"), Some("10"));
    assert_eq!(header(&res, "tus-resumable"), Some(TUS));
    assert!(header(&res, "upload-expires").is_some());
    assert!(header(&res, "x-confab-file-id").is_none());
    let sha256 = format!("sha256 {}", b64(&Sha256::digest(&bytes[10..20])));
    let res = patch(
        &s,
        &ann,
        &path,
        10,
        &bytes[10..20],
        &[("Upload-Checksum", sha256)],
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset"), Some("20"));
    // The same chunk again is at the wrong offset now.
    let res = patch(&s, &ann, &path, 10, &bytes[10..20], &[]).await;
    assert_eq!(header(&res, "upload-offset"), Some("20"));
    assert_eq!(refused(res).await.0, 409);

    // The last chunk through POST + X-HTTP-Method-Override: the file.
    let res = tus(&s, Method::POST, &path, &ann.token)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Offset", 20)
        .body(bytes[20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset"), Some("30"));
    let id = header(&res, "x-confab-file-id")
        .expect("the file's id")
        .to_owned();
    let (file, got) = stored(&s, &ann, &id).await;
    assert_eq!(got, bytes);
    assert_eq!(file["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(file["name"], "été.txt");
    // Bob may not read it.
    assert_eq!(
        s.get(
            &format!("/api/v1/files/{id}?redirect=false"),
            Some(&bob.token)
        )
        .await
        .0,
        404
    );
    // A client that missed that answer learns the file from HEAD, or from
    // the same PATCH sent again; nothing is made twice.
    let res = tus(&s, Method::HEAD, &path, &ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "upload-offset"), Some("30"));
    assert_eq!(header(&res, "x-confab-file-id"), Some(id.as_str()));
    let res = patch(&s, &ann, &path, 30, &[], &[]).await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "x-confab-file-id"), Some(id.as_str()));
    // Its chunks went when the file was made.
    let upload = path.rsplit('/').next().unwrap();
    let parts = s.data_dir.join("files").join("parts").join(upload);
    let left = std::fs::read_dir(&parts).map_or(0, |d| d.count());
    assert_eq!(left, 0, "{}", parts.display());
}

/// DELETE ends an upload: 204, then 404 for every request to it; not
/// someone else's.
async fn termination_ends_an_upload(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let ann = s.register("ann").await;
    let bob = s.register("bob").await;
    let path = create(&s, &ann, 100, "gone.bin").await;
    let res = patch(&s, &ann, &path, 0, &bytes_of(40, 2), &[]).await;
    assert_eq!(res.status(), 204);
    let res = tus(&s, Method::DELETE, &path, &bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 404);
    let res = tus(&s, Method::DELETE, &path, &ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "tus-resumable"), Some(TUS));
    assert_eq!(head(&s, &ann, &path).await, (404, None));
    let res = patch(&s, &ann, &path, 40, &bytes_of(60, 2), &[]).await;
    assert_eq!(refused(res).await.0, 404);
    let res = tus(&s, Method::DELETE, &path, &ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 404);
}

/// A PATCH whose connection drops mid-body keeps what arrived; the upload
/// completes from there.
async fn a_dropped_patch_keeps_what_arrived(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let ann = s.register("ann").await;
    let bytes = bytes_of(300_000, 5);
    let path = create(&s, &ann, bytes.len() as u64, "dropped.bin").await;
    let sent = 120_000;
    let mut tcp = s.tcp_from([127, 0, 0, 1].into()).await;
    let request = format!(
        "PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: {TUS}\r\nContent-Type: {OFFSET_TYPE}\r\nUpload-Offset: 0\r\n\
         Content-Length: {}\r\n\r\n",
        ann.token,
        bytes.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&bytes[..sent]).await.unwrap();
    tcp.flush().await.unwrap();
    drop(tcp);

    // The bytes sent before the close all arrive before it, and are kept.
    let deadline = Instant::now() + WAIT;
    let offset = loop {
        let (status, offset) = head(&s, &ann, &path).await;
        assert_eq!(status, 200);
        match offset {
            Some(0) if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Some(n) => break n,
            None => panic!("no Upload-Offset"),
        }
    };
    assert_eq!(offset, sent as u64);
    let res = patch(&s, &ann, &path, offset, &bytes[sent..], &[]).await;
    assert_eq!(res.status(), 204);
    let id = header(&res, "x-confab-file-id")
        .expect("the file's id")
        .to_owned();
    let (file, got) = stored(&s, &ann, &id).await;
    assert_eq!(file["size"], bytes.len());
    assert!(got == bytes, "the stored bytes differ");
}

/// An upload past its expiry answers 410 Gone until it is swept.
async fn an_expired_upload_is_gone(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[("CONFAB_UPLOAD_TTL_SECS", "1")]).await else {
        return;
    };
    let ann = s.register("ann").await;
    let path = create(&s, &ann, 100, "late.bin").await;
    let deadline = Instant::now() + WAIT;
    while head(&s, &ann, &path).await.0 == 200 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(head(&s, &ann, &path).await, (410, None));
    let res = patch(&s, &ann, &path, 0, &bytes_of(10, 1), &[]).await;
    assert_eq!(refused(res).await, (410, "not_found".into()));
    let res = tus(&s, Method::DELETE, &path, &ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await.0, 410);
}

on_each_backend!(
    tus_js_client_uploads_and_resumes,
    patches_follow_the_offset_and_checksum_rules,
    termination_ends_an_upload,
    a_dropped_patch_keeps_what_arrived,
    an_expired_upload_is_gone,
);
