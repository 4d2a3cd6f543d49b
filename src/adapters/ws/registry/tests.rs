//! Unit tests of the registry and its mailboxes.

use super::*;
use crate::domain::{Presence, Status, User, Username};

/// Limits of `frames` frames and ample bytes, as most tests want.
fn limits(frames: usize) -> Arc<Outbound> {
    Arc::new(Outbound::new(frames, 1 << 30, 1 << 30, 3))
}

fn handle(id: &str, capacity: usize) -> SessionHandle {
    Mailbox::new(
        SessionId::new(id),
        DeviceId::new("d"),
        limits(capacity),
        None,
    )
}

fn text(len: usize) -> Frame {
    Frame::Text("x".repeat(len).into())
}

fn taken(h: &Mailbox) -> Vec<Frame> {
    h.take().into()
}

fn event() -> Event {
    Event::Presence(Presence {
        user: User {
            id: UserId::new("z"),
            username: Username::parse("zed").unwrap(),
        },
        status: Status::Online,
        last_seen: None,
    })
}

fn delivery(users: &[&str], except: Option<&str>) -> Delivery {
    Delivery {
        users: users.iter().map(|u| UserId::new(*u)).collect(),
        except: except.map(SessionId::new),
    }
}

#[tokio::test]
async fn every_session_of_every_user_gets_the_same_bytes_but_the_excepted_one() {
    let reg = SessionRegistry::new(Arc::default());
    let (a1, a2, b1) = (handle("a1", 4), handle("a2", 4), handle("b1", 4));
    reg.register(&UserId::new("a"), a1.clone());
    reg.register(&UserId::new("a"), a2.clone());
    reg.register(&UserId::new("b"), b1.clone());
    reg.deliver(delivery(&["a", "b", "nobody"], Some("a1")), event())
        .await;
    assert!(taken(&a1).is_empty());
    let (x, y) = (taken(&a2), taken(&b1));
    let ([Frame::Text(x)], [Frame::Text(y)]) = (&x[..], &y[..]) else {
        panic!("one text frame each expected");
    };
    assert!(x.as_str().starts_with(r#"{"type":"presence""#));
    assert_eq!(
        x.as_str().as_ptr(),
        y.as_str().as_ptr(),
        "one buffer, shared"
    );
}

#[tokio::test]
async fn a_full_queue_closes_that_session_with_4008_and_spares_the_others() {
    let reg = SessionRegistry::new(Arc::default());
    let (slow, fast) = (handle("slow", 1), handle("fast", 8));
    reg.register(&UserId::new("s"), slow.clone());
    reg.register(&UserId::new("f"), fast.clone());
    for _ in 0..3 {
        reg.deliver(delivery(&["s", "f"], None), event()).await;
    }
    assert_eq!(slow.reason(), Some((SLOW_CONSUMER, "slow consumer")));
    assert_eq!(fast.reason(), None);
    assert_eq!(taken(&fast).len(), 3);
}

#[test]
fn frames_taken_count_against_the_capacity_until_sent() {
    let h = handle("h", 2);
    assert!(h.push(Frame::Ping(Default::default())));
    assert!(h.push(Frame::Ping(Default::default())));
    assert_eq!(taken(&h).len(), 2);
    assert!(!h.push(Frame::Ping(Default::default())), "not written yet");
    assert_eq!(h.reason(), Some((SLOW_CONSUMER, "slow consumer")));
    let h = handle("h", 2);
    h.push(Frame::Ping(Default::default()));
    h.push(Frame::Ping(Default::default()));
    let frames = taken(&h);
    h.sent(2, frames.iter().map(cost).sum());
    assert!(h.push(Frame::Ping(Default::default())));
    assert_eq!(h.reason(), None);
}

#[tokio::test]
async fn an_unregistered_session_gets_nothing() {
    let reg = SessionRegistry::new(Arc::default());
    let a1 = handle("a1", 4);
    reg.register(&UserId::new("a"), a1.clone());
    reg.unregister(&UserId::new("a"), &SessionId::new("a1"));
    reg.deliver(delivery(&["a"], None), event()).await;
    assert!(taken(&a1).is_empty());
}

#[test]
fn shutting_down_closes_every_session_and_any_registered_later_with_1001() {
    let reg = SessionRegistry::new(Arc::default());
    let (before, after) = (handle("before", 1), handle("after", 1));
    reg.register(&UserId::new("a"), before.clone());
    reg.shut_down();
    reg.register(&UserId::new("a"), after.clone());
    for h in [before, after] {
        assert_eq!(h.reason(), Some((GOING_AWAY, "server going away")));
    }
}

pub(crate) struct Count(pub(crate) AtomicUsize);

impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts its wake-ups.
pub(crate) fn counting_waker() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

#[test]
fn a_paced_session_is_not_woken_by_frames_but_by_a_close() {
    let (count, waker) = counting_waker();
    let h = handle("h", 8);
    h.register(&waker);
    h.set_paced(true);
    h.push(Frame::Ping(Default::default()));
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    h.close(NORMAL);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    h.register(&waker);
    h.set_paced(false);
    h.push(Frame::Ping(Default::default()));
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    assert_eq!(taken(&h).len(), 2, "queued either way");
}

#[test]
fn a_paced_session_is_woken_once_its_mailbox_is_half_full() {
    let (count, waker) = counting_waker();
    let h = handle("h", 8);
    h.set_paced(true);
    h.register(&waker);
    for _ in 0..3 {
        h.push(Frame::Ping(Default::default()));
    }
    assert!(!h.crowded());
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    h.push(Frame::Ping(Default::default()));
    assert!(h.crowded());
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}

#[test]
fn the_first_close_request_wins() {
    let h = handle("h", 1);
    h.close(SLOW_CONSUMER);
    h.close(GOING_AWAY);
    assert_eq!(h.reason(), Some((SLOW_CONSUMER, "slow consumer")));
}

#[test]
fn a_session_over_its_bytes_is_closed_with_4008_whatever_its_frames() {
    let outbound = Arc::new(Outbound::new(100, 10_000, 1 << 30, 3));
    let h = Mailbox::new(
        SessionId::new("h"),
        DeviceId::new("d"),
        outbound.clone(),
        None,
    );
    assert!(h.push(text(4_000)));
    assert!(h.push(text(4_000)));
    assert_eq!(h.pending_bytes(), 2 * (4_000 + FRAME_OVERHEAD));
    assert!(!h.push(text(4_000)), "a third would pass 10,000 bytes");
    assert_eq!(h.reason(), Some((SLOW_CONSUMER, "slow consumer")));
    assert_eq!(
        outbound.queued(),
        h.pending_bytes(),
        "the refused frame left no count"
    );
}

#[test]
fn over_the_shared_budget_only_sessions_holding_more_than_their_share_are_closed() {
    let outbound = Arc::new(Outbound::new(10_000, 1 << 30, 3 * READ_PAUSE_BYTES, 3));
    let (big, small) = (
        Mailbox::new(
            SessionId::new("big"),
            DeviceId::new("d"),
            outbound.clone(),
            None,
        ),
        Mailbox::new(
            SessionId::new("small"),
            DeviceId::new("d"),
            outbound.clone(),
            None,
        ),
    );
    let chunk = 60_000;
    // The large backlog grows past its share while the total is within budget.
    while outbound.queued() + chunk < 3 * READ_PAUSE_BYTES {
        assert!(big.push(text(chunk)));
    }
    assert!(big.pending_bytes() > READ_PAUSE_BYTES);
    // Now over budget: the small one still gets its frames...
    assert!(small.push(text(chunk)));
    assert!(small.push(text(chunk)));
    assert_eq!(small.reason(), None);
    // ...and the large one is cut at its next.
    assert!(!big.push(text(10)));
    assert_eq!(big.reason(), Some((SLOW_CONSUMER, "slow consumer")));
}

#[test]
fn bytes_sent_or_never_sent_leave_the_shared_total() {
    let outbound = limits(10);
    let h = Mailbox::new(
        SessionId::new("h"),
        DeviceId::new("d"),
        outbound.clone(),
        None,
    );
    h.push(text(100));
    h.push(text(200));
    let frames = taken(&h);
    h.sent(1, cost(&frames[0]));
    assert_eq!(outbound.queued(), cost(&frames[1]));
    assert_eq!(h.pending_bytes(), cost(&frames[1]));
    h.push(text(300));
    drop(h);
    assert_eq!(
        outbound.queued(),
        0,
        "a dropped mailbox gives back what waited"
    );
}

#[test]
fn a_session_with_bytes_waiting_and_no_progress_is_closed_after_its_sweeps() {
    let reg = SessionRegistry::new(Arc::default());
    let outbound = limits(10);
    let (stuck, moving, idle) = (
        Mailbox::new(
            SessionId::new("stuck"),
            DeviceId::new("d"),
            outbound.clone(),
            None,
        ),
        Mailbox::new(
            SessionId::new("moving"),
            DeviceId::new("d"),
            outbound.clone(),
            None,
        ),
        Mailbox::new(
            SessionId::new("idle"),
            DeviceId::new("d"),
            outbound.clone(),
            None,
        ),
    );
    for (user, h) in [("a", &stuck), ("b", &moving), ("c", &idle)] {
        reg.register(&UserId::new(user), (*h).clone());
    }
    stuck.push(text(10));
    moving.push(text(10));
    for _ in 0..2 {
        moving.progressed();
        assert_eq!(reg.sweep(&outbound), 0);
    }
    moving.progressed();
    assert_eq!(reg.sweep(&outbound), 1, "the third sweep without progress");
    assert_eq!(stuck.reason(), Some((SLOW_CONSUMER, "slow consumer")));
    assert_eq!(
        moving.reason(),
        None,
        "progress every second keeps a session"
    );
    assert_eq!(idle.reason(), None, "nothing waiting is no stall");
    assert_eq!(reg.sweep(&outbound), 0, "closed once");
}

#[test]
fn a_mailbox_stays_within_144_bytes() {
    // Every session keeps one for life: its size is memory per session.
    // 128 until it learned its device session (issue 27): 144, in
    // jemalloc's 160-byte class.
    assert!(
        std::mem::size_of::<Mailbox>() <= 144,
        "{}",
        std::mem::size_of::<Mailbox>()
    );
}
