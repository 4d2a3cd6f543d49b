//! Limits and liveness: the request rate, slow consumers, heartbeats and
//! token expiry.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Client, TestServer, WAIT};

#[tokio::test]
async fn requests_beyond_the_rate_get_rate_limited_and_the_connection_stays() {
    let s =
        TestServer::start_with(&[("CONFAB_RATE_PER_SEC", "2"), ("CONFAB_RATE_BURST", "5")]).await;
    let a = s.register("ann").await;
    let mut c = s.connect(&a).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(c.send_request("ping", json!({})).await);
    }
    let mut limited = 0;
    for id in &ids {
        let f = c.reply_to(id).await;
        if f["type"] == "error" {
            assert_eq!(f["content"]["code"], "rate_limited", "{f}");
            limited += 1;
        }
    }
    assert!(
        limited >= 6,
        "at most the burst (+ refill) passes: {limited} limited"
    );
    // Bad frames count too.
    c.send_text("garbage").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ok = c.request("ping", json!({})).await;
    assert!(ok["type"] == "ack" || ok["type"] == "error");
    let mut found = false;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        if c.request("ping", json!({})).await["type"] == "ack" {
            found = true;
            break;
        }
    }
    assert!(found, "the connection recovers once the rate allows");
}

async fn slow_consumer_closes(s: &TestServer) -> u64 {
    s.metrics_text()
        .await
        .lines()
        .find(|l| l.starts_with("confab_sessions_closed_by_server_total") && l.contains("4008"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_4008_and_others_keep_receiving() {
    let s = TestServer::start_with(&[
        ("CONFAB_OUTBOUND_QUEUE", "16"),
        ("CONFAB_RATE_PER_SEC", "100000"),
        ("CONFAB_RATE_BURST", "100000"),
    ])
    .await;
    let (a, slow, fast) = (
        s.register("ann").await,
        s.register("slow").await,
        s.register("fast").await,
    );
    let mut ca = s.connect(&a).await;
    let mut stalled = s.connect(&slow).await;
    let mut cf = s.connect(&fast).await;
    let body = "x".repeat(4000);
    let mut to_fast = 0;
    // Fill the stalled client's socket buffers and then its queue, however
    // large the kernel made the buffers; the fast client reads all along.
    // Rounds of 9 for the stalled client: requests that arrive together
    // are answered together, and a burst larger than the queue would close
    // even a client that reads.
    for round in 0..1000 {
        let mut ids = Vec::new();
        for i in 0..10 {
            let to = if i == 0 { &fast.id } else { &slow.id };
            ids.push(
                ca.send_request("sendPrivateMessage", json!({"to": to, "body": body}))
                    .await,
            );
        }
        for id in ids {
            let f = ca.reply_to(&id).await;
            assert_eq!(f["type"], "ack", "{f}");
        }
        cf.event("message").await;
        to_fast += 1;
        if round % 25 == 24 && slow_consumer_closes(&s).await > 0 {
            break;
        }
    }
    assert_eq!(
        slow_consumer_closes(&s).await,
        1,
        "exactly the stalled session was cut off"
    );
    // The others kept going: one more message still arrives at once.
    ca.ack(
        "sendPrivateMessage",
        json!({"to": fast.id, "body": "still here"}),
    )
    .await;
    assert_eq!(cf.event("message").await["message"]["body"], "still here");
    assert!(to_fast > 0);
    // Only now does the stalled client look: it was closed with 4008.
    assert_eq!(stalled.closed_with(Duration::from_secs(30)).await, 4008);
    assert!(
        !stalled.buffered().is_empty(),
        "what was queued before the cut still arrived"
    );
}

#[tokio::test]
async fn a_connection_that_misses_two_pongs_is_closed_and_its_user_goes_offline() {
    let s = TestServer::start_with(&[("CONFAB_HEARTBEAT_SECS", "1")]).await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut cb = s.connect(&b).await;
    let mut ca = s.connect(&a).await;
    ca.ack("sendPrivateMessage", json!({"to": b.id, "body": "hi"}))
        .await;
    // `ca` now stops reading, so its pings go unanswered; `cb` keeps
    // reading (its library answers pings as it reads) and must stay.
    let offline = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let f = cb.wait_for(|f| f["type"] == "presence").await;
            if f["content"]["presence"]["status"] == "offline" {
                return f;
            }
        }
    })
    .await
    .expect("ann shown offline after missed pongs");
    assert_eq!(offline["content"]["presence"]["userId"], a.id);
    cb.ack("ping", json!({})).await;
    drop(ca);
}

#[tokio::test]
async fn a_session_whose_token_expires_is_closed_with_4001() {
    let s = TestServer::start_with(&[("CONFAB_TOKEN_TTL_SECS", "2")]).await;
    let a = s.register("ann").await;
    let mut c = Client::connect(&s.ws_url(), &a.token).await.unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    assert_eq!(c.closed_with(WAIT).await, 4001);
}
