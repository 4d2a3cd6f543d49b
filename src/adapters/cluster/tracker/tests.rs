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
