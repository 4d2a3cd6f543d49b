//! The `DeviceStore` part of the store contract: device sessions, refresh
//! token rotation (exactly once, also across stores on one database), reuse,
//! the per-user limit, password changes and account deletion.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{Fixture, hash, register, ts};
use crate::domain::device::{DeviceInfo, DeviceName, NewDevice, RefreshHash, Rotate, Rotation};
use crate::domain::ports::{DeviceStore, UserStore};
use crate::domain::{DeviceId, Timestamp, User, UserId, Username};

const DAY: i64 = 86_400_000;

fn new_device(user: &User, name: &str, refresh: &str, at: Timestamp) -> NewDevice {
    NewDevice {
        user: user.id.clone(),
        info: DeviceInfo {
            name: DeviceName::parse(name).unwrap(),
            address: Some("192.0.2.1".to_owned()),
        },
        now: at,
        refresh: RefreshHash(refresh.to_owned()),
        refresh_expires_at: Timestamp::from_millis(at.millis() + 30 * DAY),
    }
}

async fn device<S: DeviceStore>(
    store: &S,
    user: &User,
    name: &str,
    refresh: &str,
    at: i64,
) -> DeviceId {
    store
        .create_device(new_device(user, name, refresh, ts(at)), 100)
        .await
        .unwrap()
        .id
}

fn rotate(presented: &str, next: &str, at: i64, grace_ms: i64) -> Rotate {
    Rotate {
        presented: RefreshHash(presented.to_owned()),
        next: RefreshHash(next.to_owned()),
        now: ts(at),
        next_expires_at: ts(at + 30 * DAY),
        grace_ms,
        address: Some("198.51.100.2".to_owned()),
    }
}

async fn live<S: DeviceStore>(store: &S, user: &UserId, device: &DeviceId, at: i64) -> bool {
    store
        .token_state(user, device, ts(at))
        .await
        .unwrap()
        .is_some_and(|s| s.live)
}

pub(crate) async fn a_device_session_is_live_until_ended_and_listed_most_recent_first<
    F: Fixture,
>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let bob = register(s, "bob").await;
    let first = device(s, &ann, "laptop", "h1", 0).await;
    let second = device(s, &ann, "phone", "h2", 10).await;
    device(s, &bob, "bobs", "h3", 20).await;
    let state = s
        .token_state(&ann.id, &first, ts(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.user, ann);
    assert!(state.live);
    assert_eq!(state.generation, 0);
    assert!(
        s.token_state(&bob.id, &first, ts(30))
            .await
            .unwrap()
            .is_none(),
        "someone else's"
    );
    let listed = s.devices(&ann.id, ts(30)).await.unwrap();
    let ids: Vec<&DeviceId> = listed.iter().map(|d| &d.id).collect();
    assert_eq!(ids, [&second, &first]);
    assert_eq!(listed[0].name.as_str(), "phone");
    assert_eq!(listed[0].last_address.as_deref(), Some("192.0.2.1"));
    assert!(
        !s.end_device(&bob.id, &first, ts(40)).await.unwrap(),
        "not bob's"
    );
    assert!(s.end_device(&ann.id, &first, ts(40)).await.unwrap());
    assert!(
        !s.end_device(&ann.id, &first, ts(41)).await.unwrap(),
        "ended once"
    );
    assert!(!live(s, &ann.id, &first, 50).await);
    assert_eq!(s.devices(&ann.id, ts(50)).await.unwrap().len(), 1);
    assert_eq!(
        s.ended_among(&[first.clone(), second.clone()], ts(50))
            .await
            .unwrap(),
        [first]
    );
    // Past its refresh token's life, a session is no longer live either.
    assert!(!live(s, &ann.id, &second, 10 + 31 * DAY).await);
    assert_eq!(
        s.ended_among(std::slice::from_ref(&second), ts(10 + 31 * DAY))
            .await
            .unwrap(),
        [second]
    );
}

pub(crate) async fn a_refresh_token_rotates_once_and_its_reuse_ends_the_session<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let d = device(s, &ann, "laptop", "h1", 0).await;
    match s
        .rotate_refresh(rotate("h1", "h2", 100, 1_000))
        .await
        .unwrap()
    {
        Rotation::Rotated { state, device } => {
            assert_eq!(device, d);
            assert_eq!(state.user, ann);
        }
        other => panic!("{other:?}"),
    }
    let listed = s.devices(&ann.id, ts(100)).await.unwrap();
    assert_eq!(listed[0].last_used_at, ts(100));
    assert_eq!(listed[0].last_address.as_deref(), Some("198.51.100.2"));
    // The spent token within the grace window: a race, nothing changes.
    assert_eq!(
        s.rotate_refresh(rotate("h1", "h9", 500, 1_000))
            .await
            .unwrap(),
        Rotation::Raced
    );
    assert!(live(s, &ann.id, &d, 500).await);
    assert!(matches!(
        s.rotate_refresh(rotate("h2", "h3", 600, 1_000))
            .await
            .unwrap(),
        Rotation::Rotated { .. }
    ));
    // Unknown tokens are just invalid.
    assert_eq!(
        s.rotate_refresh(rotate("nope", "h8", 700, 1_000))
            .await
            .unwrap(),
        Rotation::Invalid
    );
    // A token spent long ago: reuse, and the session ends.
    assert_eq!(
        s.rotate_refresh(rotate("h1", "h7", 5_000, 1_000))
            .await
            .unwrap(),
        Rotation::Reused {
            user: ann.id.clone(),
            device: d.clone()
        }
    );
    assert!(!live(s, &ann.id, &d, 5_000).await);
    assert_eq!(
        s.rotate_refresh(rotate("h3", "h6", 5_001, 1_000))
            .await
            .unwrap(),
        Rotation::Invalid
    );
}

pub(crate) async fn of_concurrent_rotations_of_one_token_on_two_stores_exactly_one_wins<
    F: Fixture,
>(
    f: F,
) {
    let ann = register(f.store(), "ann").await;
    device(f.store(), &ann, "laptop", "h1", 0).await;
    let stores = [f.store().clone(), f.another().await];
    let barrier = Arc::new(Barrier::new(8));
    let tries = (0..8).map(|i| {
        let store = stores[i % 2].clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            store
                .rotate_refresh(rotate("h1", &format!("n{i}"), 100, 60_000))
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<Rotation> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let won = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated { .. }))
        .count();
    assert_eq!(won, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Rotation::Rotated { .. } | Rotation::Raced)),
        "{outcomes:?}"
    );
}

pub(crate) async fn past_the_limit_the_least_recently_used_device_session_ends<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let old = device(s, &ann, "old", "h1", 0).await;
    let used = device(s, &ann, "used", "h2", 10).await;
    // The older one was used since: the other is now least recently used.
    s.rotate_refresh(rotate("h1", "h1b", 20, 0)).await.unwrap();
    let created = s
        .create_device(new_device(&ann, "new", "h3", ts(30)), 2)
        .await
        .unwrap();
    assert_eq!(created.ended, std::slice::from_ref(&used));
    assert!(live(s, &ann.id, &old, 40).await);
    assert!(!live(s, &ann.id, &used, 40).await);
    assert!(live(s, &ann.id, &created.id, 40).await);
}

pub(crate) async fn ending_every_session_keeps_one_if_asked_and_a_bump_moves_the_generation<
    F: Fixture,
>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let keep = device(s, &ann, "keep", "h1", 0).await;
    let other = device(s, &ann, "other", "h2", 0).await;
    s.end_devices(&ann.id, Some(keep.clone()), false, ts(10))
        .await
        .unwrap();
    assert!(live(s, &ann.id, &keep, 20).await);
    assert!(!live(s, &ann.id, &other, 20).await);
    s.end_devices(&ann.id, None, true, ts(30)).await.unwrap();
    let state = s
        .token_state(&ann.id, &keep, ts(40))
        .await
        .unwrap()
        .unwrap();
    assert!(!state.live);
    assert_eq!(state.generation, 1);
    let next = s
        .create_device(new_device(&ann, "again", "h3", ts(50)), 100)
        .await
        .unwrap();
    assert_eq!(
        next.generation, 1,
        "a new session starts in the new generation"
    );
}

pub(crate) async fn a_password_change_replaces_the_hash_and_ends_the_other_sessions<F: Fixture>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let keep = device(s, &ann, "keep", "h1", 0).await;
    let other = device(s, &ann, "other", "h2", 0).await;
    s.set_password(&ann.id, hash("new"), keep.clone(), ts(10))
        .await
        .unwrap();
    assert_eq!(s.password_hash(&ann.id).await.unwrap(), Some(hash("new")));
    let name = Username::parse("ann").unwrap();
    assert_eq!(s.credentials(&name).await.unwrap().unwrap().1, hash("new"));
    assert!(live(s, &ann.id, &keep, 20).await);
    assert!(!live(s, &ann.id, &other, 20).await);
}

pub(crate) async fn a_deleted_user_keeps_the_name_but_not_the_password_nor_a_session<F: Fixture>(
    f: F,
) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let d = device(s, &ann, "laptop", "h1", 0).await;
    s.delete_user(&ann.id, ts(10)).await.unwrap();
    assert!(!live(s, &ann.id, &d, 20).await);
    assert_eq!(s.password_hash(&ann.id).await.unwrap(), None);
    let name = Username::parse("ann").unwrap();
    assert!(
        s.credentials(&name).await.unwrap().is_none(),
        "signs nobody in"
    );
    assert!(s.user(&ann.id).await.unwrap().is_none(), "found by nobody");
    assert!(s.users_by_prefix("an", 10).await.unwrap().is_empty());
    assert!(
        s.create_user(&Username::parse("ANN").unwrap(), &hash("x"), ts(30))
            .await
            .is_err(),
        "the name stays taken"
    );
    assert_eq!(
        s.rotate_refresh(rotate("h1", "h2", 40, 0)).await.unwrap(),
        Rotation::Invalid
    );
}

pub(crate) async fn spent_refresh_tokens_older_than_a_token_lives_are_forgotten<F: Fixture>(f: F) {
    let s = f.store();
    let ann = register(s, "ann").await;
    let d = device(s, &ann, "laptop", "h1", 0).await;
    for (presented, next, at) in [
        ("h1", "h2", 100),
        ("h2", "h3", 100 + 20 * DAY),
        ("h3", "h4", 100 + 40 * DAY),
    ] {
        let rotated = s
            .rotate_refresh(rotate(presented, next, at, 1_000))
            .await
            .unwrap();
        assert!(
            matches!(rotated, Rotation::Rotated { .. }),
            "{presented}: {rotated:?}"
        );
    }
    // h1, spent 40 days ago, is gone: unknown rather than reused. h2, spent
    // 20 days ago, is still known, and its reuse ends the session.
    let now = 100 + 40 * DAY + 10_000;
    assert_eq!(
        s.rotate_refresh(rotate("h1", "x1", now, 1_000))
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert!(live(s, &ann.id, &d, now).await);
    assert_eq!(
        s.rotate_refresh(rotate("h2", "x2", now, 1_000))
            .await
            .unwrap(),
        Rotation::Reused {
            user: ann.id.clone(),
            device: d.clone()
        }
    );
}
