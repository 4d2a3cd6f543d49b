//! Redis failing under traffic, with sends in flight: killed and started
//! again empty on its port (with a wave of sends while it is down), or its
//! subscriber connections killed. Sends keep being acknowledged, delivery
//! resumes, every session ends complete and in order (what pub/sub lost
//! comes from the store by a resync), and every node counts that resync;
//! and a subscription gone silent, which only the liveness probe finds.

use std::time::{Duration, Instant};

use crate::support::{
    Cluster, ann_to_bob, assert_all_complete, collect_all, fire_all, room_of_all, spread, statuses,
    wave,
};

/// What happens to Redis in the middle of the traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Disruption {
    /// Killed, a wave of sends while it is down, then started again empty.
    Restart,
    /// `CLIENT KILL TYPE pubsub`, then a wave of sends at once.
    SubscribersKilled,
}

#[tokio::test]
async fn delivery_resumes_complete_and_in_order_after_redis_restarts() {
    delivery_survives(Disruption::Restart).await;
}

#[tokio::test]
async fn delivery_resumes_complete_and_in_order_after_the_subscribers_are_killed() {
    delivery_survives(Disruption::SubscribersKilled).await;
}

async fn delivery_survives(disruption: Disruption) {
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let (users, mut sessions) = spread(&cluster, 9, &[1, 4]).await;
    room_of_all(&mut sessions, "everyone").await;
    wave(&mut sessions, "before", 3).await;

    let mut resyncs_before = Vec::new();
    for node in 0..3 {
        resyncs_before.push(resyncs(&cluster, node).await);
    }
    let in_flight = fire_all(&mut sessions, "across", 3).await;
    match disruption {
        Disruption::Restart => {
            cluster.redis.stop();
            collect_all(&mut sessions, in_flight).await;
            wave(&mut sessions, "during", 3).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            cluster.redis.resume().await;
        }
        Disruption::SubscribersKilled => {
            let killed: usize = cluster
                .redis
                .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .parse()
                .unwrap();
            assert!(killed >= 3, "one subscriber per node, {killed} killed");
            collect_all(&mut sessions, in_flight).await;
            wave(&mut sessions, "during", 3).await;
        }
    }
    wave(&mut sessions, "after1", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wave(&mut sessions, "after2", 3).await;

    assert_all_complete(&mut sessions).await;

    // Every node noticed and compared its cursors with the store.
    let start = Instant::now();
    for (node, before) in resyncs_before.into_iter().enumerate() {
        loop {
            let now = resyncs(&cluster, node).await;
            if now > before {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "n{}: resyncs (reconnect + probe) still {now} after {disruption:?}; logs: {:?}",
                node + 1,
                cluster.logs_with("redis")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    if disruption == Disruption::Restart {
        // The empty Redis learns every live session again from its node.
        let everyone: Vec<_> = users.iter().collect();
        let start = Instant::now();
        loop {
            let now = statuses(&mut sessions[0].client, &everyone).await;
            if now.iter().all(|s| s == "online") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "after the Redis restart, presence is still {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Resyncs after a reconnect or a failed probe, on `node`.
async fn resyncs(cluster: &Cluster, node: usize) -> f64 {
    cluster
        .metric(node, r#"confab_cluster_resyncs_total{reason="reconnect"}"#)
        .await
        + cluster
            .metric(node, r#"confab_cluster_resyncs_total{reason="probe"}"#)
            .await
}

/// A subscription that looks alive and delivers nothing (a half-open
/// connection, say) is found by the liveness probe, replaced, and what it
/// missed comes from the store; the periodic resync is off on that node,
/// so nothing else could have filled the gap.
#[tokio::test]
async fn a_silent_subscription_is_found_by_the_probe_and_what_it_missed_is_filled() {
    let deaf: &[(&str, &str)] = &[
        ("CONFAB_FAULTS", "deaf_subscriber_after:1500"),
        ("CONFAB_CLUSTER_RESYNC_SECS", "3600"),
        ("CONFAB_CLUSTER_PROBE_SECS", "1"),
    ];
    let Some(cluster) = Cluster::start_with(2, crate::support::FAST, &[&[], deaf]).await else {
        return;
    };
    let mut sessions = ann_to_bob(&cluster).await;
    wave(&mut sessions, "before", 3).await;
    // n2's subscriber has gone deaf by now; its probe must notice.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    wave(&mut sessions, "deaf", 5).await;
    assert_all_complete(&mut sessions).await;
    assert!(
        cluster
            .metric(1, "confab_cluster_probe_failures_total")
            .await
            >= 1.0,
        "the probe never failed on n2"
    );
    assert!(
        cluster
            .metric(1, r#"confab_cluster_resyncs_total{reason="probe"}"#)
            .await
            >= 1.0,
        "n2 never resynced after replacing its subscriber"
    );
}
