//! Redis failing under traffic, with sends in flight: killed and started
//! again empty on its port (with a wave of sends while it is down), or its
//! subscriber connections killed. Sends keep being acknowledged, delivery
//! resumes, every session ends complete and in order (what pub/sub lost
//! comes from the store by a resync), and every node counts that resync.

use std::time::{Duration, Instant};

use crate::support::{
    Cluster, Session, Target, assert_all_complete, collect_all, fire_all, room_of_all, statuses,
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
    const USERS: usize = 9;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(cluster.register(&format!("user{i}")).await);
    }
    let mut sessions = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let node = i % 3;
        let mut s = Session::open(&cluster, node, user, &format!("u{i}@n{}", node + 1)).await;
        for to in [i + 1, i + 4] {
            s.targets.push(Target::User(users[to % USERS].id.clone()));
        }
        sessions.push(s);
    }
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
