//! Revocation across the cluster (docs/cluster.md, "Revocation"): a device
//! session ended through one node closes its WebSockets on another within a
//! second, and is refused over HTTP there at once; a node that missed the
//! bus's message closes them when its subscriptions come back, from the
//! database, or on its periodic sweep while the bus is still away.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Account, COMPLETE_WITHIN, Client, Cluster, FAST, TestServer};

/// Ends `session` of `user` through `node`.
async fn end_session(node: &TestServer, user: &Account, session: &str) {
    let res = node
        .http()
        .delete(node.url(&format!("/api/v1/sessions/{session}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
}

#[tokio::test]
async fn a_session_ended_on_one_node_closes_its_websocket_on_another_within_a_second() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let alice = cluster.register("alice").await;
    let phone = cluster.nodes[1].login_on(&alice, "phone").await;
    let mut on_b = cluster.nodes[1].connect(&phone).await;
    let mut laptop_on_b = cluster.nodes[1].connect(&alice).await;

    let started = Instant::now();
    end_session(&cluster.nodes[0], &alice, &phone.session).await;
    assert_eq!(on_b.closed_with(Duration::from_secs(1)).await, 4003);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    // Refused over HTTP on the other node at once; the laptop stays.
    assert_eq!(
        cluster.nodes[1]
            .get("/api/v1/me", Some(&phone.token))
            .await
            .0,
        401
    );
    assert_eq!(
        cluster.nodes[1]
            .get("/api/v1/me", Some(&alice.token))
            .await
            .0,
        200
    );
    laptop_on_b.ack("ping", json!({})).await;

    // Logging out everywhere through node B reaches node A too.
    let mut laptop_on_a = cluster.nodes[0].connect(&alice).await;
    let res = cluster.nodes[1]
        .http()
        .post(cluster.nodes[1].url("/api/v1/logout-all"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(laptop_on_a.closed_with(Duration::from_secs(1)).await, 4003);
    assert_eq!(laptop_on_b.closed_with(Duration::from_secs(1)).await, 4003);
}

/// Two nodes sweeping every `sweep_secs`; alice's phone connected to node B;
/// the bus stopped; the phone's session ended through node A. `None` when
/// the services are missing outside CI.
async fn ended_while_the_bus_is_away(sweep_secs: &str) -> Option<(Cluster, Account, Client)> {
    let settings: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([("CONFAB_REVOCATION_SWEEP_SECS", sweep_secs)])
        .collect();
    let mut cluster = Cluster::start_with(2, &settings, &[]).await?;
    let alice = cluster.register("alice").await;
    let phone = cluster.nodes[1].login_on(&alice, "phone").await;
    let on_b = cluster.nodes[1].connect(&phone).await;
    cluster.redis.stop();
    end_session(&cluster.nodes[0], &alice, &phone.session).await;
    Some((cluster, phone, on_b))
}

#[tokio::test]
async fn a_revocation_the_bus_lost_is_caught_up_from_the_database_when_it_returns() {
    // No sweep: only the resubscription can close it.
    let Some((mut cluster, phone, mut on_b)) = ended_while_the_bus_is_away("3600").await else {
        return;
    };
    // The database is the truth: node B refuses the token at once.
    assert_eq!(
        cluster.nodes[1]
            .get("/api/v1/me", Some(&phone.token))
            .await
            .0,
        401
    );
    on_b.expect_none(Duration::from_millis(500), |_| false)
        .await;
    assert!(on_b.closed.is_none(), "nothing told node B yet");

    // Node A dies with its publish still queued: only the database knows.
    cluster.nodes[0].kill9();
    cluster.redis.resume().await;
    assert_eq!(on_b.closed_with(COMPLETE_WITHIN).await, 4003);
    assert!(
        !cluster
            .logs_with("closed connections of ended sessions")
            .is_empty(),
        "closed by the reload, not by a message"
    );
}

#[tokio::test]
async fn a_node_cut_off_from_the_bus_still_closes_what_the_database_says_ended() {
    let Some((mut cluster, _, mut on_b)) = ended_while_the_bus_is_away("1").await else {
        return;
    };
    assert_eq!(on_b.closed_with(Duration::from_secs(5)).await, 4003);
    cluster.redis.resume().await;
}
