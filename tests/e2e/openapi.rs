//! The OpenAPI document (`docs/openapi.json`, served at
//! `/api/v1/openapi.json`) against the live server: every operation is
//! driven into every status the document gives it (but the 5xx of a failing
//! store), and every answer has a documented status, content type, headers
//! and a body of the documented schema. The router's own list of routes is
//! compared with the document by a unit test in `src/adapters/http/tests.rs`.

use std::collections::BTreeSet;

use reqwest::RequestBuilder;
use reqwest::header::{ALLOW, CONTENT_TYPE, COOKIE, HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{Client, TestServer};

/// The document, as the repository holds it.
const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// A JSON pointer token (RFC 6901).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The document, and what the server was seen to answer.
struct Contract {
    doc: Value,
    /// (operationId, status) pairs answered and found as documented.
    seen: BTreeSet<(String, u16)>,
}

impl Contract {
    fn new() -> Self {
        Self {
            doc: serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON"),
            seen: BTreeSet::new(),
        }
    }

    /// Fails unless `body` is valid against the schema at `pointer` (a
    /// JSON pointer into the document).
    fn validate(&self, pointer: &str, body: &Value, what: &str) {
        let errors = self.errors(pointer, body);
        assert!(
            errors.is_empty(),
            "{what}: {body} is not {pointer}: {errors:?}"
        );
    }

    /// What makes `body` invalid against the schema at `pointer`.
    fn errors(&self, pointer: &str, body: &Value) -> Vec<String> {
        let mut schema = self.doc.clone();
        // A URI fragment cannot hold a path template's braces as they are.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        schema["$ref"] = json!(format!("#{fragment}"));
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Sends `req` (a call of `method` on the document's `path`), checks
    /// the answer against the document, and returns its status and body.
    async fn call(&mut self, method: &str, path: &str, req: RequestBuilder) -> (u16, Value) {
        let (status, _, body) = self.call_with_headers(method, path, req).await;
        (status, body)
    }

    /// [`Contract::call`], with the answer's headers.
    async fn call_with_headers(
        &mut self,
        method: &str,
        path: &str,
        req: RequestBuilder,
    ) -> (u16, HeaderMap, Value) {
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("a body");
        let body = self.check(method, path, status, &headers, &bytes);
        (status, headers, body)
    }

    /// Checks an answer against the document; returns its JSON body (or null).
    fn check(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        headers: &HeaderMap,
        bytes: &[u8],
    ) -> Value {
        let what = format!("{method} {path} answered {status}");
        let op_pointer = format!(
            "/paths/{}/{}",
            pointer_token(path),
            method.to_ascii_lowercase()
        );
        let op = self
            .doc
            .pointer(&op_pointer)
            .unwrap_or_else(|| panic!("{what}: the operation is not documented"));
        let op_id = op["operationId"].as_str().expect("operationId").to_owned();
        let mut res_pointer = format!("{op_pointer}/responses/{status}");
        let mut response = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{what}: the status is not documented"));
        if let Some(target) = response["$ref"].as_str() {
            res_pointer = target.trim_start_matches('#').to_owned();
            response = self.doc.pointer(&res_pointer).expect("the $ref resolves");
        }
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            if header["required"] == true {
                assert!(value.is_some(), "{what}: no {name} header");
            }
            if let (Some(value), Some(want)) = (value, header["schema"]["const"].as_str()) {
                assert_eq!(value, want, "{what}: header {name}");
            }
        }
        let mut body = Value::Null;
        if let Some(content) = response["content"].as_object() {
            let mime = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or_default()
                .trim()
                .to_owned();
            assert!(
                content.contains_key(&mime),
                "{what}: Content-Type {mime:?} is not documented"
            );
            let schema = format!("{res_pointer}/content/{}/schema", pointer_token(&mime));
            body = if mime == "application/json" {
                serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
            } else {
                // A file's bytes need not be text; their schema is a string.
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            };
            self.validate(&schema, &body, &what);
        }
        self.seen.insert((op_id, status));
        body
    }

    /// Every (operationId, status) the document gives, but the 5xx.
    fn documented_below_500(&self) -> BTreeSet<(String, u16)> {
        let mut all = BTreeSet::new();
        for item in self.doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let Some(id) = op["operationId"].as_str() else {
                    continue;
                };
                for status in op["responses"].as_object().unwrap().keys() {
                    let status: u16 = status.parse().expect("numeric statuses only");
                    if status < 500 {
                        all.insert((id.to_owned(), status));
                    }
                }
            }
        }
        all
    }

    /// Each documented path with its methods.
    fn routes(&self) -> Vec<(String, BTreeSet<String>)> {
        let mut routes = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            routes.push((path.clone(), methods));
        }
        routes
    }
}

#[tokio::test]
async fn every_operation_answers_each_documented_status_as_documented() {
    let s = TestServer::start().await;
    let http = s.http();
    let mut c = Contract::new();

    // The document served is the repository's.
    let (_, served) = c
        .call(
            "GET",
            "/api/v1/openapi.json",
            http.get(s.url("/api/v1/openapi.json")),
        )
        .await;
    assert_eq!(served, c.doc);
    c.call("GET", "/healthz", http.get(s.url("/healthz"))).await;
    let (_, metrics) = c.call("GET", "/metrics", http.get(s.url("/metrics"))).await;
    assert!(metrics.as_str().unwrap().contains("confab_sessions"));

    let register = |body: Value| http.post(s.url("/api/v1/register")).json(&body);
    let login = |body: Value| http.post(s.url("/api/v1/login")).json(&body);
    let alice = json!({"username": "alice", "password": "stapled-battery-9"});
    let (status, signed) = c
        .call("POST", "/api/v1/register", register(alice.clone()))
        .await;
    assert_eq!(status, 201);
    let token = signed["token"].as_str().unwrap().to_owned();
    let refused = [
        register(json!({"username": "ALICE", "password": "stapled-battery-9"})),
        register(json!({"username": "a", "password": "stapled-battery-9"})),
        register(json!({"username": "bob"})),
        http.post(s.url("/api/v1/register")).body(alice.to_string()),
        http.post(s.url("/api/v1/register"))
            .header(CONTENT_TYPE, "application/json")
            .body(vec![b' '; 65 * 1024]),
    ];
    for (req, want) in refused.into_iter().zip([409, 400, 400, 400, 413]) {
        assert_eq!(c.call("POST", "/api/v1/register", req).await.0, want);
    }
    let logins = [
        login(alice.clone()),
        login(json!({"username": "alice", "password": "wrong-password"})),
        login(json!({"username": 5, "password": "stapled-battery-9"})),
        http.post(s.url("/api/v1/login"))
            .header(CONTENT_TYPE, "application/json")
            .body("{\"username\":"),
        http.post(s.url("/api/v1/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(vec![b' '; 65 * 1024]),
    ];
    for (req, want) in logins.into_iter().zip([200, 401, 400, 400, 413]) {
        assert_eq!(c.call("POST", "/api/v1/login", req).await.0, want);
    }

    let me = s.url("/api/v1/me");
    assert_eq!(
        c.call("GET", "/api/v1/me", http.get(&me).bearer_auth(&token))
            .await
            .0,
        200
    );
    assert_eq!(c.call("GET", "/api/v1/me", http.get(&me)).await.0, 401);
    assert_eq!(
        c.call("GET", "/api/v1/me", http.get(&me).bearer_auth("x.y.z"))
            .await
            .0,
        401
    );

    let users = |query: &str| http.get(s.url(&format!("/api/v1/users{query}")));
    let (status, found) = c
        .call(
            "GET",
            "/api/v1/users",
            users("?prefix=AL&limit=5").bearer_auth(&token),
        )
        .await;
    assert_eq!(
        (status, found["users"][0]["username"].clone()),
        (200, json!("alice"))
    );
    // A limit past u64::MAX is clamped like any other above 100.
    let huge = users("?limit=43790448832129691287552").bearer_auth(&token);
    assert_eq!(c.call("GET", "/api/v1/users", huge).await.0, 200);
    for query in ["?limit=0", "?limit=-1", "?limit=x", "?limit="] {
        let req = users(query).bearer_auth(&token);
        assert_eq!(c.call("GET", "/api/v1/users", req).await.0, 400, "{query}");
    }
    assert_eq!(c.call("GET", "/api/v1/users", users("")).await.0, 401);

    let ws = s.url("/ws");
    let upgrade_without_key = http
        .get(&ws)
        .bearer_auth(&token)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket");
    assert_eq!(c.call("GET", "/ws", upgrade_without_key).await.0, 400);
    assert_eq!(c.call("GET", "/ws", http.get(&ws)).await.0, 401);
    let by_query = http.get(format!("{ws}?access_token={token}"));
    assert_eq!(c.call("GET", "/ws", by_query).await.0, 426);
    // A real handshake: the client library checks the 101 itself.
    let session = Client::connect(&s.ws_url(), &token)
        .await
        .expect("upgraded");
    c.check("GET", "/ws", 101, &HeaderMap::new(), b"");

    device_sessions(&s, &mut c).await;
    files(&s, &mut c).await;

    // The limits' answers, on a server with tight ones.
    let tight = TestServer::start_with(&[
        ("CONFAB_AUTH_RATE_PER_SEC", "1"),
        ("CONFAB_AUTH_RATE_BURST", "2"),
        ("CONFAB_MAX_SESSIONS_PER_USER", "1"),
        ("CONFAB_MAX_FILE_BYTES", "64"),
        ("CONFAB_UPLOADS_PER_MINUTE", "3"),
    ])
    .await;
    let bob = tight.register("bob").await;
    let _only = tight.connect(&bob).await;
    let ws = tight.url("/ws");
    let handshake = || {
        tight
            .http()
            .get(&ws)
            .bearer_auth(&bob.token)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    assert_eq!(c.call("GET", "/ws", handshake()).await.0, 429);
    // Refresh, password and DELETE /me share register's and login's limiter.
    let unknown_refresh = json!({"refreshToken": "A".repeat(43)});
    let wrong_password =
        json!({"currentPassword": "not-the-password", "newPassword": "correct-horse-7"});
    let wrong_delete = json!({"password": "not-the-password"});
    for (method, path, body) in [
        ("POST", "/api/v1/login", &alice),
        ("POST", "/api/v1/register", &alice),
        ("POST", "/api/v1/token/refresh", &unknown_refresh),
        ("POST", "/api/v1/password", &wrong_password),
        ("DELETE", "/api/v1/me", &wrong_delete),
    ] {
        let mut last = 0;
        for _ in 0..10 {
            let req = tight
                .http()
                .request(method.parse().unwrap(), tight.url(path))
                .bearer_auth(&bob.token);
            last = c.call(method, path, req.json(body)).await.0;
            if last == 429 {
                break;
            }
        }
        assert_eq!(last, 429, "{path}");
    }
    // Past max_file_bytes, then past uploads_per_minute (both count).
    let upload = || {
        tight
            .http()
            .post(tight.url("/api/v1/files"))
            .bearer_auth(&bob.token)
    };
    let too_big = upload().body(vec![b'x'; 65]);
    assert_eq!(c.call("POST", "/api/v1/files", too_big).await.0, 413);
    let create = || {
        tight
            .http()
            .post(tight.url("/api/v1/uploads"))
            .bearer_auth(&bob.token)
            .header("Tus-Resumable", "1.0.0")
    };
    let too_long = create().header("Upload-Length", "65");
    assert_eq!(c.call("POST", "/api/v1/uploads", too_long).await.0, 413);
    let mut last = 0;
    for _ in 0..5 {
        last = c
            .call("POST", "/api/v1/files", upload().body("small"))
            .await
            .0;
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
    let limited = create().header("Upload-Length", "5");
    assert_eq!(c.call("POST", "/api/v1/uploads", limited).await.0, 429);
    session.close().await;

    let missing: Vec<_> = c
        .documented_below_500()
        .difference(&c.seen)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "documented but never seen: {missing:?}");
}

/// The device-session operations (refresh, sessions, logout, logout-all,
/// password, account deletion) into each of their documented statuses
/// below 500, but the 429s, which need a server with tight limits.
async fn device_sessions(s: &TestServer, c: &mut Contract) {
    let http = s.http();
    let post = |path: &str| http.post(s.url(path));
    let oversized = |req: RequestBuilder| {
        req.header(CONTENT_TYPE, "application/json")
            .body(vec![b' '; 65 * 1024])
    };
    let password = "stapled-battery-9";
    let carol = json!({"username": "carol", "password": password});

    // JSON mode: the refresh token rotates, the device session stays.
    let named = json!({"username": "carol", "password": password, "deviceName": "  laptop "});
    let (status, first) = c
        .call(
            "POST",
            "/api/v1/register",
            post("/api/v1/register").json(&named),
        )
        .await;
    assert_eq!(status, 201);
    let device = first["sessionId"].as_str().unwrap().to_owned();
    let spent = first["refreshToken"].as_str().unwrap().to_owned();
    let refresh = |body: Value| post("/api/v1/token/refresh").json(&body);
    let (status, renewed) = c
        .call(
            "POST",
            "/api/v1/token/refresh",
            refresh(json!({"refreshToken": spent})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(renewed["sessionId"], first["sessionId"]);
    assert_ne!(renewed["refreshToken"], first["refreshToken"]);
    let token = renewed["token"].as_str().unwrap().to_owned();
    let refused = [
        // Spent a moment ago: within the grace, a conflict.
        refresh(json!({"refreshToken": spent})),
        refresh(json!({"refreshToken": "A".repeat(43)})),
        refresh(json!({"refreshToken": 5})),
        oversized(post("/api/v1/token/refresh")),
    ];
    for (req, want) in refused.into_iter().zip([409, 401, 400, 413]) {
        assert_eq!(c.call("POST", "/api/v1/token/refresh", req).await.0, want);
    }

    // Cookie mode: the token only in an HttpOnly cookie, read back only
    // with the header that a cross-site form cannot set.
    let cookie_of = |headers: &HeaderMap| -> String {
        let set = headers[SET_COOKIE].to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(set.contains("Path=/api/v1/token"), "{set}");
        set.split(';').next().unwrap().to_owned()
    };
    let cookie_mode = post("/api/v1/login")
        .header("X-Confab-Refresh", "cookie")
        .json(&carol);
    let (status, headers, by_cookie) = c
        .call_with_headers("POST", "/api/v1/login", cookie_mode)
        .await;
    assert_eq!((status, &by_cookie["refreshToken"]), (200, &Value::Null));
    let cookie = cookie_of(&headers);
    let other_device = by_cookie["sessionId"].as_str().unwrap().to_owned();
    let other_token = by_cookie["token"].as_str().unwrap().to_owned();
    let without_header = post("/api/v1/token/refresh").header(COOKIE, &cookie);
    assert_eq!(
        c.call("POST", "/api/v1/token/refresh", without_header)
            .await
            .0,
        403
    );
    let from_cookie = post("/api/v1/token/refresh")
        .header(COOKIE, &cookie)
        .header("X-Confab-Refresh", "cookie");
    let (status, headers, body) = c
        .call_with_headers("POST", "/api/v1/token/refresh", from_cookie)
        .await;
    assert_eq!((status, &body["refreshToken"]), (200, &Value::Null));
    assert_ne!(cookie_of(&headers), cookie);

    // The list, newest use first, and ending one session from another.
    let sessions = |token: &str| http.get(s.url("/api/v1/sessions")).bearer_auth(token);
    let (status, list) = c.call("GET", "/api/v1/sessions", sessions(&token)).await;
    assert_eq!(status, 200);
    let listed: Vec<_> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(other_device.as_str(), false), (device.as_str(), true)]
    );
    assert_eq!(list["sessions"][1]["name"], "laptop");
    let unsigned = http.get(s.url("/api/v1/sessions"));
    assert_eq!(c.call("GET", "/api/v1/sessions", unsigned).await.0, 401);
    let end = |id: &str| http.delete(s.url(&format!("/api/v1/sessions/{id}")));
    let one = "/api/v1/sessions/{id}";
    let ends = [
        (end(&other_device).bearer_auth(&token), 204),
        (end(&other_device).bearer_auth(&token), 404),
        (end("nothing").bearer_auth(&token), 404),
        (end(&device), 401),
    ];
    for (req, want) in ends {
        assert_eq!(c.call("DELETE", one, req).await.0, want);
    }
    // The ended session's token is refused at once.
    assert_eq!(
        c.call("GET", "/api/v1/sessions", sessions(&other_token))
            .await
            .0,
        401
    );

    // A password change keeps this session and ends the others.
    let (_, third) = s.post("/api/v1/login", carol.clone()).await;
    let third = third["token"].as_str().unwrap().to_owned();
    let change = |current: &str, new: &str| {
        post("/api/v1/password")
            .bearer_auth(&third)
            .json(&json!({"currentPassword": current, "newPassword": new}))
    };
    let new_password = "correct-horse-7";
    let changes = [
        change("not-the-password", new_password),
        change(password, "aaaaaaaa"),
        oversized(post("/api/v1/password").bearer_auth(&third)),
        post("/api/v1/password")
            .json(&json!({"currentPassword": password, "newPassword": new_password})),
        change(password, new_password),
    ];
    for (req, want) in changes.into_iter().zip([403, 400, 413, 401, 204]) {
        assert_eq!(c.call("POST", "/api/v1/password", req).await.0, want);
    }
    assert_eq!(s.get("/api/v1/me", Some(&token)).await.0, 401);
    assert_eq!(s.get("/api/v1/me", Some(&third)).await.0, 200);

    // Logout ends this session, and in cookie mode clears the cookie.
    let logout = |token: &str| {
        post("/api/v1/logout")
            .bearer_auth(token)
            .header("X-Confab-Refresh", "cookie")
    };
    let (status, headers, _) = c
        .call_with_headers("POST", "/api/v1/logout", logout(&third))
        .await;
    assert_eq!(status, 204);
    let cleared = headers[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("confab_refresh=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        c.call("POST", "/api/v1/logout", logout(&third)).await.0,
        401
    );

    // Logout everywhere ends every session of the user.
    let carol = json!({"username": "carol", "password": new_password});
    let (_, a) = s.post("/api/v1/login", carol.clone()).await;
    let (_, b) = s.post("/api/v1/login", carol.clone()).await;
    let (a, b) = (a["token"].as_str().unwrap(), b["token"].as_str().unwrap());
    let everywhere = |token: &str| post("/api/v1/logout-all").bearer_auth(token);
    for (req, want) in [(everywhere(a), 204), (everywhere(b), 401)] {
        assert_eq!(c.call("POST", "/api/v1/logout-all", req).await.0, want);
    }
    assert_eq!(s.get("/api/v1/me", Some(a)).await.0, 401);

    // Deleting the account asks for the password again.
    let (_, last) = s.post("/api/v1/login", carol.clone()).await;
    let last = last["token"].as_str().unwrap();
    let me = "/api/v1/me";
    let delete = |body: Value| http.delete(s.url(me)).bearer_auth(last).json(&body);
    let deletions = [
        delete(json!({"password": password})),
        delete(json!({})),
        oversized(http.delete(s.url(me)).bearer_auth(last)),
        http.delete(s.url(me))
            .json(&json!({"password": new_password})),
        delete(json!({"password": new_password})),
        delete(json!({"password": new_password})),
    ];
    for (req, want) in deletions.into_iter().zip([403, 400, 413, 401, 204, 401]) {
        assert_eq!(c.call("DELETE", me, req).await.0, want);
    }
    // The name stays taken, and nobody signs in with it.
    assert_eq!(s.post("/api/v1/register", carol.clone()).await.0, 409);
    assert_eq!(s.post("/api/v1/login", carol).await.0, 401);
}

/// The file operations (upload, links, signed downloads, tus) into each
/// of their documented statuses below 500, but the ones that need tight
/// limits (413 over max_file_bytes, 429).
async fn files(s: &TestServer, c: &mut Contract) {
    use base64::Engine as _;
    let http = s.http();
    // Redirects are answers to check, not to follow.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let fay = s.register("fay").await;
    let gus = s.register("gus").await;

    // Simple uploads.
    let post = "/api/v1/files";
    let upload = |token: &str| http.post(s.url(post)).bearer_auth(token);
    let (status, text) = c
        .call(
            "POST",
            post,
            upload(&fay.token)
                .header("X-File-Name", "notes%20%C3%A9t%C3%A9.txt")
                .body("hello, files"),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(text["file"]["name"], "notes été.txt");
    assert_eq!(text["file"]["contentType"], "text/plain");
    let text_id = text["file"]["id"].as_str().unwrap().to_owned();
    // A 1×1 PNG: an image, with a thumbnail.
    let png = base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
        .unwrap();
    let (status, image) = c
        .call(
            "POST",
            post,
            http.post(s.url("/api/v1/files?name=dot.png"))
                .bearer_auth(&fay.token)
                .body(png.clone()),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        (&image["file"]["contentType"], &image["file"]["thumbnail"]),
        (&json!("image/png"), &json!(true))
    );
    let image_id = image["file"]["id"].as_str().unwrap().to_owned();
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter([Ok::<_, std::io::Error>(
        "no length".as_bytes(),
    )]));
    let refused = [
        (
            upload(&fay.token)
                .header("Content-Length", "0")
                .body(Vec::<u8>::new()),
            400,
        ),
        (http.post(s.url(post)).body("x"), 401),
        (upload(&fay.token).body(chunked), 411),
    ];
    for (req, want) in refused {
        assert_eq!(c.call("POST", post, req).await.0, want);
    }

    // Links: 302, or JSON; the thumbnail's; 404 for others' and for none.
    let one = "/api/v1/files/{id}";
    let thumb = "/api/v1/files/{id}/thumbnail";
    let link = |id: &str, tail: &str, token: &str| {
        direct
            .get(s.url(&format!("/api/v1/files/{id}{tail}")))
            .bearer_auth(token)
    };
    let (status, headers, _) = c
        .call_with_headers("GET", one, link(&text_id, "", &fay.token))
        .await;
    assert_eq!(status, 302);
    let location = headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("/files/{text_id}?")),
        "{location}"
    );
    let (status, linked) = c
        .call("GET", one, link(&image_id, "?redirect=false", &fay.token))
        .await;
    assert_eq!(status, 200);
    let image_url = linked["url"].as_str().unwrap().to_owned();
    let thumb_url = linked["thumbnailUrl"].as_str().unwrap().to_owned();
    for (req, want) in [
        (link(&text_id, "", &gus.token), 404),
        (link("nothing", "", &fay.token), 404),
        (direct.get(s.url(&format!("/api/v1/files/{text_id}"))), 401),
    ] {
        assert_eq!(c.call("GET", one, req).await.0, want);
    }
    for (req, want) in [
        (link(&image_id, "/thumbnail", &fay.token), 302),
        (
            link(&image_id, "/thumbnail?redirect=false", &fay.token),
            200,
        ),
        (link(&text_id, "/thumbnail", &fay.token), 404),
        (
            direct.get(s.url(&format!("/api/v1/files/{image_id}/thumbnail"))),
            401,
        ),
    ] {
        assert_eq!(c.call("GET", thumb, req).await.0, want);
    }

    // Signed downloads: whole, ranges, validators, bad links.
    let signed = "/files/{id}";
    let signed_thumb = "/files/{id}/thumbnail";
    let text_url = location;
    for method in ["GET", "HEAD"] {
        let at = |url: &str| http.request(method.parse().unwrap(), s.url(url));
        let (status, headers, body) = c.call_with_headers(method, signed, at(&text_url)).await;
        assert_eq!(status, 200);
        if method == "GET" {
            assert_eq!(body, json!("hello, files"));
        }
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let tampered = text_url.replace("&s=", "&s=A");
        for (req, want) in [
            (at(&text_url).header("Range", "bytes=0-4"), 206),
            (at(&text_url).header("If-None-Match", &etag), 304),
            (at(&text_url).header("Range", "bytes=100-"), 416),
            (at(&tampered), 403),
        ] {
            assert_eq!(c.call(method, signed, req).await.0, want, "{method}");
        }
        let (status, headers, _) = c
            .call_with_headers(method, signed_thumb, at(&thumb_url))
            .await;
        assert_eq!(status, 200);
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let conditional = at(&thumb_url).header("If-None-Match", &etag);
        assert_eq!(c.call(method, signed_thumb, conditional).await.0, 304);
        let tampered = thumb_url.replace("&s=", "&s=A");
        assert_eq!(c.call(method, signed_thumb, at(&tampered)).await.0, 403);
    }
    let whole = http.get(s.url(&image_url)).send().await.unwrap();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), png.as_slice());

    // A member reads what a message carries, and no more once they left.
    let mut fay_ws = s.connect(&fay).await;
    let mut gus_ws = s.connect(&gus).await;
    let room = fay_ws
        .ack(
            "createRoom",
            json!({"name": "files", "visibility": "public"}),
        )
        .await;
    let room = room["conversation"]["id"].as_str().unwrap().to_owned();
    gus_ws
        .ack("joinRoom", json!({"conversationId": room}))
        .await;
    let sent = fay_ws
        .ack(
            "sendMessage",
            json!({"conversationId": room, "body": "", "attachments": [image_id]}),
        )
        .await;
    assert_eq!(sent["message"]["attachments"][0]["id"], json!(image_id));
    let (status, theirs) = c
        .call("GET", one, link(&image_id, "?redirect=false", &gus.token))
        .await;
    assert_eq!(status, 200);
    let (their_url, their_thumb) = (
        theirs["url"].as_str().unwrap().to_owned(),
        theirs["thumbnailUrl"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        http.get(s.url(&their_url)).send().await.unwrap().status(),
        200
    );
    gus_ws
        .ack("leaveRoom", json!({"conversationId": room}))
        .await;
    for method in ["GET", "HEAD"] {
        let at = |url: &str| http.request(method.parse().unwrap(), s.url(url));
        assert_eq!(c.call(method, signed, at(&their_url)).await.0, 404);
        assert_eq!(c.call(method, signed_thumb, at(&their_thumb)).await.0, 404);
    }
    fay_ws.close().await;
    gus_ws.close().await;

    // tus: options, creation, chunks, offsets, checksums, termination.
    let uploads = "/api/v1/uploads";
    let upload_at = "/api/v1/uploads/{id}";
    let options = http.request(reqwest::Method::OPTIONS, s.url(uploads));
    assert_eq!(c.call("OPTIONS", uploads, options).await.0, 204);
    let options = http.request(reqwest::Method::OPTIONS, s.url("/api/v1/uploads/an-id"));
    assert_eq!(c.call("OPTIONS", upload_at, options).await.0, 204);
    let create = |token: &str| {
        http.post(s.url(uploads))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
    };
    let name = base64::engine::general_purpose::STANDARD.encode("big.txt");
    let (status, headers, _) = c
        .call_with_headers(
            "POST",
            uploads,
            create(&fay.token)
                .header("Upload-Length", "10")
                .header("Upload-Metadata", format!("filename {name}")),
        )
        .await;
    assert_eq!(status, 201);
    let at = headers["location"].to_str().unwrap().to_owned();
    for (req, want) in [
        (create(&fay.token), 400),
        (create(&fay.token).header("Upload-Length", "0"), 400),
        (
            http.post(s.url(uploads))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "5"),
            401,
        ),
        (
            http.post(s.url(uploads))
                .bearer_auth(&fay.token)
                .header("Upload-Length", "5"),
            412,
        ),
    ] {
        assert_eq!(c.call("POST", uploads, req).await.0, want);
    }
    let tus = |method: &str, url: &str, token: &str| {
        http.request(method.parse().unwrap(), s.url(url))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
    };
    let chunk = |offset: &str, token: &str| {
        tus("PATCH", &at, token)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
    };
    let sha256 = |bytes: &[u8]| {
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
    };
    let (status, headers, _) = c
        .call_with_headers(
            "PATCH",
            upload_at,
            chunk("0", &fay.token)
                .header("Upload-Checksum", format!("sha256 {}", sha256(b"01234")))
                .body("01234"),
        )
        .await;
    assert_eq!(
        (status, headers["upload-offset"].to_str().unwrap()),
        (204, "5")
    );
    for (req, want) in [
        (chunk("0", &fay.token).body("56789"), 409),
        (
            tus("PATCH", &at, &fay.token)
                .header("Content-Type", "application/offset+octet-stream")
                .body("56789"),
            400,
        ),
        (chunk("5", &fay.token).body("56789-and-more"), 413),
        (
            tus("PATCH", &at, &fay.token)
                .header("Upload-Offset", "5")
                .body("56789"),
            415,
        ),
        (
            chunk("5", &fay.token)
                .header("Upload-Checksum", format!("sha256 {}", sha256(b"other")))
                .body("56789"),
            460,
        ),
        (chunk("5", &gus.token).body("56789"), 404),
        (
            http.patch(s.url(&at))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "5")
                .body("56789"),
            401,
        ),
        (
            http.patch(s.url(&at))
                .bearer_auth(&fay.token)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "5")
                .body("56789"),
            412,
        ),
    ] {
        assert_eq!(c.call("PATCH", upload_at, req).await.0, want);
    }
    let (status, headers, _) = c
        .call_with_headers("HEAD", upload_at, tus("HEAD", &at, &fay.token))
        .await;
    assert_eq!(
        (status, headers["upload-offset"].to_str().unwrap()),
        (200, "5")
    );
    for (req, want) in [
        (tus("HEAD", &at, &gus.token), 404),
        (http.head(s.url(&at)).header("Tus-Resumable", "1.0.0"), 401),
        (http.head(s.url(&at)).bearer_auth(&fay.token), 412),
    ] {
        assert_eq!(c.call("HEAD", upload_at, req).await.0, want);
    }
    let (status, headers, _) = c
        .call_with_headers("PATCH", upload_at, chunk("5", &fay.token).body("56789"))
        .await;
    assert_eq!(status, 204);
    let made = headers["x-confab-file-id"].to_str().unwrap().to_owned();
    let (status, file) = s
        .get(
            &format!("/api/v1/files/{made}?redirect=false"),
            Some(&fay.token),
        )
        .await;
    assert_eq!(
        (status, &file["file"]["size"], &file["file"]["name"]),
        (200, &json!(10), &json!("big.txt"))
    );
    // Complete, the upload names its file until it expires.
    assert_eq!(
        c.call("HEAD", upload_at, tus("HEAD", &at, &fay.token))
            .await
            .0,
        200
    );

    let (_, headers, _) = c
        .call_with_headers(
            "POST",
            uploads,
            create(&fay.token).header("Upload-Length", "3"),
        )
        .await;
    let ended = headers["location"].to_str().unwrap().to_owned();
    for (req, want) in [
        (http.delete(s.url(&ended)).bearer_auth(&fay.token), 412),
        (
            http.delete(s.url(&ended)).header("Tus-Resumable", "1.0.0"),
            401,
        ),
        (tus("DELETE", &ended, &gus.token), 404),
        (tus("DELETE", &ended, &fay.token), 204),
        (tus("DELETE", &ended, &fay.token), 404),
    ] {
        assert_eq!(c.call("DELETE", upload_at, req).await.0, want);
    }
}

#[tokio::test]
async fn other_methods_are_405_allowing_the_documented_ones_and_other_paths_404() {
    let s = TestServer::start().await;
    let c = Contract::new();
    for (path, methods) in c.routes() {
        let other = ["GET", "DELETE", "PUT"]
            .into_iter()
            .find(|m| !methods.contains(*m))
            .unwrap();
        // A template's parameter as a client would fill it.
        let url = s.url(&path.replace("{id}", "an-id"));
        let res = s
            .http()
            .request(other.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{other} {path}");
        let allow: BTreeSet<String> = res.headers()[ALLOW]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        assert_eq!(allow, methods, "{path}");
        let body: Value = res.json().await.unwrap();
        c.validate("/components/schemas/Error", &body, &path);
    }
    // The schemas do refuse what is not so.
    for wrong in [
        json!({"error": {"code": "nope", "message": "m"}}),
        json!({"error": {"code": "not_found"}}),
        json!({"error": {"code": "not_found", "message": "m"}, "more": 1}),
    ] {
        assert!(
            !c.errors("/components/schemas/Error", &wrong).is_empty(),
            "{wrong}"
        );
    }
    let res = s.http().get(s.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    c.validate("/components/schemas/Error", &body, "an unknown path");
}
