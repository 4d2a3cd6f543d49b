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
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(200);

    fn user(u: &str) -> UserId {
        UserId::new(u)
    }

    fn conv(c: &str) -> ConversationId {
        ConversationId::new(c)
    }

    fn item(text: &str, except: Option<&str>) -> Item {
        Item {
            frame: Utf8Bytes::from(text.to_owned()),
            except: except.map(SessionId::new),
        }
    }

    /// A tracker with `a` seeded at `c`:`last`, and a log of emissions.
    struct Rig {
        t: Tracker,
        out: Vec<(String, String, Option<String>)>,
        now: Instant,
    }

    impl Rig {
        fn new(last: u64) -> Self {
            let mut rig = Rig {
                t: Tracker::new(WINDOW),
                out: Vec::new(),
                now: Instant::now(),
            };
            rig.t.begin(&user("a"));
            let now = rig.now;
            let out = &mut rig.out;
            rig.t
                .seed(&user("a"), [(conv("c"), last)], now, &mut sink(out));
            rig
        }

        fn offer(&mut self, seq: u64, kind: Kind, text: &str) -> Offered {
            let now = self.now;
            let out = &mut self.out;
            self.t.offer(
                &user("a"),
                &conv("c"),
                seq,
                kind,
                item(text, None),
                now,
                &mut sink(out),
            )
        }

        fn message(&mut self, seq: u64) -> Offered {
            self.offer(seq, Kind::Message, &format!("m{seq}"))
        }

        fn texts(&self) -> Vec<&str> {
            self.out.iter().map(|(_, f, _)| f.as_str()).collect()
        }
    }

    fn sink(
        out: &mut Vec<(String, String, Option<String>)>,
    ) -> impl FnMut(&UserId, &Utf8Bytes, Option<&SessionId>) + '_ {
        |u: &UserId, f: &Utf8Bytes, e: Option<&SessionId>| {
            out.push((u.to_string(), f.to_string(), e.map(|s| s.to_string())))
        }
    }

    #[test]
    fn in_order_events_pass_and_repeats_are_dropped() {
        let mut r = Rig::new(4);
        assert_eq!(r.message(4), Offered::Duplicate, "history at the seed");
        assert_eq!(r.message(5), Offered::Emitted);
        assert_eq!(r.message(6), Offered::Emitted);
        assert_eq!(r.message(5), Offered::Duplicate);
        assert_eq!(r.texts(), ["m5", "m6"]);
        assert!(r.t.due(r.now + WINDOW).is_empty());
    }

    #[test]
    fn an_early_event_waits_for_the_one_before_it_then_both_go_in_order() {
        let mut r = Rig::new(0);
        assert_eq!(r.message(2), Offered::Held);
        assert_eq!(r.message(3), Offered::Held);
        assert_eq!(r.message(3), Offered::Duplicate, "already held");
        assert!(r.texts().is_empty());
        assert_eq!(r.t.next_deadline(), Some(r.now + WINDOW));
        assert_eq!(r.message(1), Offered::Emitted);
        assert_eq!(r.texts(), ["m1", "m2", "m3"]);
        assert_eq!(r.t.next_deadline(), None, "the gap closed by itself");
        assert!(r.t.due(r.now + WINDOW * 10).is_empty());
    }

    #[test]
    fn a_gap_still_open_after_the_window_is_filled_from_the_store() {
        let mut r = Rig::new(0);
        r.message(3);
        assert!(r.t.due(r.now + WINDOW / 2).is_empty(), "within the window");
        let fills = r.t.due(r.now + WINDOW);
        assert_eq!(
            fills,
            [Fill {
                conversation: conv("c"),
                after: 0,
                upto: 3,
                users: vec![user("a")],
            }]
        );
        assert!(r.t.due(r.now + WINDOW).is_empty(), "in flight: not twice");
        let fetched = [
            (1, item("f1", None)),
            (2, item("f2", None)),
            (3, item("f3", None)),
        ];
        let now = r.now;
        let out = &mut r.out;
        r.t.fill(&fills[0], &fetched, now, &mut sink(out));
        assert_eq!(
            r.texts(),
            ["f1", "f2", "m3"],
            "the held one is not repeated"
        );
        assert_eq!(r.t.next_deadline(), None);
        assert_eq!(r.message(3), Offered::Duplicate, "a late publish");
        assert_eq!(r.message(2), Offered::Duplicate);
    }

    #[test]
    fn a_failed_fill_is_due_again_a_second_later() {
        let mut r = Rig::new(0);
        r.message(2);
        assert_eq!(r.t.due(r.now + WINDOW).len(), 1);
        assert!(r.t.due(r.now + WINDOW * 2).is_empty());
        assert_eq!(r.t.due(r.now + WINDOW + Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn a_seq_the_store_does_not_have_is_skipped_after_a_fill() {
        let mut r = Rig::new(0);
        r.message(3);
        let fills = r.t.due(r.now + WINDOW);
        let now = r.now;
        let out = &mut r.out;
        r.t.fill(&fills[0], &[(1, item("f1", None))], now, &mut sink(out));
        assert_eq!(r.texts(), ["f1", "m3"]);
        assert_eq!(r.message(4), Offered::Emitted);
    }

    #[test]
    fn an_update_waits_behind_its_message_and_follows_it() {
        let mut r = Rig::new(0);
        assert_eq!(r.offer(1, Kind::Updated, "u1"), Offered::Held);
        assert!(r.texts().is_empty());
        r.message(1);
        assert_eq!(r.texts(), ["m1", "u1"]);
        assert_eq!(r.offer(1, Kind::Updated, "u1b"), Offered::Emitted);
        r.message(3);
        r.offer(3, Kind::Updated, "u3");
        r.message(2);
        assert_eq!(r.texts(), ["m1", "u1", "u1b", "m2", "m3", "u3"]);
    }

    #[test]
    fn the_excepted_session_travels_with_its_event_even_when_held() {
        let mut r = Rig::new(0);
        let now = r.now;
        let out = &mut r.out;
        r.t.offer(
            &user("a"),
            &conv("c"),
            2,
            Kind::Message,
            item("m2", Some("s1")),
            now,
            &mut sink(out),
        );
        r.message(1);
        assert_eq!(r.out[1].2.as_deref(), Some("s1"));
        assert_eq!(r.out[0].2, None);
    }

    #[test]
    fn events_before_the_seed_are_kept_and_filtered_against_it() {
        let mut t = Tracker::new(WINDOW);
        let mut out = Vec::new();
        let now = Instant::now();
        t.begin(&user("a"));
        for seq in [5, 6, 7] {
            let offered = t.offer(
                &user("a"),
                &conv("c"),
                seq,
                Kind::Message,
                item(&format!("m{seq}"), None),
                now,
                &mut sink(&mut out),
            );
            assert_eq!(offered, Offered::Buffered);
        }
        t.offer(
            &user("a"),
            &conv("new"),
            1,
            Kind::Message,
            item("n1", None),
            now,
            &mut sink(&mut out),
        );
        let unknown = t.seed(&user("a"), [(conv("c"), 6)], now, &mut sink(&mut out));
        let texts: Vec<_> = out.iter().map(|(_, f, _)| f.as_str()).collect();
        assert_eq!(texts, ["m7"]);
        assert_eq!(unknown, [conv("new")], "to be resolved");
    }

    #[test]
    fn a_conversation_joined_later_starts_at_the_marker_capped_below_the_first_event() {
        let mut r = Rig::new(0);
        let (now, new) = (r.now, conv("room"));
        let offer = |r: &mut Rig, seq: u64| {
            let out = &mut r.out;
            r.t.offer(
                &user("a"),
                &new,
                seq,
                Kind::Message,
                item(&format!("r{seq}"), None),
                now,
                &mut sink(out),
            )
        };
        assert_eq!(offer(&mut r, 12), Offered::Unknown);
        assert_eq!(offer(&mut r, 13), Offered::Buffered);
        // Joined at 10: 11 is still to come (reordered), then the gap fills.
        let out = &mut r.out;
        r.t.resolve(&user("a"), &new, Some(10), now, &mut sink(out));
        assert!(r.texts().is_empty());
        assert_eq!(offer(&mut r, 11), Offered::Emitted);
        assert_eq!(r.texts(), ["r11", "r12", "r13"]);
        // A marker past the first event (read elsewhere) does not hide it.
        let other = conv("dm");
        let out = &mut r.out;
        r.t.offer(
            &user("a"),
            &other,
            5,
            Kind::Message,
            item("d5", None),
            now,
            &mut sink(out),
        );
        r.t.resolve(&user("a"), &other, Some(9), now, &mut sink(out));
        assert_eq!(r.texts().last(), Some(&"d5"));
    }

    #[test]
    fn a_non_member_gets_nothing_of_a_conversation() {
        let mut r = Rig::new(0);
        let now = r.now;
        let out = &mut r.out;
        let offered = r.t.offer(
            &user("a"),
            &conv("x"),
            1,
            Kind::Message,
            item("x1", None),
            now,
            &mut sink(out),
        );
        assert_eq!(offered, Offered::Unknown);
        r.t.resolve(&user("a"), &conv("x"), None, now, &mut sink(out));
        assert!(r.texts().is_empty());
    }

    #[test]
    fn the_store_being_ahead_opens_a_gap_that_is_filled_after_the_window() {
        let mut r = Rig::new(3);
        r.t.note_latest(&user("a"), &conv("c"), 5, 0, r.now);
        assert!(r.t.due(r.now).is_empty());
        // The local path gives 4 meanwhile.
        r.message(4);
        let fills = r.t.due(r.now + WINDOW);
        assert_eq!((fills[0].after, fills[0].upto), (4, 5));
        // A conversation with no cursor starts at the read marker.
        r.t.note_latest(&user("a"), &conv("new"), 9, 7, r.now);
        let fills = r.t.due(r.now + WINDOW * 2);
        let new = fills
            .iter()
            .find(|f| f.conversation == conv("new"))
            .unwrap();
        assert_eq!((new.after, new.upto), (7, 9));
    }

    #[test]
    fn one_fill_serves_every_user_waiting_on_a_conversation() {
        let mut t = Tracker::new(WINDOW);
        let now = Instant::now();
        let mut out = Vec::new();
        for (u, last) in [("a", 1), ("b", 2)] {
            t.begin(&user(u));
            t.seed(&user(u), [(conv("c"), last)], now, &mut sink(&mut out));
            t.offer(
                &user(u),
                &conv("c"),
                4,
                Kind::Message,
                item("m4", None),
                now,
                &mut sink(&mut out),
            );
        }
        let fills = t.due(now + WINDOW);
        assert_eq!(fills.len(), 1);
        assert_eq!((fills[0].after, fills[0].upto), (1, 4));
        let fetched: Vec<_> = (2..=4).map(|s| (s, item(&format!("f{s}"), None))).collect();
        t.fill(&fills[0], &fetched, now, &mut sink(&mut out));
        let got = |u: &str| -> Vec<String> {
            out.iter()
                .filter(|(x, _, _)| x == u)
                .map(|(_, f, _)| f.clone())
                .collect()
        };
        assert_eq!(got("a"), ["f2", "f3", "m4"]);
        assert_eq!(got("b"), ["f3", "m4"]);
    }

    #[test]
    fn leaving_and_forgetting_drop_cursors_and_gaps() {
        let mut r = Rig::new(0);
        r.message(2);
        r.t.left(&user("a"), &conv("c"));
        assert_eq!(r.t.next_deadline(), None);
        assert_eq!(r.message(5), Offered::Unknown, "looked up again if back");
        r.t.forget(&user("a"));
        assert_eq!(r.message(6), Offered::Ignored);
        assert!(!r.t.is_local(&user("a")));
    }

    #[test]
    fn resync_drops_cursors_of_conversations_left_meanwhile() {
        let mut r = Rig::new(0);
        r.message(3);
        r.t.retain(&user("a"), &HashSet::new());
        assert_eq!(r.t.next_deadline(), None);
    }
}
