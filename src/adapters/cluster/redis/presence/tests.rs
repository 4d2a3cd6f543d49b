//! `ClusterPresence` against a real Redis: the single-process semantics of
//! `PresenceBook`, plus what only a cluster has (several nodes on one
//! prefix, expiry, heartbeat, incarnations).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use redis::AsyncCommands;

use super::test_redis::{self, TestRedis};
use super::*;
use crate::adapters::cluster::presence::{REAP_EVERY, reap, run_tasks};
use crate::domain::service::Caller;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(400);

fn user(name: &str) -> User {
    User {
        id: UserId::new(name),
        username: Username::parse(name).unwrap(),
    }
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s)
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn node(redis: &TestRedis, node_id: &str, ttl: Duration) -> Arc<ClusterPresence> {
    node_on(redis.conn.clone(), redis, node_id, ttl)
}

fn node_on(
    conn: ConnectionManager,
    redis: &TestRedis,
    node_id: &str,
    ttl: Duration,
) -> Arc<ClusterPresence> {
    Arc::new(ClusterPresence::new(
        conn,
        Keys::new(&redis.prefix),
        node_id.to_owned(),
        uuid::Uuid::new_v4().to_string(),
        ttl,
    ))
}

/// Polls `check` until it holds; the bound is generous because the point
/// is that it happens, not how fast on a loaded machine.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_of(p: &ClusterPresence, who: &UserId) -> LiveStatus {
    p.live(std::slice::from_ref(who)).await.unwrap()[who]
}

async fn is_live(p: &ClusterPresence, who: &str) -> bool {
    p.live(&[UserId::new(who)])
        .await
        .unwrap()
        .contains_key(&UserId::new(who))
}

async fn online_names(p: &ClusterPresence) -> Vec<String> {
    let mut names: Vec<_> = p
        .online_users(100)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username.as_str().to_owned())
        .collect();
    names.sort();
    names
}

async fn prefix_keys(redis: &TestRedis) -> Vec<String> {
    let mut conn = redis.conn.clone();
    let mut keys: Vec<String> = conn.keys(format!("{}:*", redis.prefix)).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_user_comes_online_with_the_first_session_and_goes_offline_with_the_last() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", LONG);
    let ann = user("ann");
    assert!(p.open(&ann, &sid("s1"), t(1), 10).await.unwrap());
    assert!(!p.open(&ann, &sid("s2"), t(2), 10).await.unwrap());
    let live = live_of(&p, &ann.id).await;
    assert_eq!(live.status, ActiveStatus::Online);
    assert_eq!(
        live.last_active,
        t(2),
        "a second session counts as activity"
    );

    assert!(!p.close(&ann.id, &sid("s1")).await.unwrap());
    assert!(is_live(&p, "ann").await);
    assert!(p.close(&ann.id, &sid("s2")).await.unwrap());
    assert!(!is_live(&p, "ann").await);
    assert!(online_names(&p).await.is_empty());
    assert!(
        prefix_keys(&redis).await.is_empty(),
        "nothing of an offline user is left behind"
    );
}

#[tokio::test]
async fn closing_an_unknown_session_changes_nothing() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", LONG);
    let ann = user("ann");
    p.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    assert!(!p.close(&ann.id, &sid("nope")).await.unwrap());
    assert!(!p.close(&UserId::new("bob"), &sid("s1")).await.unwrap());
    assert!(is_live(&p, "ann").await);
    assert!(p.close(&ann.id, &sid("s1")).await.unwrap());
    assert!(
        !p.close(&ann.id, &sid("s1")).await.unwrap(),
        "a second close of the same session announces nothing"
    );
}

#[tokio::test]
async fn one_session_beyond_the_limit_is_refused_and_nothing_is_written() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", LONG);
    let ann = user("ann");
    for i in 0..3 {
        p.open(&ann, &sid(&format!("s{i}")), t(1), 3).await.unwrap();
    }
    let refused = p.open(&ann, &sid("s3"), t(1), 3).await;
    assert!(matches!(
        refused,
        Err(OpenSessionError::TooMany(TooManySessions { limit: 3 }))
    ));
    let mut conn = redis.conn.clone();
    let count: usize = conn.zcard(p.keys().sessions(&ann.id)).await.unwrap();
    assert_eq!(count, 3);
    assert!(!p.close(&ann.id, &sid("s3")).await.unwrap());

    let bob = user("bob");
    assert!(matches!(
        p.open(&bob, &sid("b1"), t(1), 0).await,
        Err(OpenSessionError::TooMany(TooManySessions { limit: 0 }))
    ));
    assert!(!is_live(&p, "bob").await);
}

#[tokio::test]
async fn the_session_limit_holds_across_two_nodes_opening_at_once() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let a = node(&redis, "n1", LONG);
    let b = node_on(test_redis::another(&redis).await, &redis, "n2", LONG);
    let ann = user("ann");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let p = if i % 2 == 0 { a.clone() } else { b.clone() };
            let ann = ann.clone();
            tokio::spawn(async move { p.open(&ann, &sid(&format!("s{i}")), t(1), 10).await })
        })
        .collect();
    let (mut opened, mut came_online, mut refused) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(first) => {
                opened += 1;
                came_online += usize::from(first);
            }
            Err(OpenSessionError::TooMany(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((opened, refused, came_online), (10, 10, 1));
    let mut conn = redis.conn.clone();
    let count: usize = conn.zcard(a.keys().sessions(&ann.id)).await.unwrap();
    assert_eq!(count, 10);
}

#[tokio::test]
async fn status_changes_are_reported_once_and_only_for_connected_users() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let a = node(&redis, "n1", LONG);
    let b = node(&redis, "n2", LONG);
    let ann = user("ann");
    a.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    let (live, changed) = b
        .set_status(&ann.id, ActiveStatus::Away, t(5))
        .await
        .unwrap()
        .unwrap();
    assert!(changed);
    assert_eq!(
        live,
        LiveStatus {
            status: ActiveStatus::Away,
            last_active: t(5)
        }
    );
    let (_, changed) = a
        .set_status(&ann.id, ActiveStatus::Away, t(6))
        .await
        .unwrap()
        .unwrap();
    assert!(!changed);
    let seen = live_of(&a, &ann.id).await;
    assert_eq!((seen.status, seen.last_active), (ActiveStatus::Away, t(6)));
    assert!(
        a.set_status(&UserId::new("bob"), ActiveStatus::Away, t(6))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        prefix_keys(&redis)
            .await
            .iter()
            .all(|k| !k.contains(":bob")),
        "a status for an offline user writes nothing"
    );
}

#[tokio::test]
async fn coming_back_after_going_offline_resets_status_to_online() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", LONG);
    let ann = user("ann");
    p.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    p.set_status(&ann.id, ActiveStatus::Away, t(2))
        .await
        .unwrap();
    assert!(p.close(&ann.id, &sid("s1")).await.unwrap());
    assert!(p.open(&ann, &sid("s2"), t(3), 10).await.unwrap());
    let live = live_of(&p, &ann.id).await;
    assert_eq!(
        (live.status, live.last_active),
        (ActiveStatus::Online, t(3))
    );
}

#[tokio::test]
async fn activity_moves_last_active_of_connected_users_only() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", LONG);
    let other = node(&redis, "n2", LONG);
    let ann = user("ann");
    p.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    p.touch(&ann.id, t(9)).await.unwrap();
    p.touch(&ann.id, t(8)).await.unwrap();
    assert_eq!(live_of(&p, &ann.id).await.last_active, t(9), "at once here");
    assert_eq!(live_of(&other, &ann.id).await.last_active, t(1));
    p.flush_touches().await.unwrap();
    assert_eq!(
        live_of(&other, &ann.id).await.last_active,
        t(9),
        "everywhere after the flush"
    );
    p.touch(&UserId::new("bob"), t(9)).await.unwrap();
    p.close(&ann.id, &sid("s1")).await.unwrap();
    p.touch(&ann.id, t(10)).await.unwrap();
    p.flush_touches().await.unwrap();
    assert!(
        prefix_keys(&redis).await.is_empty(),
        "a touch after the last close leaves nothing"
    );
}

#[tokio::test]
async fn live_and_online_users_list_each_connected_user_once() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let a = node(&redis, "n1", LONG);
    let b = node(&redis, "n2", LONG);
    a.open(&user("ann"), &sid("a1"), t(1), 10).await.unwrap();
    b.open(&user("ann"), &sid("a2"), t(1), 10).await.unwrap();
    b.open(&user("bob"), &sid("b1"), t(1), 10).await.unwrap();

    let ids: Vec<_> = ["ann", "bob", "cid"].into_iter().map(UserId::new).collect();
    let live = a.live(&ids).await.unwrap();
    assert_eq!(live.len(), 2);
    assert!(!live.contains_key(&UserId::new("cid")));

    assert_eq!(online_names(&a).await, ["ann", "bob"]);
    let one = b.online_users(1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one, b.online_users(1).await.unwrap(), "the order is stable");
    assert!(b.online_users(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unrefreshed_entry_expires_and_is_closed_exactly_once() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let dead = node(&redis, "dead", SHORT);
    let a = node(&redis, "a", LONG);
    let b = node_on(test_redis::another(&redis).await, &redis, "b", LONG);
    let ann = user("ann");
    dead.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    assert!(is_live(&a, "ann").await);

    eventually("ann shows offline once her entry expired", || async {
        !is_live(&a, "ann").await
    })
    .await;
    assert!(online_names(&a).await.is_empty());
    assert!(
        a.set_status(&ann.id, ActiveStatus::Away, t(2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(a.expired(10).await.unwrap(), [(ann.clone(), sid("s1"))]);
    assert!(
        dead.expired(10).await.unwrap().is_empty(),
        "a node does not reap a session it still serves"
    );

    let s1 = sid("s1");
    let (x, y) = tokio::join!(a.close(&ann.id, &s1), b.close(&ann.id, &s1));
    assert_eq!(
        usize::from(x.unwrap()) + usize::from(y.unwrap()),
        1,
        "exactly one close announces the offline"
    );
    assert!(a.expired(10).await.unwrap().is_empty());
    assert!(prefix_keys(&redis).await.is_empty());
}

#[tokio::test]
async fn expired_entries_neither_count_toward_the_limit_nor_keep_a_user_online() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let dead = node(&redis, "dead", SHORT);
    let a = node(&redis, "a", LONG);
    let ann = user("ann");
    dead.open(&ann, &sid("d1"), t(1), 2).await.unwrap();
    dead.open(&ann, &sid("d2"), t(1), 2).await.unwrap();
    eventually("ann's entries expire", || async {
        !is_live(&a, "ann").await
    })
    .await;

    assert!(
        a.open(&ann, &sid("s1"), t(2), 2).await.unwrap(),
        "with only expired entries she comes online again"
    );
    a.open(&ann, &sid("s2"), t(2), 2).await.unwrap();
    assert!(
        a.expired(10).await.unwrap().is_empty(),
        "a user connected elsewhere needs no offline"
    );
    assert!(!a.close(&ann.id, &sid("d1")).await.unwrap());
    assert!(!a.close(&ann.id, &sid("s1")).await.unwrap());
    assert!(a.close(&ann.id, &sid("s2")).await.unwrap());
    assert!(
        prefix_keys(&redis).await.is_empty(),
        "the last close takes the expired leftovers with it"
    );
}

#[tokio::test]
async fn a_closed_session_with_the_latest_expiry_does_not_keep_its_user_online() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    // Not SHORT: s1 must still be alive when s2 closes, and on a loaded
    // machine 400 ms can pass between two Redis round trips.
    let short = node(&redis, "short", Duration::from_secs(2));
    let long = node(&redis, "long", LONG);
    let ann = user("ann");
    short.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    long.open(&ann, &sid("s2"), t(1), 10).await.unwrap();
    assert!(!long.close(&ann.id, &sid("s2")).await.unwrap());
    eventually("ann's remaining entry expires", || async {
        online_names(&long).await.is_empty()
    })
    .await;
    assert_eq!(long.expired(10).await.unwrap(), [(ann, sid("s1"))]);
}

#[tokio::test]
async fn refresh_keeps_entries_alive_and_re_adds_lost_ones() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let p = node(&redis, "n1", SHORT);
    let ann = user("ann");
    p.open(&ann, &sid("s1"), t(1), 10).await.unwrap();
    p.set_status(&ann.id, ActiveStatus::Away, t(2))
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < SHORT * 3 {
        p.refresh().await.unwrap();
        assert!(
            is_live(&p, "ann").await,
            "alive after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(p.heartbeat_every()).await;
    }
    assert_eq!(
        live_of(&p, &ann.id).await.status,
        ActiveStatus::Away,
        "a refresh keeps the chosen status"
    );

    let mut conn = redis.conn.clone();
    let () = conn.del(prefix_keys(&redis).await).await.unwrap();
    assert!(!is_live(&p, "ann").await);
    p.refresh().await.unwrap();
    let live = live_of(&p, &ann.id).await;
    assert_eq!(live.status, ActiveStatus::Online);
    assert_eq!(online_names(&p).await, ["ann"]);
    assert!(
        p.close(&ann.id, &sid("s1")).await.unwrap(),
        "a re-added entry closes like any other"
    );
    p.refresh().await.unwrap();
    assert!(
        prefix_keys(&redis).await.is_empty(),
        "a closed session is not refreshed back"
    );
}

#[tokio::test]
async fn a_new_incarnation_claims_the_sessions_of_the_previous_one() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let first = node(&redis, "n1", LONG);
    assert!(first.claim_node().await.unwrap().is_empty());
    // An id with a slash and a space: ids are opaque to the registry.
    let odd = User {
        id: UserId::new("u/1 x"),
        username: Username::parse("odd").unwrap(),
    };
    let ann = user("ann");
    first.open(&ann, &sid("a1"), t(1), 10).await.unwrap();
    first.open(&ann, &sid("a2"), t(1), 10).await.unwrap();
    first.open(&odd, &sid("o/1"), t(1), 10).await.unwrap();
    first.open(&ann, &sid("gone"), t(1), 10).await.unwrap();
    first.close(&ann.id, &sid("gone")).await.unwrap();

    let second = node(&redis, "n1", LONG);
    let mut left = second.claim_node().await.unwrap();
    left.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        left,
        [
            (ann.clone(), sid("a1")),
            (ann.clone(), sid("a2")),
            (odd.clone(), sid("o/1")),
        ]
    );
    let mut offline = 0;
    for (user, session) in left {
        offline += usize::from(second.close(&user.id, &session).await.unwrap());
    }
    assert_eq!(offline, 2);
    assert_eq!(
        prefix_keys(&redis).await,
        [first.keys().node("n1")],
        "only the node key is left"
    );
    let mut conn = redis.conn.clone();
    let current: String = conn.get(first.keys().node("n1")).await.unwrap();
    assert_eq!(current, second.incarnation());
    assert!(
        node(&redis, "n2", LONG)
            .claim_node()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn leave_removes_everything_of_its_incarnation_only() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let a = node(&redis, "a", LONG);
    let b = node(&redis, "b", LONG);
    a.claim_node().await.unwrap();
    b.claim_node().await.unwrap();
    a.open(&user("ann"), &sid("a1"), t(1), 10).await.unwrap();
    a.open(&user("bob"), &sid("b1"), t(1), 10).await.unwrap();
    b.open(&user("ann"), &sid("a2"), t(1), 10).await.unwrap();

    a.leave().await.unwrap();
    assert_eq!(online_names(&b).await, ["ann"]);
    assert_eq!(
        prefix_keys(&redis).await,
        [
            b.keys().incarnation(b.incarnation()),
            b.keys().node("b"),
            b.keys().live(&UserId::new("ann")),
            b.keys().online(),
            b.keys().sessions(&UserId::new("ann")),
        ]
    );
    a.refresh().await.unwrap();
    assert_eq!(
        online_names(&b).await,
        ["ann"],
        "nothing is left to refresh"
    );

    // A node key already claimed by a newer incarnation stays.
    let newer = node(&redis, "b", LONG);
    newer.claim_node().await.unwrap();
    b.leave().await.unwrap();
    assert_eq!(prefix_keys(&redis).await, [b.keys().node("b")]);
}

#[tokio::test]
async fn the_tasks_keep_own_sessions_alive_and_reap_a_dead_nodes_once() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    // The live nodes' ttl leaves their heartbeat slack on a loaded machine.
    let ttl = Duration::from_secs(1);
    let start = Instant::now();
    let dead = node(&redis, "dead", SHORT);
    let a = node(&redis, "a", ttl);
    let b = node_on(test_redis::another(&redis).await, &redis, "b", ttl);
    let (ann, bob) = (user("ann"), user("bob"));
    dead.open(&ann, &sid("d1"), t(1), 10).await.unwrap();
    dead.open(&ann, &sid("d2"), t(1), 10).await.unwrap();
    a.open(&bob, &sid("b1"), t(1), 10).await.unwrap();

    let offline = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let counters = [Counter::default(), Counter::default()];
    let tasks: Vec<_> = [&a, &b]
        .into_iter()
        .zip(&counters)
        .map(|(p, reaped)| {
            let (p, offline, closes) = (p.clone(), offline.clone(), closes.clone());
            let closer = p.clone();
            tokio::spawn(run_tasks(p, reaped.clone(), move |c: Caller| {
                let (closer, offline, closes) = (closer.clone(), offline.clone(), closes.clone());
                async move {
                    closes.fetch_add(1, Ordering::SeqCst);
                    if closer.close(&c.user.id, &c.session).await? {
                        offline.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                }
            }))
        })
        .collect();

    eventually("the dead node's sessions are reaped", || async {
        prefix_keys(&redis)
            .await
            .iter()
            .all(|k| !k.contains(":ann") && !k.contains(dead.incarnation()))
    })
    .await;
    // Past bob's ttl, and long enough for any second reaper pass to have run.
    tokio::time::sleep((ttl * 3).saturating_sub(start.elapsed()) + REAP_EVERY).await;
    assert_eq!(offline.load(Ordering::SeqCst), 1, "one offline for ann");
    assert!(closes.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        counters.iter().map(Counter::get).sum::<u64>(),
        closes.load(Ordering::SeqCst) as u64
    );
    assert!(
        is_live(&b, "bob").await,
        "a's heartbeat kept bob alive past the ttl"
    );
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn a_restarted_node_closes_its_previous_sessions_at_start() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let before = node(&redis, "n1", LONG);
    before.claim_node().await.unwrap();
    before
        .open(&user("ann"), &sid("s1"), t(1), 10)
        .await
        .unwrap();

    let after = node(&redis, "n1", LONG);
    let offline = Arc::new(AtomicUsize::new(0));
    let closer = after.clone();
    let seen = offline.clone();
    let task = tokio::spawn(run_tasks(after, Counter::default(), move |c: Caller| {
        let (closer, seen) = (closer.clone(), seen.clone());
        async move {
            if closer.close(&c.user.id, &c.session).await? {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }));
    eventually("the previous incarnation's session is closed", || async {
        offline.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!is_live(&before, "ann").await);
    task.abort();
}

#[tokio::test]
async fn a_failed_reaper_close_is_counted_and_retried_later() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let dead = node(&redis, "dead", SHORT);
    let p = node(&redis, "n1", LONG);
    dead.open(&user("ann"), &sid("s1"), t(1), 10).await.unwrap();
    eventually("ann's entry expires", || async {
        !is_live(&p, "ann").await
    })
    .await;

    let reaped = Counter::default();
    let mut failing = |_: Caller| async { Err(PortError(anyhow::anyhow!("unavailable"))) };
    assert_eq!(reap(&p, &reaped, &mut failing).await, 0);
    assert_eq!((p.reap_failures(), reaped.get()), (1, 0));

    let closer = p.clone();
    let mut closing = move |c: Caller| {
        let closer = closer.clone();
        async move { closer.close(&c.user.id, &c.session).await.map(|_| ()) }
    };
    assert_eq!(reap(&p, &reaped, &mut closing).await, 1);
    assert_eq!(reaped.get(), 1);
    assert!(p.expired(10).await.unwrap().is_empty());
}
