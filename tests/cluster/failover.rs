//! A node killed with SIGKILL: the sessions on the other nodes lose
//! nothing (not even what the dead node committed and never published),
//! its clients catch up elsewhere from the store, its users go offline
//! within the presence TTL, and a node restarted as itself clears its
//! former sessions at once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Account, Cluster, FAST, Session, assert_all_complete, collect_all, fire_all, presence_is, seq,
    spread, statuses, wave,
};

/// `FAST`'s presence TTL.
const TTL: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_killed_node_costs_the_others_nothing_and_its_clients_catch_up_elsewhere() {
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let (users, mut sessions) = spread(&cluster, 12, &[1, 5]).await;
    room_and_first_wave(&mut sessions).await;
    let on_b: Vec<Account> = users.iter().skip(1).step_by(3).cloned().collect();
    let on_b: Vec<&Account> = on_b.iter().collect();
    assert!(
        statuses(&mut sessions[0].client, &on_b)
            .await
            .iter()
            .all(|s| s == "online")
    );

    // Everyone writes sends and n2 dies under them: some of its clients'
    // are committed and never published, and nobody gets their replies.
    let (mut dead, mut live): (Vec<Session>, Vec<Session>) =
        sessions.into_iter().partition(|s| s.node == 1);
    let in_flight = fire_all(&mut live, "across", 3).await;
    fire_all(&mut dead, "dying", 3).await;
    cluster.nodes[1].kill9();
    let killed = Instant::now();
    collect_all(&mut live, in_flight).await;
    wave(&mut live, "after1", 3).await;
    wave(&mut live, "after2", 3).await;

    // n2's users show offline from n1, and a contact on n3 hears it, within
    // the TTL and a little more.
    let bound = TTL + Duration::from_secs(2);
    let (reader, rest) = live.split_at_mut(1);
    let contact = rest.iter_mut().find(|s| s.node == 2).unwrap();
    let (read_offline, heard_offline) = tokio::join!(
        async {
            loop {
                let now = statuses(&mut reader[0].client, &on_b).await;
                if now.iter().all(|s| s == "offline") || killed.elapsed() > bound * 3 {
                    return (killed.elapsed(), now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
        async {
            let mut unheard = Vec::new();
            for user in &on_b {
                let left = (bound * 3).saturating_sub(killed.elapsed());
                let pred = presence_is(user, "offline");
                if contact.client.wait_for_within(left, pred).await.is_none() {
                    unheard.push(user.username.clone());
                }
            }
            (killed.elapsed(), unheard)
        }
    );
    assert!(
        read_offline.0 <= bound && read_offline.1.iter().all(|s| s == "offline"),
        "getPresence on n1 after {:?}: {:?} (bound {bound:?})",
        read_offline.0,
        read_offline.1
    );
    assert!(
        heard_offline.0 <= bound && heard_offline.1.is_empty(),
        "offline events after {:?}, never heard for {:?} (bound {bound:?})",
        heard_offline.0,
        heard_offline.1
    );

    assert_all_complete(&mut live).await;

    // Each client of n2 reconnects to n1 or n3 and catches up from the
    // store; with what it had received, it then holds everything.
    for (i, mut s) in dead.into_iter().enumerate() {
        s.read_until_closed().await;
        let node = if i % 2 == 0 { 0 } else { 2 };
        let mut client = cluster.nodes[node].connect(&s.user).await;
        let listed = client.ack("getConversations", json!({})).await;
        for c in listed["conversations"].as_array().unwrap() {
            let c = c["id"].as_str().unwrap();
            let received: Vec<u64> = s
                .got
                .iter()
                .filter(|m| m["conversationId"] == c)
                .map(seq)
                .collect();
            assert!(
                received.windows(2).all(|w| w[0] < w[1]),
                "{} before the kill, {c}: {received:?}",
                s.label
            );
            let held = received.last().copied().unwrap_or(0);
            let caught_up: Vec<u64> = client
                .history_after(c, held)
                .await
                .iter()
                .map(seq)
                .collect();
            let all = client.history_after(c, 0).await;
            let history_seq = s.baseline(c);
            for m in all.iter().filter(|m| seq(m) > history_seq) {
                assert!(
                    s.sent(m) || received.contains(&seq(m)) || caught_up.contains(&seq(m)),
                    "{} lacks {c} seq {} after catching up from {held}",
                    s.label,
                    seq(m)
                );
            }
        }
    }
}

#[tokio::test]
async fn with_the_default_ttl_a_killed_nodes_users_show_offline_within_15_seconds() {
    let Some(mut cluster) = Cluster::start_with(2, &[], &[]).await else {
        return;
    };
    let (ann, bob) = (cluster.register("ann").await, cluster.register("bob").await);
    let mut on_a = cluster.nodes[0].connect(&ann).await;
    let _on_b = cluster.nodes[1].connect(&bob).await;
    on_a.ack("sendPrivateMessage", json!({"to": bob.id, "body": "hi"}))
        .await;
    assert_eq!(statuses(&mut on_a, &[&bob]).await, ["online"]);

    cluster.nodes[1].kill9();
    let killed = Instant::now();
    let heard = on_a
        .wait_for_within(Duration::from_secs(15), presence_is(&bob, "offline"))
        .await;
    let took = killed.elapsed();
    assert!(
        heard.is_some() && took < Duration::from_secs(15),
        "bob's offline event after {took:?}"
    );
    assert_eq!(statuses(&mut on_a, &[&bob]).await, ["offline"]);
}

#[tokio::test]
async fn a_node_restarted_under_its_node_id_clears_its_former_sessions_at_once() {
    // A TTL far beyond the test: only the purge can take bob offline.
    let settings = [FAST, &[("CONFAB_PRESENCE_TTL_SECS", "60")]].concat();
    let Some(mut cluster) = Cluster::start_with(2, &settings, &[]).await else {
        return;
    };
    let (ann, bob) = (cluster.register("ann").await, cluster.register("bob").await);
    let mut on_a = cluster.nodes[0].connect(&ann).await;
    let _phone = cluster.nodes[1].connect(&bob).await;
    let _laptop = cluster.nodes[1].connect(&bob).await;
    on_a.ack("sendPrivateMessage", json!({"to": bob.id, "body": "hi"}))
        .await;

    cluster.nodes[1].kill9();
    // Nothing has expired: the dead node's sessions still count.
    assert_eq!(statuses(&mut on_a, &[&bob]).await, ["online"]);
    cluster.resume(1).await;
    let back = Instant::now();
    let heard = on_a
        .wait_for_within(Duration::from_secs(5), presence_is(&bob, "offline"))
        .await;
    assert!(
        heard.is_some(),
        "no offline event for bob within {:?} of n2's restart; n2 logged: {:?}",
        back.elapsed(),
        cluster.nodes[1].logs.lock().unwrap()
    );
    assert_eq!(statuses(&mut on_a, &[&bob]).await, ["offline"]);

    // The restarted node serves bob again.
    let _again = cluster.nodes[1].connect(&bob).await;
    let online = on_a.wait_for(presence_is(&bob, "online")).await;
    assert_eq!(online["content"]["presence"]["userId"], bob.id.as_str());
}

/// A room of every session's user, and one wave of traffic in it and the
/// private conversations.
async fn room_and_first_wave(sessions: &mut [Session]) {
    crate::support::room_of_all(sessions, "everyone").await;
    wave(sessions, "before", 3).await;
}
