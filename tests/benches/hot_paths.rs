//! The pure hot paths of every message, measured in isolation:
//! `cargo bench --bench hot_paths`.
//!
//! Decoding a request frame, choosing the audience of an event, and
//! encoding the event once for all its recipients happen for every message
//! a server moves; the end-to-end figures are in docs/performance.md.

use std::hint::black_box;

use confab::adapters::wire;
use confab::domain::routing;
use confab::domain::{
    ClientMsgId, ConversationId, Event, Message, MessageId, SessionId, Timestamp, UserId, Username,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SEND: &str = r#"{"id":"r-1042","type":"sendMessage","content":{"conversationId":"0193b6c2-7a4e-7c1d-9f0a-3e5b2d8c4f61","body":"Are we still on for lunch tomorrow at noon?","clientMsgId":"c-8f14e45f"}}"#;
const SEND_PRIVATE: &str = r#"{"id":"r-1043","type":"sendPrivateMessage","content":{"to":"0193b6c2-7a4e-7c1d-9f0a-3e5b2d8c4f62","body":"Are we still on for lunch tomorrow at noon?","clientMsgId":"c-8f14e45g"}}"#;
const MALFORMED: &str = r#"{"id":"r-1044","type":"sendMessage","content":{"conversationId":42}}"#;

fn message() -> Message {
    Message {
        id: MessageId::new("0193b6c2-7a4e-7c1d-9f0a-3e5b2d8c4f70"),
        conversation_id: ConversationId::new("0193b6c2-7a4e-7c1d-9f0a-3e5b2d8c4f61"),
        seq: 1042,
        sender_id: UserId::new("0193b6c2-7a4e-7c1d-9f0a-3e5b2d8c4f62"),
        sender: Username::parse("alice").expect("a valid name"),
        body: "Are we still on for lunch tomorrow at noon?".into(),
        client_msg_id: Some(ClientMsgId::parse("c-8f14e45f").expect("a valid id")),
        created_at: Timestamp::from_millis(1_800_000_000_000),
        edited_at: None,
        deleted: false,
        attachments: Vec::new(),
    }
}

fn members(n: usize) -> Vec<UserId> {
    (0..n)
        .map(|i| UserId::new(format!("0193b6c2-7a4e-7c1d-9f0a-{i:012}")))
        .collect()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame decode");
    for (name, frame) in [
        ("sendMessage", SEND),
        ("sendPrivateMessage", SEND_PRIVATE),
        ("malformed", MALFORMED),
    ] {
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(wire::parse_frame(black_box(frame)));
            });
        });
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing");
    let actor = SessionId::new("s-1");
    for n in [2, 200, 2000] {
        let all = members(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("members but actor", n), &all, |b, all| {
            b.iter(|| routing::to_members_but_actor_session(black_box(all.clone()), &actor));
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("event encode");
    let event = Event::Message(message());
    g.bench_function("message event", |b| {
        b.iter(|| wire::encode_event(black_box(&event)));
    });
    g.finish();
}

criterion_group!(benches, decode, route, encode);
criterion_main!(benches);
