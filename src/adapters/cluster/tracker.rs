//! Exactly-once, in-order `message` events on top of an at-most-once
//! broker (docs/cluster.md, section 4).
//!
//! One cursor per (local user, conversation): the highest seq every local
//! session of that user has been given, with everything below it given
//! too. An event at or below the cursor is a duplicate; one past the next
//! waits in `ahead` for a short reorder window, after which the node
//! fetches the gap from the store ([`Tracker::due`], [`Tracker::fill`]).
//!
//! No I/O here: the caller passes the time and a sink that queues a frame
//! for a user's local sessions. Every emission happens inside the call that
//! caused it, so a caller that holds the tracker behind one lock pushes
//! each user's frames in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use hyper_tungstenite::tungstenite::Utf8Bytes;
use tokio::time::Instant;

use crate::domain::{ConversationId, SessionId, UserId};

/// Queues a frame for every local session of a user but the excepted one.
pub type Sink<'a> = dyn FnMut(&UserId, &Utf8Bytes, Option<&SessionId>) + 'a;

/// One event frame and the session it must skip (the sender's, which has
/// the ack instead).
#[derive(Debug, Clone)]
pub struct Item {
    /// The encoded event.
    pub frame: Utf8Bytes,
    /// The session that must not receive it.
    pub except: Option<SessionId>,
}

/// Which sequenced event an [`Item`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `message` with its own seq.
    Message,
    /// `messageUpdated`, with the seq of the message it changes.
    Updated,
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued for the user's sessions (with any held events it released).
    Emitted,
    /// Waiting for an earlier seq.
    Held,
    /// Already given; dropped.
    Duplicate,
    /// Kept until the user's seed (or the conversation's start) is known.
    Buffered,
    /// The first event of a conversation the user had no cursor for: the
    /// caller must look up where the user stands in it and call
    /// [`Tracker::resolve`].
    Unknown,
    /// The user has no session here.
    Ignored,
}

/// A gap to fetch from the store: messages of `conversation` with seqs in
/// `(after, upto]`, for `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// Where.
    pub conversation: ConversationId,
    /// The lowest cursor among `users`.
    pub after: u64,
    /// The highest seq known to exist.
    pub upto: u64,
    /// Whose cursors wait for it.
    pub users: Vec<UserId>,
}

/// Every local user's cursors.
pub struct Tracker {
    users: HashMap<UserId, Local>,
    /// Cursors with a gap open, so that looking for due gaps does not
    /// walk every cursor of every user.
    gaps: HashSet<(UserId, ConversationId)>,
    reorder: Duration,
}

type Pending = (ConversationId, u64, Kind, Item);

enum Local {
    /// Subscribed; the store has not yet said where the user stands.
    Seeding(Vec<Pending>),
    Ready(Ready),
}

#[derive(Default)]
struct Ready {
    cursors: HashMap<ConversationId, Cursor>,
    /// Events of conversations joined after the seed, kept while the
    /// caller looks up the user's place in them.
    unknown: HashMap<ConversationId, Vec<(u64, Kind, Item)>>,
}

#[derive(Debug, Default)]
struct Cursor {
    last: u64,
    ahead: BTreeMap<u64, Held>,
    /// The highest seq known to exist (from an event or the store).
    target: u64,
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct Held {
    message: Option<Item>,
    updates: Vec<Item>,
}

impl Tracker {
    /// No users; gaps wait `reorder` before the store fills them.
    pub fn new(reorder: Duration) -> Self {
        Self {
            users: HashMap::new(),
            gaps: HashSet::new(),
            reorder,
        }
    }

    /// Whether the user has sessions here (seeded or being seeded).
    pub fn is_local(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    /// Every user with sessions here.
    pub fn users(&self) -> Vec<UserId> {
        self.users.keys().cloned().collect()
    }

    /// Starts tracking a user whose first session is attaching: events are
    /// kept until [`Self::seed`].
    pub fn begin(&mut self, user: &UserId) {
        self.users
            .entry(user.clone())
            .or_insert_with(|| Local::Seeding(Vec::new()));
    }

    /// Sets the user's cursors where the store stands (`(conversation,
    /// last seq)`: everything up to it is history, not events), then
    /// replays what arrived meanwhile. Returns the conversations the replay
    /// found no cursor for, to [`Self::resolve`].
    pub fn seed(
        &mut self,
        user: &UserId,
        positions: impl IntoIterator<Item = (ConversationId, u64)>,
        now: Instant,
        sink: &mut Sink<'_>,
    ) -> Vec<ConversationId> {
        let Some(local) = self.users.get_mut(user) else {
            return Vec::new();
        };
        let Local::Seeding(pending) = local else {
            return Vec::new();
        };
        let pending = std::mem::take(pending);
        let cursors = positions
            .into_iter()
            .map(|(c, last)| {
                let cursor = Cursor {
                    last,
                    target: last,
                    ..Cursor::default()
                };
                (c, cursor)
            })
            .collect();
        *local = Local::Ready(Ready {
            cursors,
            unknown: HashMap::new(),
        });
        let mut unknown = Vec::new();
        for (c, seq, kind, item) in pending {
            if self.offer(user, &c, seq, kind, item, now, sink) == Offered::Unknown {
                unknown.push(c);
            }
        }
        unknown
    }

    /// Stops tracking a user whose last local session closed.
    pub fn forget(&mut self, user: &UserId) {
        if self.users.remove(user).is_some() {
            self.gaps.retain(|(u, _)| u != user);
        }
    }

    /// Drops the user's cursor of a conversation they left: should they
    /// come back, their place is looked up again.
    pub fn left(&mut self, user: &UserId, conversation: &ConversationId) {
        if let Some(Local::Ready(ready)) = self.users.get_mut(user) {
            ready.cursors.remove(conversation);
            ready.unknown.remove(conversation);
            self.gaps.remove(&(user.clone(), conversation.clone()));
        }
    }

    /// Takes one sequenced event for one user.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        seq: u64,
        kind: Kind,
        item: Item,
        now: Instant,
        sink: &mut Sink<'_>,
    ) -> Offered {
        let ready = match self.users.get_mut(user) {
            None => return Offered::Ignored,
            Some(Local::Seeding(pending)) => {
                pending.push((conversation.clone(), seq, kind, item));
                return Offered::Buffered;
            }
            Some(Local::Ready(ready)) => ready,
        };
        let Some(cursor) = ready.cursors.get_mut(conversation) else {
            if kind == Kind::Updated {
                // Best effort by contract (docs/cluster.md, section 6).
                sink(user, &item.frame, item.except.as_ref());
                return Offered::Emitted;
            }
            let waiting = ready.unknown.entry(conversation.clone()).or_default();
            waiting.push((seq, kind, item));
            return if waiting.len() == 1 {
                Offered::Unknown
            } else {
                Offered::Buffered
            };
        };
        let offered = cursor.offer(user, seq, kind, item, sink);
        self.settle(user, conversation, now);
        offered
    }

    /// Creates the cursor of a conversation first seen after the seed:
    /// `marker` is the user's read marker there (`None`: not a member), which
    /// for a join or a new direct conversation is exactly where events
    /// start. Capped below the first event seen, which is new by definition.
    pub fn resolve(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        marker: Option<u64>,
        now: Instant,
        sink: &mut Sink<'_>,
    ) {
        let Some(Local::Ready(ready)) = self.users.get_mut(user) else {
            return;
        };
        let Some(waiting) = ready.unknown.remove(conversation) else {
            return;
        };
        let Some(marker) = marker else {
            return;
        };
        let first = waiting
            .iter()
            .filter(|(_, k, _)| *k == Kind::Message)
            .map(|(s, _, _)| *s)
            .min()
            .unwrap_or(1);
        let last = marker.min(first.saturating_sub(1));
        let cursor = ready.cursors.entry(conversation.clone()).or_default();
        cursor.last = last;
        cursor.target = cursor.target.max(last);
        for (seq, kind, item) in waiting {
            self.offer(user, conversation, seq, kind, item, now, sink);
        }
    }

    /// Resync input: the store's newest seq of a conversation the user is
    /// in, and their read marker there. A cursor behind it opens a gap
    /// (filled after the reorder window, by which time a message committed
    /// on this node has been given by the local path); a conversation
    /// without a cursor gets one at the marker.
    pub fn note_latest(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        latest: u64,
        marker: u64,
        now: Instant,
    ) {
        let Some(Local::Ready(ready)) = self.users.get_mut(user) else {
            return;
        };
        if ready.unknown.contains_key(conversation) {
            return;
        }
        let cursor = ready
            .cursors
            .entry(conversation.clone())
            .or_insert_with(|| Cursor {
                last: marker.min(latest),
                target: marker.min(latest),
                ..Cursor::default()
            });
        cursor.target = cursor.target.max(latest);
        self.settle(user, conversation, now);
    }

    /// Resync input: the conversations the user is in now. Cursors of any
    /// other conversation (left while an event was lost) are dropped.
    pub fn retain(&mut self, user: &UserId, member_of: &HashSet<ConversationId>) {
        if let Some(Local::Ready(ready)) = self.users.get_mut(user) {
            let before = ready.cursors.len();
            ready.cursors.retain(|c, _| member_of.contains(c));
            if ready.cursors.len() != before {
                self.gaps
                    .retain(|(u, c)| u != user || member_of.contains(c));
            }
        }
    }

    /// The gaps whose reorder window has passed, one fill per
    /// conversation. Each is pushed back by a second, so a fill that fails
    /// is tried again and one in flight is not started twice.
    pub fn due(&mut self, now: Instant) -> Vec<Fill> {
        let mut fills: HashMap<ConversationId, Fill> = HashMap::new();
        for (user, conversation) in &self.gaps {
            let Some(Local::Ready(ready)) = self.users.get_mut(user) else {
                continue;
            };
            let Some(cursor) = ready.cursors.get_mut(conversation) else {
                continue;
            };
            if cursor.deadline.is_none_or(|d| d > now) {
                continue;
            }
            cursor.deadline = Some(now + Duration::from_secs(1));
            let fill = fills.entry(conversation.clone()).or_insert_with(|| Fill {
                conversation: conversation.clone(),
                after: cursor.last,
                upto: 0,
                users: Vec::new(),
            });
            fill.after = fill.after.min(cursor.last);
            fill.upto = fill.upto.max(cursor.target);
            fill.users.push(user.clone());
        }
        fills.into_values().collect()
    }

    /// When the earliest open gap is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gaps
            .iter()
            .filter_map(|(user, conversation)| match self.users.get(user) {
                Some(Local::Ready(ready)) => ready.cursors.get(conversation)?.deadline,
                _ => None,
            })
            .min()
    }

    /// Gives a fill's messages (`(seq, item)` in seq order, as the store
    /// has them now) to the cursors that waited for them. A seq in the gap
    /// that the store does not have cannot come later either (seqs are
    /// given at commit), so the cursor moves past it.
    pub fn fill(
        &mut self,
        fill: &Fill,
        messages: &[(u64, Item)],
        now: Instant,
        sink: &mut Sink<'_>,
    ) {
        for user in &fill.users {
            let Some(Local::Ready(ready)) = self.users.get_mut(user) else {
                continue;
            };
            let Some(cursor) = ready.cursors.get_mut(&fill.conversation) else {
                continue;
            };
            for (seq, item) in messages {
                cursor.offer(user, *seq, Kind::Message, item.clone(), sink);
            }
            cursor.skip_to(user, fill.upto, sink);
            self.settle(user, &fill.conversation, now);
        }
    }

    /// Keeps the gap set and the cursor's deadline in step with whether it
    /// is behind.
    fn settle(&mut self, user: &UserId, conversation: &ConversationId, now: Instant) {
        let Some(Local::Ready(ready)) = self.users.get_mut(user) else {
            return;
        };
        let Some(cursor) = ready.cursors.get_mut(conversation) else {
            return;
        };
        if cursor.behind() {
            if cursor.deadline.is_none() {
                cursor.deadline = Some(now + self.reorder);
                self.gaps.insert((user.clone(), conversation.clone()));
            }
        } else if cursor.deadline.take().is_some() {
            self.gaps.remove(&(user.clone(), conversation.clone()));
        }
    }
}

impl Cursor {
    fn behind(&self) -> bool {
        !self.ahead.is_empty() || self.target > self.last
    }

    fn offer(
        &mut self,
        user: &UserId,
        seq: u64,
        kind: Kind,
        item: Item,
        sink: &mut Sink<'_>,
    ) -> Offered {
        match kind {
            Kind::Updated if seq <= self.last => {
                sink(user, &item.frame, item.except.as_ref());
                Offered::Emitted
            }
            Kind::Updated => {
                self.target = self.target.max(seq);
                self.ahead.entry(seq).or_default().updates.push(item);
                Offered::Held
            }
            Kind::Message if seq <= self.last => Offered::Duplicate,
            Kind::Message if seq == self.last + 1 => {
                let held = self.ahead.remove(&seq).unwrap_or_default();
                sink(user, &item.frame, item.except.as_ref());
                for update in &held.updates {
                    sink(user, &update.frame, update.except.as_ref());
                }
                self.last = seq;
                self.target = self.target.max(seq);
                self.release(user, sink);
                Offered::Emitted
            }
            Kind::Message => {
                let held = self.ahead.entry(seq).or_default();
                if held.message.is_some() {
                    return Offered::Duplicate;
                }
                held.message = Some(item);
                self.target = self.target.max(seq);
                Offered::Held
            }
        }
    }

    /// Emits every held message that is next in line.
    fn release(&mut self, user: &UserId, sink: &mut Sink<'_>) {
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.last + 1 || entry.get().message.is_none() {
                break;
            }
            let (seq, held) = entry.remove_entry();
            for item in held.message.iter().chain(&held.updates) {
                sink(user, &item.frame, item.except.as_ref());
            }
            self.last = seq;
        }
    }

    /// Moves past seqs up to `upto` that the store did not return.
    fn skip_to(&mut self, user: &UserId, upto: u64, sink: &mut Sink<'_>) {
        loop {
            // Updates of messages the store did not have go nowhere.
            while let Some(entry) = self.ahead.first_entry() {
                if *entry.key() > self.last {
                    break;
                }
                entry.remove();
            }
            if self.last >= upto {
                break;
            }
            match self.ahead.first_key_value() {
                Some((&next, held)) if next <= upto && held.message.is_some() => {
                    self.last = next - 1;
                    self.release(user, sink);
                }
                Some((&next, _)) if next <= upto => {
                    self.ahead.remove(&next);
                }
                _ => {
                    self.last = upto;
                    self.release(user, sink);
                }
            }
        }
        self.target = self.target.max(self.last);
    }
}

#[cfg(test)]
mod tests;
