//! Unit tests of the session's pace, of its task's size, and of its
//! dispatch against a mock of the use cases.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::MonotonicClock;
use governor::{Quota, RateLimiter};
use hyper_tungstenite::tungstenite::Utf8Bytes;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::write::{PACE_BURST, PACE_INTERVAL, Pace};
use super::{PendingSession, Session, SessionEnv, WsSettings, run};
use crate::adapters::metrics::Metrics;
use crate::adapters::ws::alarms::Alarms;
use crate::adapters::ws::registry::{Mailbox, Outbound, SessionRegistry};
use crate::domain::error::ConversationError;
use crate::domain::membership::Denied;
use crate::domain::service::{Caller, MockUseCases};
use crate::domain::{DeviceId, SessionId, User, UserId, Username};

/// The size of the future `f` returns, without calling it.
fn returned_size<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// The most bytes the session future may take: see `run`, where 8 bytes
/// more grow tokio's cell for the task from 768 bytes to 896, for every
/// session. A debug build lays the future out 8 bytes larger.
const MAX_SESSION_FUTURE: usize = if cfg!(debug_assertions) { 664 } else { 656 };

#[test]
fn the_session_task_fits_its_768_byte_cell() {
    let size = returned_size(run);
    assert!(
        size <= MAX_SESSION_FUTURE,
        "the session future is {size} bytes"
    );
}

#[test]
fn a_burst_of_writes_goes_at_once_then_one_per_interval() {
    let t0 = Instant::now();
    let mut pace = Pace::new(t0);
    for _ in 0..PACE_BURST {
        assert!(pace.next_write() <= t0);
        pace.spend(t0);
    }
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
    pace.spend(t0 + PACE_INTERVAL);
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL * 2);
    // Quiet for long enough, the whole burst is back.
    let later = t0 + PACE_INTERVAL * (PACE_BURST + 2);
    assert!(pace.next_write() <= later);
    pace.spend(later);
    assert!(pace.next_write() <= later);
}

#[test]
fn writes_beyond_the_budget_hold_events_back_one_interval_at_most() {
    let t0 = Instant::now();
    let mut pace = Pace::new(t0);
    // Replies write whatever the pace: a hundred of them at once.
    for _ in 0..100 {
        pace.spend(t0);
    }
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
}

/// What a session needs, around `service`.
fn env(service: MockUseCases) -> SessionEnv {
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(SessionRegistry::new(metrics.clone()));
    let per_sec = NonZeroU32::new(100).unwrap();
    SessionEnv {
        service: Arc::new(service),
        registry: registry.clone(),
        metrics,
        settings: WsSettings {
            heartbeat: Duration::from_secs(30),
            rate_per_sec: per_sec,
            rate_burst: per_sec,
            outbound: Arc::new(Outbound::new(64, 1 << 20, 1 << 24, 5)),
            close_timeout: Duration::from_secs(1),
        },
        shutdown: CancellationToken::new(),
        attach: registry,
        alarms: Alarms::new(),
    }
}

/// Zed's session, on `env`.
fn pending(env: &SessionEnv) -> PendingSession {
    let session = SessionId::new("s1");
    PendingSession {
        caller: Caller {
            user: User {
                id: UserId::new("u1"),
                username: Username::parse("zed").unwrap(),
            },
            session: session.clone(),
        },
        expires_at: std::sync::atomic::AtomicI64::new(i64::MAX),
        handle: Mailbox::new(
            session,
            DeviceId::new("d"),
            env.settings.outbound.clone(),
            None,
        ),
    }
}

/// The replies `session` gives to `frames`, in order, as JSON.
async fn replies(env: &SessionEnv, frames: &[&str]) -> Vec<Value> {
    let pending = pending(env);
    let quota = Quota::per_second(env.settings.rate_per_sec);
    let session = Session {
        env,
        pending: &pending,
        limiter: RateLimiter::direct_with_clock(quota, MonotonicClock),
    };
    let texts = frames.iter().map(|f| Utf8Bytes::from(*f)).collect();
    let answers = session.answer_all(texts).await;
    answers
        .iter()
        .map(|(reply, _)| serde_json::from_str(reply.as_str()).expect("JSON"))
        .collect()
}

#[tokio::test]
async fn a_refusal_of_the_core_is_answered_with_its_code_and_the_request_id() {
    let mut service = MockUseCases::new();
    // A request is activity: the session tells the core.
    service.expect_touch().returning(|_| Ok(()));
    service
        .expect_history()
        .times(1)
        .returning(|_, _, _| Err(ConversationError::Refused(Denied::NotMember)));
    let env = env(service);
    let got = replies(
        &env,
        &[r#"{"type":"getHistory","id":"h1","content":{"conversationId":"c1"}}"#],
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "error");
    assert_eq!(got[0]["id"], "h1");
    assert_eq!(got[0]["content"]["code"], "forbidden", "{got:?}");
    assert_eq!(
        got[0]["content"]["message"],
        "not a member of this conversation"
    );
}

#[tokio::test]
async fn a_request_the_wire_refuses_never_reaches_the_core() {
    // No expectation: any call to the use cases fails the test.
    let env = env(MockUseCases::new());
    let got = replies(
        &env,
        &[
            r#"{"type":"getHistory","id":"h1","content":{}}"#,
            r#"{"type":"noSuchThing","id":"n1"}"#,
        ],
    )
    .await;
    let codes: Vec<&Value> = got.iter().map(|r| &r["content"]["code"]).collect();
    assert_eq!(codes, ["bad_request", "bad_request"], "{got:?}");
    assert_eq!(got[1]["id"], "n1");
}
