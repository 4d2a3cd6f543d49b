//! `message` events across nodes: every connected session gets every
//! message of its conversations exactly once and in seq order, checked
//! against the store, also when the sender's node drops or delays its
//! publishes after the commit (the test-only fault hooks).

use crate::support::{
    Cluster, FAST, Session, Target, ann_to_bob, assert_all_complete, room_of_all, spread, wave,
};

#[tokio::test]
async fn three_nodes_deliver_every_message_once_and_in_order_to_every_session() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    const USERS: usize = 24;
    // Both directions of one pair (senders on two nodes), and one more.
    let (users, mut sessions) = spread(&cluster, USERS, &[1, USERS - 1, 7]).await;
    // Every fourth user has a second device on another node, which must
    // see the messages sent from the first.
    for i in (0..USERS).step_by(4) {
        let node = (i + 1) % 3;
        let label = format!("u{i}b@n{}", node + 1);
        sessions.push(Session::open(&cluster, node, &users[i], &label).await);
    }
    room_of_all(&mut sessions, "everyone").await;

    wave(&mut sessions, "w1", 4).await;
    wave(&mut sessions, "w2", 4).await;
    assert_all_complete(&mut sessions).await;

    // The events really crossed nodes through Redis.
    for node in 0..3 {
        assert!(cluster.metric(node, "confab_cluster_published_total").await > 0.0);
        assert!(cluster.metric(node, "confab_cluster_received_total").await > 0.0);
    }
}

#[tokio::test]
async fn publishes_dropped_after_the_commit_are_filled_from_the_store() {
    let drop_every_fifth: &[(&str, &str)] = &[("CONFAB_FAULTS", "drop_publish_every:5")];
    let Some(cluster) = Cluster::start_with(3, FAST, &[drop_every_fifth]).await else {
        return;
    };
    let names = ["ann", "amy", "bob", "cat"];
    let mut users = Vec::new();
    for name in names {
        users.push(cluster.register(name).await);
    }
    let (ann, amy, bob, cat) = (&users[0], &users[1], &users[2], &users[3]);
    // The senders are on n1, whose publishes are dropped; everyone who
    // must hear them, ann's second device included, is elsewhere.
    let mut sessions = vec![
        Session::open(&cluster, 0, ann, "ann@n1").await,
        Session::open(&cluster, 0, amy, "amy@n1").await,
        Session::open(&cluster, 1, bob, "bob@n2").await,
        Session::open(&cluster, 2, cat, "cat@n3").await,
        Session::open(&cluster, 1, ann, "ann@n2").await,
    ];
    sessions[0].targets = vec![Target::User(bob.id.clone()), Target::User(cat.id.clone())];
    sessions[1].targets = vec![Target::User(bob.id.clone())];
    room_of_all(&mut sessions, "lossy").await;
    // Only the senders send.
    for s in &mut sessions[2..] {
        s.targets.clear();
    }

    wave(&mut sessions, "w1", 10).await;
    assert_all_complete(&mut sessions).await;

    let mut fills = 0.0;
    for node in 1..3 {
        fills += cluster.metric(node, "confab_cluster_gap_fills_total").await;
    }
    assert!(
        fills >= 1.0,
        "the receiving nodes never filled a gap from the store; dropped on n1: {}",
        cluster
            .metric(0, "confab_cluster_publish_dropped_total")
            .await
    );
}

#[tokio::test]
async fn a_delayed_publish_arrives_before_the_next_message_and_only_once() {
    let delay_every_third: &[(&str, &str)] = &[("CONFAB_FAULTS", "delay_publish_every:3:1000")];
    let Some(cluster) = Cluster::start_with(2, FAST, &[delay_every_third]).await else {
        return;
    };
    let mut sessions = ann_to_bob(&cluster).await;

    // Messages 3, 6 and 9 leave n1 a second late, after the ones behind
    // them; the check lingers past that, so a late copy would be seen.
    wave(&mut sessions, "w1", 9).await;
    let truth = assert_all_complete(&mut sessions).await;
    assert_eq!(truth.values().map(Vec::len).sum::<usize>(), 9);
    let seqs: Vec<u64> = sessions[1].got.iter().map(crate::support::seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());

    let fills = cluster.metric(1, "confab_cluster_gap_fills_total").await;
    let duplicates = cluster
        .metric(1, "confab_cluster_duplicates_dropped_total")
        .await;
    assert!(
        fills >= 1.0 && duplicates >= 1.0,
        "a second's delay is beyond the reorder window: the store fills the \
         gap and the late publish is a duplicate (fills {fills}, duplicates {duplicates})"
    );
}
