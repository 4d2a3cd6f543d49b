//! The edge: request timeouts, connection caps per address and in total
//! (under a low open-files limit too), the client's address behind a
//! trusted proxy, the per-account login throttle, the headers of API
//! answers, `/metrics` on a listener of its own, and rate-limited logs.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestServer, WAIT};

const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Whether the server closes `stream` within `limit` (whatever it sends
/// first, a `408` say, is read and dropped).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Sends one request on `stream` and reads its whole answer (the status
/// line and headers, and `Content-Length` bytes of body).
async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer was complete");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&got).into_owned()
}

/// The value of the counter line of `/metrics` that starts with `prefix`.
async fn counter(client: &reqwest::Client, url: &str, prefix: &str) -> u64 {
    try_counter(client, url, prefix)
        .await
        .expect("the metrics answer")
}

/// `counter`, or `None` when the request fails.
async fn try_counter(client: &reqwest::Client, url: &str, prefix: &str) -> Option<u64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0),
    )
}

/// `/healthz`, a login and a WebSocket session, all from `from`.
async fn served_from(s: &TestServer, from: IpAddr, account: &crate::helpers::Account) {
    let http = s.http_from(from);
    let health = http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let login = http
        .post(s.url("/api/v1/login"))
        .json(&json!({"username": account.username, "password": "stapled-battery-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let mut c = s.connect_from(from, account).await;
    c.ack("ping", json!({})).await;
}

#[tokio::test]
async fn a_silent_connection_a_trickled_header_and_an_idle_keep_alive_are_closed() {
    let s = TestServer::start_with(&[("CONFAB_REQUEST_TIMEOUT_SECS", "2")]).await;
    let guard = Duration::from_secs(20);

    let mut silent = s.tcp_from(HERE).await;
    assert!(
        closed_within(&mut silent, guard).await,
        "a silent connection"
    );

    let mut trickled = s.tcp_from(HERE).await;
    let (mut reader, mut writer) = trickled.split();
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let outcome = tokio::time::timeout(guard, async {
        tokio::select! {
            () = closed => true,
            () = trickle => false,
        }
    })
    .await;
    assert_eq!(outcome, Ok(true), "a header trickled a byte at a time");

    let mut idle = s.tcp_from(HERE).await;
    let answer = exchange(&mut idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed_within(&mut idle, guard).await, "an idle keep-alive");
}

#[tokio::test]
async fn headers_over_32_kib_are_refused_with_431() {
    let s = TestServer::start().await;
    let mut stream = s.tcp_from(HERE).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n",
        "a".repeat(40 * 1024)
    );
    // The server may stop reading, and close, before all of it is sent.
    let _ = stream.write_all(big.as_bytes()).await;
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .expect("an answer before the headers end");
    // A 431, unless the close overtook it (a reset for the unread rest).
    if let Ok(n @ 1..) = read {
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
}

#[tokio::test]
async fn a_websocket_session_outlives_the_request_timeout() {
    let s = TestServer::start_with(&[("CONFAB_REQUEST_TIMEOUT_SECS", "1")]).await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.ack("ping", json!({})).await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let s = TestServer::start_with(&[("CONFAB_REQUEST_TIMEOUT_SECS", "1")]).await;
    let mut stream = s.tcp_from(HERE).await;
    let answer = exchange(
        &mut stream,
        "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"bad_request\""), "{answer}");
}

#[tokio::test]
async fn one_address_holding_many_idle_connections_does_not_lock_out_another() {
    let s = TestServer::start_with(&[("CONFAB_MAX_CONNECTIONS_PER_ADDRESS", "40")]).await;
    let a = s.register("ann").await;
    // (The harness's own client may keep a connection from here too.)
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(s.tcp_from(HERE).await);
    }
    // One more from the same address is closed at once.
    let mut over = s.tcp_from(HERE).await;
    assert!(
        closed_within(&mut over, WAIT).await,
        "over the per-address cap"
    );
    served_from(&s, ELSEWHERE, &a).await;
    let metrics = s.http_from(ELSEWHERE);
    let refused = counter(
        &metrics,
        &s.url("/metrics"),
        "confab_connections_refused_total{reason=\"per_address\"}",
    )
    .await;
    assert!((1..=2).contains(&refused), "{refused} refused");
    // The held ones are still served.
    let answer = exchange(&mut held[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn websocket_sessions_count_toward_their_address_cap_while_they_last() {
    let s = TestServer::start_with(&[("CONFAB_MAX_CONNECTIONS_PER_ADDRESS", "4")]).await;
    let a = s.register("ann").await;
    // An address of its own: the harness's client keeps connections from HERE.
    let third: IpAddr = "127.0.0.3".parse().unwrap();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(s.connect_from(third, &a).await);
    }
    // Upgraded, they still hold the address's places: one more is refused.
    let mut over = s.tcp_from(third).await;
    assert!(
        closed_within(&mut over, WAIT).await,
        "four sessions fill the address's cap"
    );
    served_from(&s, ELSEWHERE, &a).await;
    // A session that ends gives its place back.
    sessions.pop().unwrap().close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let here = s.http_from(third);
    loop {
        let health = here.get(s.url("/healthz")).send().await;
        if health.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn under_a_low_open_files_limit_one_address_cannot_starve_another() {
    // 256 open files: 128 kept for the process, 128 connections, 64 per
    // address. Without caps the server runs out of descriptors and stops
    // accepting anyone.
    let s = TestServer::start_with_open_files(256, &[]).await;
    assert!(
        s.logged("at most 128 in all (open files 256 less 128 reserved), 64 per client address"),
        "{:?}",
        s.logs.lock().unwrap()
    );
    let a = s.register("ann").await;
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(s.tcp_from(HERE).await);
    }
    served_from(&s, ELSEWHERE, &a).await;
    let refused = counter(
        &s.http_from(ELSEWHERE),
        &s.url("/metrics"),
        "confab_connections_refused_total{reason=\"per_address\"}",
    )
    .await;
    assert!(refused >= 300 - 64, "{refused} refused");
    // A second address fills the total: then even a third is refused.
    let third: IpAddr = "127.0.0.3".parse().unwrap();
    let mut more = Vec::new();
    for _ in 0..64 {
        more.push(s.tcp_from(third).await);
    }
    let mut over = s.tcp_from("127.0.0.4".parse().unwrap()).await;
    assert!(closed_within(&mut over, WAIT).await, "over the total cap");
    drop(more);
    let total = "confab_connections_refused_total{reason=\"total\"}";
    let http = s.http_from(ELSEWHERE);
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(n) = try_counter(&http, &s.url("/metrics"), total).await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("served again once the second address lets go");
    assert!(refused >= 1);
}

/// Passes the per-address limiter (a `400` for the empty body) or not (`429`).
async fn register_attempt(http: &reqwest::Client, s: &TestServer, forwarded: &str) -> u16 {
    http.post(s.url("/api/v1/register"))
        .header("X-Forwarded-For", forwarded)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_throttled_apart_and_others_cannot_spoof() {
    let s = TestServer::start_with(&[
        ("CONFAB_TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8"),
        ("CONFAB_AUTH_RATE_PER_SEC", "1"),
        ("CONFAB_AUTH_RATE_BURST", "3"),
    ])
    .await;
    let proxy = s.http_from(HERE);
    for _ in 0..3 {
        assert_eq!(
            register_attempt(&proxy, &s, "203.0.113.1, 10.0.0.5").await,
            400
        );
    }
    assert_eq!(register_attempt(&proxy, &s, "203.0.113.1").await, 429);
    // Another client behind the same proxy has its own allowance.
    assert_eq!(register_attempt(&proxy, &s, "203.0.113.2").await, 400);
    // From a peer that is not a proxy, the header is ignored.
    let untrusted = s.http_from(ELSEWHERE);
    for i in 0..3 {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(register_attempt(&untrusted, &s, &spoofed).await, 400);
    }
    assert_eq!(register_attempt(&untrusted, &s, "198.51.100.99").await, 429);
    let refused = untrusted
        .post(s.url("/api/v1/register"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}

/// A login from `from`: status, `Retry-After` and body.
async fn login_from(
    s: &TestServer,
    from: IpAddr,
    username: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let res = s
        .http_from(from)
        .post(s.url("/api/v1/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, res.json().await.unwrap())
}

#[tokio::test]
async fn failed_logins_lock_an_account_for_a_while_whoever_tries_and_whether_or_not_it_exists() {
    let s = TestServer::start_with(&[
        ("CONFAB_LOGIN_FREE_FAILURES", "2"),
        ("CONFAB_LOGIN_MAX_LOCK_SECS", "8"),
    ])
    .await;
    let a = s.register("ann").await;
    for name in [a.username.as_str(), "nobody-here"] {
        for _ in 0..3 {
            assert_eq!(login_from(&s, HERE, name, "wrong-password").await.0, 401);
        }
        // Locked now, for every address, and the same way for a name that
        // does not exist.
        let (status, retry, body) = login_from(&s, ELSEWHERE, name, "stapled-battery-9").await;
        assert_eq!(status, 429, "{name}: {body}");
        assert_eq!(retry, Some(1), "{name}");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // Never for long: after the wait the owner gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = login_from(&s, ELSEWHERE, &a.username, "stapled-battery-9").await;
    assert_eq!(status, 200);
    // Each failure after a lock locks longer (1 s, 2 s, then 4 s).
    for wait in [0, 1100, 2100] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let attempts = if wait == 0 { 3 } else { 1 };
        for _ in 0..attempts {
            assert_eq!(login_from(&s, HERE, &a.username, "wrong").await.0, 401);
        }
    }
    let (status, retry, _) = login_from(&s, HERE, &a.username, "stapled-battery-9").await;
    assert_eq!((status, retry.is_some_and(|r| r > 2)), (429, true));
    // From an address that signed in, the owner skips a lock others cause.
    let (status, _, _) = login_from(&s, ELSEWHERE, &a.username, "stapled-battery-9").await;
    assert_eq!(status, 200);
    let throttled = counter(
        s.http(),
        &s.url("/metrics"),
        "confab_logins_throttled_total",
    )
    .await;
    assert_eq!(throttled, 3);
}

#[tokio::test]
async fn api_answers_are_never_sniffed_nor_stored() {
    let s = TestServer::start().await;
    let res = s
        .http()
        .post(s.url("/api/v1/register"))
        .json(&json!({"username": "ann", "password": "stapled-battery-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for res in [
        res,
        s.http().get(s.url("/healthz")).send().await.unwrap(),
        s.http().get(s.url("/api/v1/nope")).send().await.unwrap(),
    ] {
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    // The web client's files keep their own caching.
    let page = s.http().get(s.url("/")).send().await.unwrap();
    assert_eq!(page.headers()["cache-control"], "no-cache");
}

#[tokio::test]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let mut s = TestServer::start_with(&[("CONFAB_METRICS_ADDR", "127.0.0.1:0")]).await;
    let line = s
        .logs
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split("metrics served on ").nth(1).map(str::to_owned))
        .expect("the metrics address is logged");
    let res = s.http().get(line.trim()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("confab_sessions"));
    let (status, body) = s.get("/metrics", None).await;
    assert_eq!(status, 404, "not on the main listener: {body}");
    let other = line.trim().replace("/metrics", "/healthz");
    assert_eq!(s.http().get(other).send().await.unwrap().status(), 404);
    assert_eq!(s.terminate().code(), Some(0), "both listeners shut down");
}

#[tokio::test]
async fn malformed_connections_are_logged_at_most_ten_times_a_minute() {
    let s = TestServer::start().await;
    for _ in 0..30 {
        let mut stream = s.tcp_from(HERE).await;
        stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
        assert!(closed_within(&mut stream, WAIT).await);
    }
    let count = || {
        s.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("HTTP connection error"))
            .count()
    };
    tokio::time::timeout(WAIT, async {
        while count() < 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first ten are logged");
    // What the server had to log is logged by the time it answers again.
    assert_eq!(s.get("/healthz", None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(), 10);
}
