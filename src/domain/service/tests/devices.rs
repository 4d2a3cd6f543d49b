//! Unit tests of device sessions: refresh, reauth, ending sessions,
//! password changes and account deletion, with every port mocked. A child
//! of the service's test module: it reuses its [`Harness`].
use super::*;

use crate::domain::error::{AccountError, EndDeviceError, RefreshError};

/// The authenticator hashes "refresh-0" to "h0" and issues "refresh-1"
/// (hash "h1") next.
fn expect_refresh_tokens(h: &mut Harness) {
    h.auth
        .expect_refresh_hash()
        .withf(|t| t == "refresh-0")
        .returning(|_| RefreshHash("h0".to_owned()));
    h.auth
        .expect_new_refresh_token()
        .times(1)
        .returning(|| ("refresh-1".to_owned(), RefreshHash("h1".to_owned())));
}

/// The store answers the rotation of "h0" into "h1" with `rotation`.
fn expect_rotation(h: &mut Harness, rotation: Rotation) {
    h.devices
        .expect_rotate_refresh()
        .withf(|r: &Rotate| {
            r.presented == RefreshHash("h0".to_owned())
                && r.next == RefreshHash("h1".to_owned())
                && r.now == NOW
                && r.next_expires_at == REFRESH_EXPIRES
                && r.grace_ms == GRACE_MS
                && r.address.as_deref() == Some("192.0.2.7")
        })
        .times(1)
        .return_once(move |_| Ok(rotation));
}

fn live_state(name: &str) -> TokenState {
    TokenState {
        user: user(name),
        generation: 4,
        live: true,
        last_used_at: NOW,
    }
}

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id)
}

/// Exactly one revocation, of `what`.
fn expect_revoked(h: &mut Harness, what: Revocation) {
    h.revoker
        .expect_revoked()
        .withf(move |w| *w == what)
        .times(1)
        .return_const(());
}

async fn refresh(h: Harness) -> Result<SignedIn, RefreshError> {
    h.build()
        .refresh("refresh-0", Some("192.0.2.7".to_owned()))
        .await
}

#[tokio::test]
async fn a_current_refresh_token_buys_a_new_pair_for_the_same_device_session() {
    let mut h = Harness::new();
    expect_refresh_tokens(&mut h);
    expect_rotation(
        &mut h,
        Rotation::Rotated {
            state: live_state("alice"),
            device: dev("dev-1"),
        },
    );
    h.auth
        .expect_issue_token()
        .withf(|u, d, generation, now| {
            u.id == uid("alice") && d.as_str() == "dev-1" && *generation == 4 && *now == NOW
        })
        .times(1)
        .returning(|u, _, _, _| Ok(token(u)));
    h.revoker.expect_revoked().never();
    assert_eq!(refresh(h).await.unwrap(), signed_in(&user("alice")));
}

#[tokio::test]
async fn a_refresh_token_spent_within_the_grace_window_is_a_race_and_ends_nothing() {
    let mut h = Harness::new();
    expect_refresh_tokens(&mut h);
    expect_rotation(&mut h, Rotation::Raced);
    h.auth.expect_issue_token().never();
    h.revoker.expect_revoked().never();
    assert!(matches!(refresh(h).await, Err(RefreshError::Raced)));
}

#[tokio::test]
async fn a_refresh_token_reused_after_the_grace_window_ends_its_session_everywhere() {
    let mut h = Harness::new();
    expect_refresh_tokens(&mut h);
    expect_rotation(
        &mut h,
        Rotation::Reused {
            user: uid("alice"),
            device: dev("dev-1"),
        },
    );
    h.auth.expect_issue_token().never();
    expect_revoked(
        &mut h,
        Revocation::Device {
            user: uid("alice"),
            device: dev("dev-1"),
        },
    );
    let err = refresh(h).await.unwrap_err();
    assert!(
        matches!(&err, RefreshError::Reused { user, device } if *user == uid("alice") && device.as_str() == "dev-1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_or_dead_refresh_token_is_invalid() {
    for rotation in [
        Rotation::Invalid,
        Rotation::Rotated {
            state: TokenState {
                live: false,
                ..live_state("alice")
            },
            device: dev("dev-1"),
        },
    ] {
        let mut h = Harness::new();
        expect_refresh_tokens(&mut h);
        expect_rotation(&mut h, rotation);
        h.auth.expect_issue_token().never();
        assert!(matches!(refresh(h).await, Err(RefreshError::Invalid)));
    }
}

#[tokio::test]
async fn signing_in_past_the_device_limit_ends_the_sessions_the_store_made_room_from() {
    let mut h = Harness::new();
    h.auth
        .expect_new_refresh_token()
        .returning(|| ("refresh-1".to_owned(), RefreshHash("h1".to_owned())));
    h.devices
        .expect_create_device()
        .withf(|_, max| *max == MAX_DEVICES)
        .times(1)
        .returning(|_, _| {
            Ok(CreatedDevice {
                id: dev("dev-1"),
                generation: 4,
                ended: vec![dev("old")],
            })
        });
    h.auth
        .expect_issue_token()
        .returning(|u, _, _, _| Ok(token(u)));
    expect_revoked(
        &mut h,
        Revocation::Device {
            user: uid("alice"),
            device: dev("old"),
        },
    );
    let service = h.build();
    let signed = service.sign_in(user("alice"), device()).await.unwrap();
    assert_eq!(signed, signed_in(&user("alice")));
}

#[tokio::test]
async fn reauth_accepts_a_fresh_token_of_the_same_device_session_only() {
    for (user_name, device, ok) in [
        ("alice", "dev-1", true),
        ("alice", "dev-2", false),
        ("bob", "dev-1", false),
    ] {
        let mut h = Harness::new();
        expect_valid_token(&mut h, "fresh", "alice");
        expect_token_state(&mut h, "alice", true, 4);
        let got = h
            .build()
            .reauthenticate(&uid(user_name), &dev(device), "fresh")
            .await;
        assert_eq!(got.is_ok(), ok, "{user_name} on {device}: {got:?}");
        if ok {
            assert_eq!(got.unwrap(), EXPIRES);
        }
    }
}

#[tokio::test]
async fn ending_a_session_of_ones_own_revokes_it() {
    let mut h = Harness::new();
    h.devices
        .expect_end_device()
        .withf(|u, d, now| *u == uid("alice") && d.as_str() == "dev-2" && *now == NOW)
        .times(1)
        .returning(|_, _, _| Ok(true));
    expect_revoked(
        &mut h,
        Revocation::Device {
            user: uid("alice"),
            device: dev("dev-2"),
        },
    );
    h.build()
        .end_device(&uid("alice"), &dev("dev-2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn ending_a_session_that_is_not_ones_own_is_not_found_and_revokes_nothing() {
    let mut h = Harness::new();
    h.devices
        .expect_end_device()
        .times(1)
        .returning(|_, _, _| Ok(false));
    h.revoker.expect_revoked().never();
    let err = h
        .build()
        .end_device(&uid("alice"), &dev("bobs"))
        .await
        .unwrap_err();
    assert!(matches!(err, EndDeviceError::NoSuchDevice), "{err:?}");
}

#[tokio::test]
async fn logging_out_everywhere_bumps_the_generation_and_revokes_every_session() {
    let mut h = Harness::new();
    h.devices
        .expect_end_devices()
        .withf(|u, keep, bump, now| *u == uid("alice") && keep.is_none() && *bump && *now == NOW)
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    expect_revoked(
        &mut h,
        Revocation::AllBut {
            user: uid("alice"),
            keep: None,
        },
    );
    h.build().end_all_devices(&uid("alice")).await.unwrap();
}

fn alice_on_dev_1() -> Authenticated {
    Authenticated {
        user: user("alice"),
        device: dev("dev-1"),
        expires_at: EXPIRES,
    }
}

/// The store holds [`hash`] for alice; the authenticator answers `matches`.
fn expect_password_check(h: &mut Harness, matches: bool) {
    h.devices
        .expect_password_hash()
        .withf(|u| *u == uid("alice"))
        .times(1)
        .returning(|_| Ok(Some(hash())));
    h.auth
        .expect_verify_password()
        .withf(|p, stored| p == "old password" && *stored == Some(hash()))
        .times(1)
        .returning(move |_, _| Ok(matches));
}

#[tokio::test]
async fn a_password_change_keeps_this_session_and_ends_every_other() {
    let mut h = Harness::new();
    expect_password_check(&mut h, true);
    h.auth
        .expect_hash_password()
        .withf(|p| p.expose() == "a brand new one")
        .times(1)
        .returning(|_| Ok(PasswordHash("new-hash".to_owned())));
    h.devices
        .expect_set_password()
        .withf(|u, hash, keep, now| {
            *u == uid("alice") && hash.0 == "new-hash" && keep.as_str() == "dev-1" && *now == NOW
        })
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    expect_revoked(
        &mut h,
        Revocation::AllBut {
            user: uid("alice"),
            keep: Some(dev("dev-1")),
        },
    );
    h.build()
        .change_password(
            &alice_on_dev_1(),
            "old password",
            password("a brand new one"),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_password_change_with_the_wrong_current_password_changes_nothing() {
    let mut h = Harness::new();
    expect_password_check(&mut h, false);
    h.auth.expect_hash_password().never();
    h.devices.expect_set_password().never();
    h.revoker.expect_revoked().never();
    let err = h
        .build()
        .change_password(
            &alice_on_dev_1(),
            "old password",
            password("a brand new one"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::WrongPassword), "{err:?}");
}

#[tokio::test]
async fn deleting_an_account_needs_its_password_and_ends_every_session() {
    let mut h = Harness::new();
    expect_password_check(&mut h, true);
    h.devices
        .expect_delete_user()
        .withf(|u, now| *u == uid("alice") && *now == NOW)
        .times(1)
        .returning(|_, _| Ok(()));
    expect_revoked(
        &mut h,
        Revocation::AllBut {
            user: uid("alice"),
            keep: None,
        },
    );
    h.messages
        .expect_conversations_of()
        .withf(|u| *u == uid("alice"))
        .times(1)
        .returning(|_| Ok(Vec::new()));
    h.build()
        .delete_account(&user("alice"), "old password")
        .await
        .unwrap();

    let mut h = Harness::new();
    expect_password_check(&mut h, false);
    h.devices.expect_delete_user().never();
    h.revoker.expect_revoked().never();
    let err = h
        .build()
        .delete_account(&user("alice"), "old password")
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::WrongPassword), "{err:?}");
}
