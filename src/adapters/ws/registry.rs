//! Sessions of this process, by user, and delivery of events to them.
//!
//! Each session has a bounded outbound queue. Delivery never waits: an event
//! that does not fit closes that session with 4008 (slow consumer), so one
//! stalled client cannot slow anybody else. The client catches up from the
//! store when it reconnects.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use hyper_tungstenite::tungstenite::Message as Frame;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::super::metrics::Metrics;
use super::super::wire;
use crate::domain::event::Event;
use crate::domain::ports::Transport;
use crate::domain::routing::Delivery;
use crate::domain::{SessionId, UserId};

/// Close code: server going away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Close code: frame too large.
pub const TOO_LARGE: u16 = 1009;
/// Close code: the session's token expired.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Close code: the session could not keep up with its events.
pub const SLOW_CONSUMER: u16 = 4008;
/// Close code: normal closure.
pub const NORMAL: u16 = 1000;
/// Not a wire code: drop the connection without a close frame (dead peer).
pub const DROP: u16 = 0;

/// Asks a session to close, once, with a code; both of its tasks watch it.
#[derive(Clone, Debug, Default)]
pub struct Closer {
    reason: Arc<OnceLock<(u16, &'static str)>>,
    token: CancellationToken,
}

impl Closer {
    /// Requests the close; the first request wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.reason.set((code, reason)).is_ok() {
            self.token.cancel();
        }
    }

    /// The code and reason of the close, once requested.
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.get().copied()
    }

    /// Resolves when a close was requested.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }
}

/// One session's mailbox, as the registry holds it.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The session.
    pub id: SessionId,
    /// Its bounded outbound queue.
    pub queue: mpsc::Sender<Frame>,
    /// Its close switch.
    pub closer: Closer,
}

impl SessionHandle {
    /// Queues a frame without waiting; a full queue closes the session with 4008.
    pub fn push(&self, frame: Frame) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.closer.close(SLOW_CONSUMER, "slow consumer");
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// Every session on this process, by user.
pub struct SessionRegistry {
    sessions: RwLock<HashMap<UserId, Vec<SessionHandle>>>,
    metrics: Arc<Metrics>,
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sessions: RwLock::default(),
            metrics,
        }
    }

    /// Adds a session; events for its user reach it from now on.
    pub fn register(&self, user: &UserId, handle: SessionHandle) {
        let mut map = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(user.clone()).or_default();
        if list.is_empty() {
            self.metrics.connected_users.inc();
        }
        list.push(handle);
        self.metrics.sessions.inc();
    }

    /// Removes a session.
    pub fn unregister(&self, user: &UserId, session: &SessionId) {
        let mut map = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get_mut(user) else {
            return;
        };
        let before = list.len();
        list.retain(|h| &h.id != session);
        if list.len() < before {
            self.metrics.sessions.dec();
        }
        if list.is_empty() {
            map.remove(user);
            self.metrics.connected_users.dec();
        }
    }
}

#[async_trait]
impl Transport for SessionRegistry {
    async fn deliver(&self, delivery: Delivery, event: Event) {
        // Serialized once; every recipient shares the same bytes.
        let frame = Frame::Text(wire::encode_event(&event));
        let map = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let mut queued = 0;
        for user in &delivery.users {
            for handle in map.get(user).into_iter().flatten() {
                if delivery.except.as_ref() != Some(&handle.id) && handle.push(frame.clone()) {
                    queued += 1;
                }
            }
        }
        self.metrics.events_queued.inc_by(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Presence, Status, User, Username};

    fn handle(id: &str, capacity: usize) -> (SessionHandle, mpsc::Receiver<Frame>) {
        let (queue, rx) = mpsc::channel(capacity);
        let h = SessionHandle {
            id: SessionId::new(id),
            queue,
            closer: Closer::default(),
        };
        (h, rx)
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
        let (a1, mut ra1) = handle("a1", 4);
        let (a2, mut ra2) = handle("a2", 4);
        let (b1, mut rb1) = handle("b1", 4);
        reg.register(&UserId::new("a"), a1);
        reg.register(&UserId::new("a"), a2);
        reg.register(&UserId::new("b"), b1);
        reg.deliver(delivery(&["a", "b", "nobody"], Some("a1")), event())
            .await;
        assert!(ra1.try_recv().is_err());
        let (Frame::Text(x), Frame::Text(y)) = (ra2.try_recv().unwrap(), rb1.try_recv().unwrap())
        else {
            panic!("text frames expected");
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
        let (slow, _keep) = handle("slow", 1);
        let (fast, mut rfast) = handle("fast", 8);
        let slow_closer = slow.closer.clone();
        reg.register(&UserId::new("s"), slow);
        reg.register(&UserId::new("f"), fast);
        for _ in 0..3 {
            reg.deliver(delivery(&["s", "f"], None), event()).await;
        }
        assert_eq!(slow_closer.reason(), Some((SLOW_CONSUMER, "slow consumer")));
        for _ in 0..3 {
            assert!(rfast.try_recv().is_ok());
        }
    }

    #[tokio::test]
    async fn an_unregistered_session_gets_nothing() {
        let reg = SessionRegistry::new(Arc::default());
        let (a1, mut ra1) = handle("a1", 4);
        reg.register(&UserId::new("a"), a1);
        reg.unregister(&UserId::new("a"), &SessionId::new("a1"));
        reg.deliver(delivery(&["a"], None), event()).await;
        assert!(ra1.try_recv().is_err());
    }

    #[test]
    fn the_first_close_request_wins() {
        let c = Closer::default();
        c.close(SLOW_CONSUMER, "slow consumer");
        c.close(GOING_AWAY, "server going away");
        assert_eq!(c.reason(), Some((SLOW_CONSUMER, "slow consumer")));
    }
}
