//! Section 1 of the contract: the HTTP endpoints and their errors.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestServer, WAIT, on_each_backend};

async fn register_answers_201_with_user_token_and_expiry(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (status, body) = s
        .post(
            "/api/v1/register",
            json!({"username": "Alice", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["username"], "Alice");
    assert!(body["user"]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    let expires = body["expiresAt"].as_str().unwrap();
    assert!(
        expires.ends_with('Z') && expires.len() == 24,
        "RFC 3339 with ms: {expires}"
    );
}

async fn a_name_taken_in_another_case_is_a_conflict(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    s.register("alice").await;
    let (status, body) = s
        .post(
            "/api/v1/register",
            json!({"username": "ALICE", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn invalid_names_and_passwords_are_bad_requests_saying_which_rule() {
    let s = TestServer::start().await;
    for name in ["ab", "has space", &"x".repeat(33), "ünï"] {
        let (status, body) = s
            .post(
                "/api/v1/register",
                json!({"username": name, "password": "stapled-battery-9"}),
            )
            .await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("username")
        );
    }
    let weak = [
        ("short", "8 to 1024"),
        (&"p".repeat(1025), "8 to 1024"),
        ("password", "common"),
        ("12345678", "common"),
        ("Password123", "common"),
        ("        ", "repeated"),
        ("zzzzzzzzzz", "repeated"),
    ];
    for (password, why) in weak {
        let (status, body) = s
            .post(
                "/api/v1/register",
                json!({"username": "bob", "password": password}),
            )
            .await;
        assert_eq!(status, 400, "{password:?}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("password") && message.contains(why),
            "{password:?}: {message}"
        );
    }
    // None of them made the account.
    let (status, _) = s
        .post(
            "/api/v1/register",
            json!({"username": "bob", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!(status, 201);
}

async fn login_works_and_bad_credentials_get_one_answer(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    s.register("carol").await;
    let (status, body) = s
        .post(
            "/api/v1/login",
            json!({"username": "CAROL", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "carol");
    assert!(body["token"].is_string() && body["expiresAt"].is_string());

    let (s1, wrong_pw) = s
        .post(
            "/api/v1/login",
            json!({"username": "carol", "password": "stapled-battery-8"}),
        )
        .await;
    let (s2, no_user) = s
        .post(
            "/api/v1/login",
            json!({"username": "nobody", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_pw, no_user, "the same answer for both");
    assert_eq!(wrong_pw["error"]["code"], "unauthorized");
}

async fn me_returns_the_token_owner(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let a = s.register("dave").await;
    let (status, body) = s.get("/api/v1/me", Some(&a.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"user": {"id": a.id, "username": "dave"}}));
}

async fn users_are_found_by_prefix_with_their_online_state(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let al = s.register("alfa").await;
    let _ = s.register("Alpha2").await;
    let _ = s.register("bravo").await;
    let _session = s.connect(&al).await;
    let (status, body) = s
        .get("/api/v1/users?prefix=AL&limit=20", Some(&al.token))
        .await;
    assert_eq!(status, 200);
    let users = body["users"].as_array().unwrap();
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alfa", "Alpha2"]);
    assert_eq!(users[0]["online"], true);
    assert_eq!(users[1]["online"], false);
    assert!(users[0]["id"].is_string());

    let (_, body) = s.get("/api/v1/users?limit=1", Some(&al.token)).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
    let (status, body) = s.get("/api/v1/users?limit=zero", Some(&al.token)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, _) = s.get("/api/v1/users", None).await;
    assert_eq!(status, 401);
}

async fn health_and_metrics_answer_without_auth(backend: Backend) {
    let Some(s) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let (status, body) = s.get("/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let res = s.http().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(text.contains("# TYPE confab_sessions gauge"), "{text}");
    assert!(text.contains("confab_http_requests_total"), "{text}");
    assert!(
        text.contains("# TYPE confab_store_commit_seconds histogram"),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let s = TestServer::start().await;
    let url = s.url("/api/v1/register");
    let send = |body: Vec<u8>, content_type: &'static str| {
        let req = s
            .http()
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send(b"{not json".to_vec(), "application/json").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = send(b"[1,2]".to_vec(), "application/json").await;
    assert_eq!(status, 400);
    let (status, body) = send(br#"{"username":"x"}"#.to_vec(), "text/plain").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type")
    );
    let (status, body) = send(br#"{"username":"erin"}"#.to_vec(), "application/json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password")
    );
    let (status, _) = send(
        br#"{"username":5,"password":"stapled-battery-9"}"#.to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(status, 400);
    let big = format!(
        r#"{{"username":"erin","password":"stapled-battery-9","pad":"{}"}}"#,
        "x".repeat(65 * 1024)
    );
    let (status, body) = send(big.into_bytes(), "application/json").await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "too_large");
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413_too() {
    let s = TestServer::start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..70).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = s
        .http()
        .post(s.url("/api/v1/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_json_errors() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let res = s
        .http()
        .get(s.url("/api/v1/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn password_endpoints_are_rate_limited_per_address() {
    let s = TestServer::start_with(&[
        ("CONFAB_AUTH_RATE_PER_SEC", "1"),
        ("CONFAB_AUTH_RATE_BURST", "3"),
    ])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, body) = s
            .post(
                "/api/v1/login",
                json!({"username": "nobody", "password": "stapled-battery-9"}),
            )
            .await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Other endpoints are not affected.
    assert_eq!(s.get("/healthz", None).await.0, 200);
}

on_each_backend!(
    register_answers_201_with_user_token_and_expiry,
    a_name_taken_in_another_case_is_a_conflict,
    login_works_and_bad_credentials_get_one_answer,
    me_returns_the_token_owner,
    users_are_found_by_prefix_with_their_online_state,
    health_and_metrics_answer_without_auth,
);

#[tokio::test]
async fn a_client_still_sending_an_oversized_body_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let len = 600 * 1024;
    let head = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body goes on after the server has seen the length it refuses:
    // every write must still land, and the answer then be there to read.
    for _ in 0..len / (60 * 1024) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stream
            .write_all(&[b' '; 60 * 1024])
            .await
            .expect("the server still reads");
    }
    let mut answer = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .expect("an answer, not a reset");
    assert_eq!(&answer, b"HTTP/1.1 413");
}
