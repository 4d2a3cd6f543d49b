//! The OpenAPI document (`docs/openapi.json`, served at
//! `/api/v1/openapi.json`) against the live server: every operation is
//! driven into every status the document gives it (but the 5xx of a failing
//! store), and every answer has a documented status, content type, headers
//! and a body of the documented schema. The router's own list of routes is
//! compared with the document by a unit test in `src/adapters/http/tests.rs`.

use std::collections::BTreeSet;

use reqwest::RequestBuilder;
use reqwest::header::{ALLOW, CONTENT_TYPE, HeaderMap};
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
        schema["$ref"] = json!(format!("#{pointer}"));
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Sends `req` (a call of `method` on the document's `path`), checks
    /// the answer against the document, and returns its status and body.
    async fn call(&mut self, method: &str, path: &str, req: RequestBuilder) -> (u16, Value) {
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("a body");
        let body = self.check(method, path, status, &headers, &bytes);
        (status, body)
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
                Value::String(String::from_utf8(bytes.to_vec()).expect("text"))
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

    /// Each documented path with its one method.
    fn routes(&self) -> Vec<(String, String)> {
        let mut routes = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                routes.push((path.clone(), method.to_ascii_uppercase()));
            }
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

    // The limits' answers, on a server with tight ones.
    let tight = TestServer::start_with(&[
        ("CONFAB_AUTH_RATE_PER_SEC", "1"),
        ("CONFAB_AUTH_RATE_BURST", "2"),
        ("CONFAB_MAX_SESSIONS_PER_USER", "1"),
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
    for (path, body) in [("/api/v1/login", &alice), ("/api/v1/register", &alice)] {
        let mut last = 0;
        for _ in 0..10 {
            last = c
                .call("POST", path, tight.http().post(tight.url(path)).json(body))
                .await
                .0;
            if last == 429 {
                break;
            }
        }
        assert_eq!(last, 429, "{path}");
    }
    session.close().await;

    let missing: Vec<_> = c
        .documented_below_500()
        .difference(&c.seen)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "documented but never seen: {missing:?}");
}

#[tokio::test]
async fn other_methods_are_405_allowing_the_documented_one_and_other_paths_404() {
    let s = TestServer::start().await;
    let c = Contract::new();
    for (path, method) in c.routes() {
        let other = if method == "GET" { "DELETE" } else { "GET" };
        let res = s
            .http()
            .request(other.parse().unwrap(), s.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{other} {path}");
        assert_eq!(res.headers()[ALLOW], method.as_str(), "{path}");
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
