//! Presence is one state for the whole cluster: who is connected, each
//! user's status, `online` in the user search, and the per-user session
//! limit count sessions on every node; a node stopped with SIGTERM takes
//! its users offline at once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Client;
use crate::support::{Account, Cluster, FAST, TestServer, presence_is, statuses};

#[tokio::test]
async fn every_node_sees_a_user_connected_only_to_another() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (ann, cat) = (cluster.register("ann").await, cluster.register("cat").await);
    let mut on_a = cluster.nodes[0].connect(&ann).await;
    let on_c = cluster.nodes[2].connect(&cat).await;

    let listed = on_a.ack("getConnectedUsers", json!({})).await;
    assert!(lists(&listed, &cat), "getConnectedUsers on n1: {listed}");
    assert_eq!(statuses(&mut on_a, &[&cat]).await, ["online"]);
    for node in &cluster.nodes {
        assert_eq!(online_in_search(node, &ann, "cat").await, Some(true));
    }

    on_c.close().await;
    let start = Instant::now();
    loop {
        let listed = on_a.ack("getConnectedUsers", json!({})).await;
        if !lists(&listed, &cat) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "cat left n3 and n1 still lists her: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses(&mut on_a, &[&cat]).await, ["offline"]);
    assert_eq!(
        online_in_search(&cluster.nodes[1], &ann, "cat").await,
        Some(false)
    );
}

#[tokio::test]
async fn the_session_limit_counts_sessions_on_every_node() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let ann = cluster.register("ann").await;
    let mut open = Vec::new();
    for i in 0..10 {
        open.push(cluster.nodes[i % 3].connect(&ann).await);
    }
    for node in &cluster.nodes {
        let refused = Client::connect(&node.ws_url(), &ann.token).await;
        assert_eq!(
            refused.err(),
            Some(429),
            "an 11th session on port {}",
            node.port
        );
    }
    // A session closed on one node frees a place on another.
    open.remove(0).close().await;
    let start = Instant::now();
    loop {
        match Client::connect(&cluster.nodes[1].ws_url(), &ann.token).await {
            Ok(_) => break,
            Err(status) => assert!(
                status == 429 && start.elapsed() < Duration::from_secs(5),
                "after a close on n1, n2 answers {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_takes_its_users_offline_at_once() {
    // A TTL far beyond the test: only the shutdown can take bob offline.
    let settings = [FAST, &[("CONFAB_PRESENCE_TTL_SECS", "60")]].concat();
    let Some(mut cluster) = Cluster::start_with(2, &settings, &[]).await else {
        return;
    };
    let (ann, bob) = (cluster.register("ann").await, cluster.register("bob").await);
    let mut on_a = cluster.nodes[0].connect(&ann).await;
    let mut phone = cluster.nodes[1].connect(&bob).await;
    let _laptop = cluster.nodes[1].connect(&bob).await;
    on_a.ack("sendPrivateMessage", json!({"to": bob.id, "body": "hi"}))
        .await;
    phone.event("message").await;

    let status = cluster.nodes[1].terminate();
    assert!(status.success(), "n2 exits 0 on SIGTERM: {status:?}");
    let stopped = Instant::now();
    // The state at once, then the event to his contact.
    assert_eq!(statuses(&mut on_a, &[&bob]).await, ["offline"]);
    let heard = on_a
        .wait_for_within(Duration::from_secs(3), presence_is(&bob, "offline"))
        .await;
    assert!(
        heard.is_some(),
        "no offline event for bob within {:?} of n2's exit; ann got {:?}; n2 logged {:?}",
        stopped.elapsed(),
        on_a.buffered(),
        cluster.nodes[1].logs.lock().unwrap()
    );
    let listed = on_a.ack("getConnectedUsers", json!({})).await;
    assert!(!lists(&listed, &bob), "{listed}");
    assert_eq!(
        online_in_search(&cluster.nodes[0], &ann, "bob").await,
        Some(false)
    );
}

#[tokio::test]
async fn a_blocker_on_another_node_stays_offline_to_the_blocked_user() {
    let settings = [FAST, &[("CONFAB_PRESENCE_TTL_SECS", "60")]].concat();
    let Some(mut cluster) = Cluster::start_with(2, &settings, &[]).await else {
        return;
    };
    let (ann, bob, cid) = (
        cluster.register("ann").await,
        cluster.register("bob").await,
        cluster.register("cid").await,
    );
    let mut on_a = cluster.nodes[0].connect(&ann).await;
    let mut bob_b = cluster.nodes[1].connect(&bob).await;
    let mut cid_b = cluster.nodes[1].connect(&cid).await;
    for to in [&bob, &cid] {
        on_a.ack("sendPrivateMessage", json!({"to": to.id, "body": "hi"}))
            .await;
    }
    bob_b.event("message").await;
    cid_b.event("message").await;

    on_a.ack("blockUser", json!({"userId": bob.id})).await;
    bob_b.wait_for(presence_is(&ann, "offline")).await;
    assert_eq!(statuses(&mut bob_b, &[&ann]).await, ["offline"]);
    let listed = bob_b.ack("getConnectedUsers", json!({})).await;
    assert!(!lists(&listed, &ann), "{listed}");
    assert_eq!(
        online_in_search(&cluster.nodes[1], &bob, "ann").await,
        Some(false)
    );
    assert_eq!(
        online_in_search(&cluster.nodes[1], &cid, "ann").await,
        Some(true)
    );

    // Events cross nodes to cid, never to bob: a status change, then the
    // offline of a node shut down.
    on_a.ack("setStatus", json!({"status": "away"})).await;
    cid_b.wait_for(presence_is(&ann, "away")).await;
    let status = cluster.nodes[0].terminate();
    assert!(status.success(), "n1 exits 0 on SIGTERM: {status:?}");
    cid_b.wait_for(presence_is(&ann, "offline")).await;
    let from_ann = |f: &Value| {
        f["type"] == "presence" && f["content"]["presence"]["userId"] == ann.id.as_str()
    };
    bob_b
        .expect_none(Duration::from_millis(500), from_ann)
        .await;
}

/// Whether a `getConnectedUsers` ack lists `user`.
fn lists(ack: &Value, user: &Account) -> bool {
    ack["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == user.id.as_str())
}

/// `online` of the user named `name` in `GET /users` on `node`, asked by `by`.
async fn online_in_search(node: &TestServer, by: &Account, name: &str) -> Option<bool> {
    let (status, body) = node
        .get(&format!("/api/v1/users?prefix={name}"), Some(&by.token))
        .await;
    assert_eq!(status, 200, "{body}");
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .and_then(|u| u["online"].as_bool())
}
