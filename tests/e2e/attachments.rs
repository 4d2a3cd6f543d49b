//! File sharing (docs/files.md): uploads, attachments on messages, signed
//! downloads with ranges and the headers that keep a hostile file inert,
//! who may read a file, the limits on uploads, and the garbage collection
//! of what no message carries or a crash left behind. (`files.rs` is about
//! the data folder; this is about the files users share.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Account, Backend, Client, TestServer, WAIT, on_each_backend};

/// A known JWT secret, so that the test can sign file links itself.
const SECRET: &str = "e2e-attachments-secret-0123456789abcdef";
/// The sweep of a test that waits for it: every second, nothing kept long.
const SHORT_SWEEP: &[(&str, &str)] = &[
    ("CONFAB_FILES_SWEEP_SECS", "1"),
    ("CONFAB_UNATTACHED_FILE_TTL_SECS", "1"),
    ("CONFAB_FILES_ORPHAN_GRACE_SECS", "1"),
];
/// Hang guard of the loops that wait for the sweep (seconds apart).
const SWEEP_DEADLINE: Duration = Duration::from_secs(60);

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `width` x `height` PNG with a gradient, so that it is not all one colour.
fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `width` x `height` (with a correct CRC) over
/// a tiny image's data: a decompression bomb as a decoder first sees it.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(4, 4);
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// `POST /api/v1/files?name=` with `bytes`: status and JSON body.
async fn upload(s: &TestServer, token: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let res = s
        .http()
        .post(s.url("/api/v1/files"))
        .query(&[("name", name)])
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// An upload that must succeed: the `file` of its answer.
async fn uploaded(s: &TestServer, account: &Account, name: &str, bytes: Vec<u8>) -> Value {
    let (status, body) = upload(s, &account.token, name, bytes).await;
    assert_eq!(status, 201, "upload {name}: {body}");
    body["file"].clone()
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// `GET /api/v1/files/{id}` as `token`: the status and, on a redirect, the
/// signed link's path and query.
async fn api_link(s: &TestServer, token: &str, file: &str) -> (u16, Option<String>) {
    let res = no_redirects()
        .get(s.url(&format!("/api/v1/files/{file}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (res.status().as_u16(), location)
}

/// The signed link `token` gets for `file` (which they must be able to read).
async fn signed(s: &TestServer, token: &str, file: &str) -> String {
    let (status, location) = api_link(s, token, file).await;
    assert_eq!(status, 302, "link to {file}");
    location.expect("a Location")
}

/// `GET` of a signed link (a path and query of this server), without a token.
async fn fetch(s: &TestServer, link: &str) -> reqwest::Response {
    no_redirects().get(s.url(link)).send().await.unwrap()
}

async fn fetch_status(s: &TestServer, link: &str) -> u16 {
    fetch(s, link).await.status().as_u16()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn create_room(c: &mut Client, name: &str) -> String {
    c.ack("createRoom", json!({"name": name, "visibility": "public"}))
        .await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every regular file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn blobs(s: &TestServer) -> Vec<PathBuf> {
    files_under(&s.data_dir.join("files").join("blobs"))
}

fn staging(s: &TestServer) -> Vec<PathBuf> {
    files_under(&s.data_dir.join("files").join("staging"))
}

/// Polls `$done` (an expression, which may `.await`) until it holds;
/// fails with `$what` after [`SWEEP_DEADLINE`].
macro_rules! eventually {
    ($what:expr, $done:expr) => {{
        let deadline = Instant::now() + SWEEP_DEADLINE;
        while !$done {
            assert!(Instant::now() < deadline, "never: {}", $what);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

/// Sends raw request `head` (and `body`) over TCP and reads the answer's
/// status line and body text, as far as the server sends them.
async fn raw_exchange(s: &TestServer, head: &str, body: &[u8], close_write: bool) -> (u16, String) {
    let mut tcp = s.tcp_from([127, 0, 0, 1].into()).await;
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    if close_write {
        tcp.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((headers, rest)) = text.split_once("\r\n\r\n") {
            let length = headers
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if rest.len() >= length {
                let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, rest.to_owned());
            }
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no whole answer ({other:?}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// The head of an upload request declaring `length` bytes.
fn upload_head(token: &str, length: u64) -> String {
    format!(
        "POST /api/v1/files?name=raw.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// The link to `file`'s `variant` for `user` until `expires`, signed as
/// src/adapters/files/sign.rs signs, with the key derived from [`SECRET`].
fn sign_link(file: &str, variant: &str, user: &str, expires: i64) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut derive = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    derive.update(b"confab file links v1");
    let key = derive.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{file}\n{variant}\n{user}\n{expires}").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let path = if variant == "thumbnail" {
        format!("/files/{file}/thumbnail")
    } else {
        format!("/files/{file}")
    };
    format!("{path}?u={user}&e={expires}&s={sig}")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// 1. Upload.

#[tokio::test]
async fn an_uploaded_png_is_described_with_its_hash_type_size_and_a_thumbnail() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let bytes = png(640, 400);
    let file = uploaded(&s, &a, "photo.png", bytes.clone()).await;
    assert!(!id(&file).is_empty());
    assert_eq!(file["name"], "photo.png");
    assert_eq!(file["size"], bytes.len() as u64);
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    assert_eq!(file["contentType"], "image/png");
    assert_eq!(
        (file["width"].clone(), file["height"].clone()),
        (json!(640), json!(400))
    );
    assert_eq!(file["thumbnail"], true);

    // The name may come in a header instead, percent-encoded UTF-8.
    let name = "résumé 日本 #1.png";
    let encoded: String =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    let res = s
        .http()
        .post(s.url("/api/v1/files"))
        .bearer_auth(&a.token)
        .header("X-File-Name", encoded)
        .body(png(8, 8))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["file"]["name"], name, "{body}");

    // No token, no upload.
    let res = s
        .http()
        .post(s.url("/api/v1/files?name=x.png"))
        .body(png(8, 8))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

// 2. Attachments on messages.

async fn attachments_ride_on_messages_acks_events_and_history(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, e) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("eve").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let mut ce = s.connect(&e).await;
    let file = uploaded(&s, &a, "cat.png", png(64, 48)).await;

    // A direct message of a file alone.
    let ack = ca
        .ack(
            "sendPrivateMessage",
            json!({"to": b.id, "body": "", "attachments": [id(&file)]}),
        )
        .await;
    let m = ack["message"].clone();
    assert_eq!(m["body"], "");
    assert_eq!(m["attachments"], json!([file.clone()]), "{m}");
    let ev = cb.event("message").await;
    assert_eq!(ev["message"], m, "the recipient's event carries the files");
    let conversation = m["conversationId"].as_str().unwrap().to_owned();
    let history = cb.history_after(&conversation, 0).await;
    assert_eq!(history, vec![m.clone()]);

    // In a room, with a caption and the body left out alike.
    let room = create_room(&mut ca, "pics").await;
    cb.ack("joinRoom", json!({"conversationId": room})).await;
    let second = uploaded(&s, &a, "notes.txt", b"plain words\n".to_vec()).await;
    let captioned = ca
        .ack(
            "sendMessage",
            json!({"conversationId": room, "body": "look", "attachments": [id(&second), id(&file)]}),
        )
        .await["message"]
        .clone();
    assert_eq!(
        captioned["attachments"],
        json!([second.clone(), file.clone()])
    );
    let bare = ca
        .ack(
            "sendMessage",
            json!({"conversationId": room, "attachments": [id(&second)]}),
        )
        .await["message"]
        .clone();
    assert_eq!(bare["body"], "");
    let room_history = cb.history_after(&room, 0).await;
    let carried: Vec<&Value> = room_history
        .iter()
        .filter(|h| h.get("attachments").is_some())
        .collect();
    assert_eq!(carried, vec![&captioned, &bare]);

    // Someone else's file, or none: not_found; nothing is sent.
    for files in [
        json!([id(&file)]),
        json!(["0190d5c4-0000-7000-8000-000000000000"]),
    ] {
        let send = json!({"to": b.id, "body": "", "attachments": files});
        assert_eq!(ce.error_code("sendPrivateMessage", send).await, "not_found");
    }
    let mixed = json!({"conversationId": room, "body": "x", "attachments": [id(&second), "nope"]});
    assert_eq!(ca.error_code("sendMessage", mixed).await, "not_found");
    // Too many, repeated or not ids: bad_request.
    let eleven: Vec<String> = (0..11)
        .map(|i| format!("0190d5c4-0000-7000-8000-{i:012}"))
        .collect();
    for files in [
        json!(eleven),
        json!([id(&file), id(&file)]),
        json!([7]),
        json!(id(&file)),
    ] {
        let send = json!({"to": b.id, "body": "", "attachments": files});
        assert_eq!(
            ca.error_code("sendPrivateMessage", send).await,
            "bad_request",
            "{files}"
        );
    }
    // Without files, the body is still required.
    assert_eq!(
        ca.error_code("sendPrivateMessage", json!({"to": b.id, "attachments": []}))
            .await,
        "bad_request"
    );
    assert_eq!(cb.history_after(&conversation, 0).await.len(), 1);

    // A message without files has no `attachments` key at all.
    let plain = ca
        .ack(
            "sendPrivateMessage",
            json!({"to": b.id, "body": "just text"}),
        )
        .await["message"]
        .clone();
    assert!(plain.get("attachments").is_none(), "{plain}");
    let ev = cb
        .wait_for(|f| f["type"] == "message" && f["content"]["message"]["id"] == plain["id"])
        .await;
    assert!(
        ev["content"]["message"].get("attachments").is_none(),
        "{ev}"
    );
    let last = cb.history_after(&conversation, 0).await.pop().unwrap();
    assert_eq!(last["id"], plain["id"]);
    assert!(last.get("attachments").is_none(), "{last}");
}

// 3. Downloads.

#[tokio::test]
async fn a_download_redirects_to_a_signed_link_that_serves_the_exact_bytes_safely() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let bytes = png(640, 400);
    let file = uploaded(&s, &a, "photo.png", bytes.clone()).await;
    let location = signed(&s, &a.token, id(&file)).await;
    assert!(
        location.starts_with(&format!("/files/{}?", id(&file))),
        "{location}"
    );

    let res = fetch(&s, &location).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "content-type"), "image/png");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    let csp = header(&res, "content-security-policy");
    assert!(csp.contains("sandbox"), "{csp}");
    assert_eq!(header(&res, "cross-origin-resource-policy"), "same-origin");
    assert_eq!(header(&res, "referrer-policy"), "no-referrer");
    assert!(header(&res, "content-disposition").starts_with("inline"));
    assert_eq!(header(&res, "etag"), format!("\"{}\"", sha256_hex(&bytes)));
    assert_eq!(res.bytes().await.unwrap(), Bytes::from(bytes));

    // Without a Location-reading client: the links in JSON.
    let res = s
        .http()
        .get(s.url(&format!("/api/v1/files/{}?redirect=false", id(&file))))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["file"], file);
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap();
    assert!(expires.timestamp() > unix_now(), "{body}");
    let url = body["url"].as_str().unwrap();
    assert_eq!(fetch_status(&s, url).await, 200);
    let thumb = fetch(&s, body["thumbnailUrl"].as_str().unwrap()).await;
    assert_eq!(thumb.status().as_u16(), 200);
    let kind = header(&thumb, "content-type").to_owned();
    assert!(kind == "image/jpeg" || kind == "image/png", "{kind}");
    assert_eq!(header(&thumb, "x-content-type-options"), "nosniff");
    let img = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert!(
        img.width().max(img.height()) <= 320,
        "{}x{}",
        img.width(),
        img.height()
    );
    assert_eq!(img.width(), 320, "scaled down, its shape kept");

    // The thumbnail's API link redirects too; a file with none has none.
    let res = no_redirects()
        .get(s.url(&format!("/api/v1/files/{}/thumbnail", id(&file))))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 302);
    let text = uploaded(&s, &a, "a.txt", b"text".to_vec()).await;
    assert_eq!(text["thumbnail"], false);
    let res = s
        .http()
        .get(s.url(&format!("/api/v1/files/{}/thumbnail", id(&text))))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

// 4. Who may read a file.

async fn a_file_is_read_by_its_uploader_and_the_members_who_may_read_its_message(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (a, b, e, c, d) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("eve").await,
        s.register("cat").await,
        s.register("dan").await,
    );
    let mut ca = s.connect(&a).await;
    let mut cb = s.connect(&b).await;
    let mut cc = s.connect(&c).await;
    let file = uploaded(&s, &a, "plan.png", png(32, 32)).await;
    let f = id(&file);

    // Before it is attached: its uploader alone; anyone else sees no file.
    let mine = signed(&s, &a.token, f).await;
    assert_eq!(fetch_status(&s, &mine).await, 200);
    assert_eq!(api_link(&s, &e.token, f).await.0, 404, "404, not 403");
    let room = create_room(&mut ca, "plans").await;
    cb.ack("joinRoom", json!({"conversationId": room})).await;
    assert_eq!(api_link(&s, &b.token, f).await.0, 404, "not attached yet");

    // Posted in a room: its members read it, strangers still do not.
    ca.ack(
        "sendMessage",
        json!({"conversationId": room, "body": "", "attachments": [f]}),
    )
    .await;
    let bobs = signed(&s, &b.token, f).await;
    assert_eq!(fetch_status(&s, &bobs).await, 200);
    assert_eq!(api_link(&s, &e.token, f).await.0, 404);

    // A member who left reads no more, with a new link or one made before.
    cb.ack("leaveRoom", json!({"conversationId": room})).await;
    assert_eq!(api_link(&s, &b.token, f).await.0, 404);
    assert_eq!(fetch_status(&s, &bobs).await, 404);

    // Someone who joins later reads the room's history, files included.
    cc.ack("joinRoom", json!({"conversationId": room})).await;
    let cats = signed(&s, &c.token, f).await;
    assert_eq!(fetch_status(&s, &cats).await, 200);

    // A deleted message takes its files' readers with it.
    let other = uploaded(&s, &a, "dm.png", png(16, 16)).await;
    let o = id(&other);
    let sent = ca
        .ack(
            "sendPrivateMessage",
            json!({"to": d.id, "body": "", "attachments": [o]}),
        )
        .await["message"]
        .clone();
    let dans = signed(&s, &d.token, o).await;
    assert_eq!(fetch_status(&s, &dans).await, 200);
    ca.ack(
        "deleteMessage",
        json!({"conversationId": sent["conversationId"], "messageId": sent["id"]}),
    )
    .await;
    assert_eq!(api_link(&s, &d.token, o).await.0, 404);
    assert_eq!(fetch_status(&s, &dans).await, 404);
    assert_eq!(
        api_link(&s, &a.token, o).await.0,
        302,
        "still its uploader's"
    );
}

// 5. Signed links.

#[tokio::test]
async fn a_signed_link_changed_in_any_part_or_expired_is_refused() {
    let s = TestServer::start_with(&[("CONFAB_JWT_SECRET", SECRET)]).await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let file = uploaded(&s, &a, "one.png", png(16, 16)).await;
    let other = uploaded(&s, &a, "two.png", png(17, 17)).await;
    let (f, g) = (id(&file), id(&other));
    let link = signed(&s, &a.token, f).await;
    assert_eq!(fetch_status(&s, &link).await, 200);
    let (path, query) = link.split_once('?').unwrap();
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (u, e, sig) = (get("u"), get("e").parse::<i64>().unwrap(), get("s"));
    assert_eq!(u, a.id);

    // The test signs as the server does: its link is the server's.
    assert_eq!(sign_link(f, "original", &u, e), link);
    let flipped = {
        let mut chars: Vec<char> = sig.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let tampered = [
        format!("{path}?u={}&e={e}&s={sig}", b.id),
        format!("{path}?u={u}&e={}&s={sig}", e + 1),
        format!("{path}?u={u}&e={e}&s={flipped}"),
        format!("/files/{g}?u={u}&e={e}&s={sig}"),
        format!("{path}/thumbnail?u={u}&e={e}&s={sig}"),
        format!("{path}?u={u}&e={e}"),
        format!("{path}?u={u}&e={e}&s="),
        path.to_owned(),
    ];
    for bad in &tampered {
        let res = fetch(&s, bad).await;
        assert_eq!(res.status().as_u16(), 403, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{bad}");
    }

    // Well signed but past its time: refused as expired.
    let fresh = sign_link(f, "original", &a.id, unix_now() + 60);
    assert_eq!(fetch_status(&s, &fresh).await, 200);
    let expired = sign_link(f, "original", &a.id, unix_now() - 5);
    let res = fetch(&s, &expired).await;
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    // A good signature for someone who may not read the file: no file.
    let bobs = sign_link(f, "original", &b.id, unix_now() + 60);
    assert_eq!(fetch_status(&s, &bobs).await, 404);
}

// 6. Ranges and validators.

#[tokio::test]
async fn ranges_validators_and_head_are_served_as_http_says() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let bytes: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(7)).collect();
    let file = uploaded(&s, &a, "data.bin", bytes.clone()).await;
    let link = signed(&s, &a.token, id(&file)).await;
    let client = no_redirects();
    for (range, content_range, want) in [
        ("bytes=0-0", "bytes 0-0/100", &bytes[0..1]),
        ("bytes=-5", "bytes 95-99/100", &bytes[95..]),
        ("bytes=10-", "bytes 10-99/100", &bytes[10..]),
        ("bytes=20-29", "bytes 20-29/100", &bytes[20..30]),
    ] {
        let res = client
            .get(s.url(&link))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 206, "{range}");
        assert_eq!(header(&res, "content-range"), content_range);
        assert_eq!(&res.bytes().await.unwrap()[..], want, "{range}");
    }
    for range in ["bytes=100-", "bytes=500-600"] {
        let res = client
            .get(s.url(&link))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 416, "{range}");
        assert_eq!(header(&res, "content-range"), "bytes */100");
        // The answer is the error, not the file.
        assert_eq!(header(&res, "content-type"), "application/json");
        assert!(res.headers().get("content-disposition").is_none());
    }

    let etag = header(&fetch(&s, &link).await, "etag").to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&bytes)));
    let res = client
        .get(s.url(&link))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 304);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = client
        .get(s.url(&link))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // If-Range with another validator: the whole file, not the range.
    let res = client
        .get(s.url(&link))
        .header("range", "bytes=0-0")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 100);

    let res = client.head(s.url(&link)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "content-length"), "100");
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert!(res.bytes().await.unwrap().is_empty());
}

// 7. What is shown inline.

#[tokio::test]
async fn markup_is_never_served_as_markup_and_names_are_made_safe() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let html =
        b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>\n";
    let svg = b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>\n";
    for (name, bytes, never) in [
        ("page.html", &html[..], "text/html"),
        ("logo.svg", &svg[..], "image/svg+xml"),
    ] {
        let file = uploaded(&s, &a, name, bytes.to_vec()).await;
        let stored = file["contentType"].as_str().unwrap();
        assert!(
            !stored.contains(never) && !stored.contains("html") && !stored.contains("svg"),
            "{stored}"
        );
        assert_eq!(file["thumbnail"], false);
        assert!(file["width"].is_null() && file["height"].is_null());
        let res = fetch(&s, &signed(&s, &a.token, id(&file)).await).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            header(&res, "content-type"),
            "application/octet-stream",
            "{name}"
        );
        let disposition = header(&res, "content-disposition");
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(
            disposition.contains(&format!("filename*=UTF-8''{name}")),
            "{disposition}"
        );
        assert!(header(&res, "content-security-policy").contains("sandbox"));
        assert_eq!(&res.bytes().await.unwrap()[..], bytes);
    }

    let evil = uploaded(&s, &a, "../../evil\u{202e}.html", html.to_vec()).await;
    assert_eq!(evil["name"], "evil.html");
    let res = fetch(&s, &signed(&s, &a.token, id(&evil)).await).await;
    let disposition = header(&res, "content-disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(!disposition.contains(".."), "{disposition}");
    assert!(!disposition.contains("%E2%80%AE"), "{disposition}");

    // A UTF-8 name survives, percent-encoded, in the header.
    let named = uploaded(&s, &a, "отчёт.txt", b"hello".to_vec()).await;
    let res = fetch(&s, &signed(&s, &a.token, id(&named)).await).await;
    let disposition = header(&res, "content-disposition");
    assert!(
        disposition.contains("filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.txt"),
        "{disposition}"
    );
}

// 8. A decompression bomb.

#[tokio::test]
async fn a_png_bomb_is_kept_without_a_thumbnail_and_the_server_lives() {
    let s = TestServer::start().await;
    let a = s.register("ann").await;
    let bomb = png_claiming(100_000, 100_000);
    let file = uploaded(&s, &a, "bomb.png", bomb.clone()).await;
    assert_eq!(file["contentType"], "image/png");
    assert_eq!(file["thumbnail"], false);
    assert!(
        file["width"].is_null() && file["height"].is_null(),
        "{file}"
    );
    assert_eq!(file["sha256"], sha256_hex(&bomb));
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
    let res = fetch(&s, &signed(&s, &a.token, id(&file)).await).await;
    assert_eq!(&res.bytes().await.unwrap()[..], &bomb[..]);
    // Still serving uploads, thumbnails included.
    let next = uploaded(&s, &a, "fine.png", png(50, 50)).await;
    assert_eq!(next["thumbnail"], true);
}

// 9. Limits.

#[tokio::test]
async fn an_upload_needs_a_length_some_bytes_and_at_most_the_largest_size() {
    let s = TestServer::start_with(&[("CONFAB_MAX_FILE_BYTES", "1000")]).await;
    let a = s.register("ann").await;

    // Streamed: no Content-Length is sent.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(Bytes::from_static(b"streamed bytes"))];
    let res = s
        .http()
        .post(s.url("/api/v1/files?name=s.bin"))
        .bearer_auth(&a.token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 411);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let (status, body) = raw_exchange(&s, &upload_head(&a.token, 0), b"", false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");

    // Refused before a byte of the body is read: none is sent.
    let (status, body) = raw_exchange(&s, &upload_head(&a.token, 1001), b"", false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too_large"), "{body}");
    let (status, body) = upload(&s, &a.token, "big.bin", vec![1; 1001]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("too_large"))
    );
    let (status, body) = upload(&s, &a.token, "fits.bin", vec![1; 1000]).await;
    assert_eq!(status, 201, "{body}");
}

async fn the_quota_counts_what_a_user_stored_and_nothing_a_broken_upload_sent(backend: Backend) {
    let mut env = vec![("CONFAB_FILE_QUOTA_BYTES", "3000")];
    env.extend_from_slice(SHORT_SWEEP);
    let Some(s) = TestServer::start_on(backend, &env).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);

    // A body that ends early: refused, nothing kept, nothing counted.
    let head = upload_head(&b.token, 3000);
    let (status, body) = raw_exchange(&s, &head, &[7u8; 1000], true).await;
    assert_eq!(status, 400, "{body}");
    eventually!(
        "no staging file, no blob",
        staging(&s).is_empty() && blobs(&s).is_empty()
    );
    let (status, body) = upload(&s, &b.token, "whole.bin", vec![8; 3000]).await;
    assert_eq!(status, 201, "the whole quota is still free: {body}");

    let first = uploaded(&s, &a, "one.bin", vec![1; 2000]).await;
    let (status, body) = upload(&s, &a.token, "two.bin", vec![2; 2000]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("quota"),
        "{body}"
    );
    // Refused by the head alone, before the body.
    let (status, body) = raw_exchange(&s, &upload_head(&a.token, 2000), b"", false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("quota"), "{body}");
    // What is left still fits.
    let (status, body) = upload(&s, &a.token, "rest.bin", vec![3; 1000]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(first["size"], 2000);
}

#[tokio::test]
async fn uploads_past_the_rate_are_refused_with_retry_after() {
    let s = TestServer::start_with(&[("CONFAB_UPLOADS_PER_MINUTE", "2")]).await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    for n in 0..2u8 {
        uploaded(&s, &a, "n.bin", vec![n; 10]).await;
    }
    let res = s
        .http()
        .post(s.url("/api/v1/files?name=third.bin"))
        .bearer_auth(&a.token)
        .body(vec![3u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let wait: u64 = header(&res, "retry-after").parse().unwrap();
    assert!(wait >= 1, "{wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Per user: another user still uploads.
    uploaded(&s, &b, "b.bin", vec![4; 10]).await;
}

// 10. Garbage collection.

async fn a_file_never_attached_is_collected_and_an_attached_one_stays(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, SHORT_SWEEP).await else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut ca = s.connect(&a).await;
    // Attached first, so that it is the older of the two by every clock
    // the sweep reads: whenever the other has gone, this one was weighed.
    let kept_bytes = b"kept: attached to a message\n".to_vec();
    let kept = uploaded(&s, &a, "kept.txt", kept_bytes.clone()).await;
    ca.ack(
        "sendPrivateMessage",
        json!({"to": b.id, "body": "", "attachments": [id(&kept)]}),
    )
    .await;
    let gone = uploaded(&s, &a, "gone.txt", b"gone: never attached\n".to_vec()).await;
    let blob_of = |f: &Value| {
        let sha = f["sha256"].as_str().unwrap().to_owned();
        s.data_dir
            .join("files")
            .join("blobs")
            .join(&sha[..2])
            .join(&sha)
    };
    let (kept_blob, gone_blob) = (blob_of(&kept), blob_of(&gone));
    assert!(
        gone_blob.is_file() && kept_blob.is_file(),
        "{:?}",
        blobs(&s)
    );

    eventually!(
        "the unattached file is gone",
        api_link(&s, &a.token, id(&gone)).await.0 == 404 && !gone_blob.exists()
    );
    assert_eq!(blobs(&s), vec![kept_blob.clone()]);
    for reader in [&a, &b] {
        let res = fetch(&s, &signed(&s, &reader.token, id(&kept)).await).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.bytes().await.unwrap(), Bytes::from(kept_bytes.clone()));
    }
}

async fn an_upload_cut_by_a_crash_leaves_nothing_after_the_restart(backend: Backend) {
    let Some(mut s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let a = s.register("ann").await;
    let total: u64 = 4 << 20;
    let mut tcp = s.tcp_from([127, 0, 0, 1].into()).await;
    tcp.write_all(upload_head(&a.token, total).as_bytes())
        .await
        .unwrap();
    tcp.write_all(&vec![9u8; (total / 2) as usize])
        .await
        .unwrap();
    tcp.flush().await.unwrap();
    // Wait until the server has written some of it to a staging file.
    eventually!(
        "a staging file",
        staging(&s)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    );
    s.kill9();
    drop(tcp);
    assert!(!staging(&s).is_empty(), "the crash left its staging file");

    s.resume_with(SHORT_SWEEP).await;
    eventually!(
        "no staging file and no blob",
        staging(&s).is_empty() && blobs(&s).is_empty()
    );
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
}

/// Files served from an origin of their own: links point there, the bytes
/// may be shown by the app's origin, and the app's page may show them.
#[tokio::test]
async fn files_from_an_origin_of_their_own_are_linked_there_and_shown_by_the_app() {
    let files_origin = "https://files.example.test";
    let s = TestServer::start_with(&[("CONFAB_FILES_BASE_URL", files_origin)]).await;
    let a = s.register("ann").await;
    let file = uploaded(&s, &a, "photo.png", png(64, 64)).await;
    let location = signed(&s, &a.token, id(&file)).await;
    let path = location
        .strip_prefix(files_origin)
        .unwrap_or_else(|| panic!("{location} is not on {files_origin}"));
    assert!(path.starts_with("/files/"), "{location}");

    // The files origin is this server behind another name: the same path.
    let res = fetch(&s, path).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "cross-origin-resource-policy"), "cross-origin");

    let page = s.http().get(s.url("/")).send().await.unwrap();
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains(&format!("img-src 'self' data: {files_origin}")),
        "{csp}"
    );
}

on_each_backend!(
    attachments_ride_on_messages_acks_events_and_history,
    a_file_is_read_by_its_uploader_and_the_members_who_may_read_its_message,
    the_quota_counts_what_a_user_stored_and_nothing_a_broken_upload_sent,
    a_file_never_attached_is_collected_and_an_attached_one_stays,
    an_upload_cut_by_a_crash_leaves_nothing_after_the_restart,
);
