//! The measured phase of the message scenarios: senders at a rate or
//! with a window in flight, the drain, and the figures of the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::usage::{Mark, mark};
use super::{Common, MsgParams};
use crate::net::{Ctx, ReaderOut, Session};
use crate::precise;
use crate::report::Report;
use crate::stats::{Kind, Stats, round};

/// How one client sends: frame layout and its own index.
pub(super) struct Sender {
    pub(super) s: u32,
    pub(super) head: String,
    pub(super) target: String,
    pub(super) body: String,
    pub(super) nonce: String,
}

impl Sender {
    fn frame(&self, n: u64, t: u64) -> Message {
        Message::text(format!(
            "{}m{n}.{t}\",\"content\":{{{},\"body\":{},\"clientMsgId\":\"{}{}.{n}.{t}\"}}}}",
            self.head, self.target, self.body, self.nonce, self.s
        ))
    }
}

pub(super) fn body_json(size: usize) -> String {
    let mut body = String::from("bench ");
    while body.len() < size {
        body.push((b'a' + (body.len() % 26) as u8) as char);
    }
    body.truncate(size.max(1));
    serde_json::to_string(&body).expect("string")
}

/// Sends until `end`: open loop at `rate` msgs/s (scheduled times are the
/// timestamps, so a stall counts as latency), or closed loop with
/// `in_flight` outstanding. Returns how many were sent.
async fn send_loop(
    session: &mut Session,
    sender: &Sender,
    stats: &Stats,
    start: Instant,
    end: Instant,
    rate: f64,
    in_flight: usize,
) -> u64 {
    let mut n = 0u64;
    if rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut next = start + interval.mul_f64(rand::random::<f64>());
        while next < end {
            precise::sleep_until(next).await;
            let now = Instant::now();
            stats.record_since(
                session.idx,
                Kind::SendLag,
                stats.us_at(next),
                stats.us_at(now),
            );
            let mut batch = 0;
            while next <= now && next < end {
                let t = stats.us_at(next);
                if session.sink.feed(sender.frame(n, t)).await.is_err() {
                    stats.error("send_failed");
                    return n;
                }
                n += 1;
                batch += 1;
                next += interval;
            }
            stats.sent.fetch_add(batch, Ordering::Relaxed);
            if session.sink.flush().await.is_err() {
                stats.error("send_failed");
                return n;
            }
        }
    } else {
        session.permits.add_permits(in_flight.max(1));
        loop {
            let permit = tokio::select! {
                p = session.permits.acquire() => p,
                _ = tokio::time::sleep_until(end.into()) => break,
            };
            let Ok(permit) = permit else { break };
            permit.forget();
            let mut k = 1;
            while let Ok(p) = session.permits.try_acquire() {
                p.forget();
                k += 1;
            }
            let t = stats.now_us();
            for _ in 0..k {
                if session.sink.feed(sender.frame(n, t)).await.is_err() {
                    stats.error("send_failed");
                    return n;
                }
                n += 1;
            }
            stats.sent.fetch_add(k, Ordering::Relaxed);
            if session.sink.flush().await.is_err() {
                stats.error("send_failed");
                return n;
            }
            if Instant::now() >= end {
                break;
            }
        }
    }
    n
}

/// Runs the senders, drains, stops the readers; returns the sessions (for
/// closing), their reader results by client index, and the marks.
pub(super) async fn run_phase(
    c: &Common,
    ctx: &Arc<Ctx>,
    mut sessions: Vec<Session>,
    senders: Vec<(usize, Sender)>,
    p: &MsgParams,
    fanout: u64,
    report: &mut Report,
) -> (Vec<Session>, BTreeMap<usize, ReaderOut>, Mark, Mark) {
    let stats = ctx.stats.clone();
    let nsenders = senders.len().max(1);
    let per_sender_rate = p.rate / nsenders as f64;
    eprintln!(
        "confab-bench: sending for {} s from {} senders ({})",
        p.secs,
        senders.len(),
        if p.rate > 0.0 {
            format!("open loop, {} msgs/s in all", p.rate)
        } else {
            format!("closed loop, {} in flight each", p.in_flight)
        }
    );
    let start_mark = mark(&c.server_pids);
    let start = start_mark.at;
    let end = start + Duration::from_secs_f64(p.secs);
    let mut by_idx: BTreeMap<usize, Session> = sessions.drain(..).map(|s| (s.idx, s)).collect();
    let mut tasks = Vec::new();
    for (idx, sender) in senders {
        let Some(mut session) = by_idx.remove(&idx) else {
            continue;
        };
        let stats = stats.clone();
        let in_flight = p.in_flight;
        tasks.push(tokio::spawn(async move {
            send_loop(
                &mut session,
                &sender,
                &stats,
                start,
                end,
                per_sender_rate,
                in_flight,
            )
            .await;
            session
        }));
    }
    let mut sessions: Vec<Session> = by_idx.into_values().collect();
    for t in tasks {
        if let Ok(s) = t.await {
            sessions.push(s);
        }
    }
    let send_end = Instant::now();
    // Drain: until every request is answered and every acked message
    // delivered, or nothing moved for drain_secs.
    let idle = Duration::from_secs_f64(p.drain_secs.max(0.0));
    let mut last = (u64::MAX, u64::MAX);
    let mut since = Instant::now();
    loop {
        let sent = stats.sent.load(Ordering::Relaxed);
        let acked = stats.acked.load(Ordering::Relaxed);
        let replied = acked + stats.errored.load(Ordering::Relaxed);
        let delivered = stats.delivered.load(Ordering::Relaxed);
        if replied >= sent && delivered >= acked * fanout {
            break;
        }
        if (replied, delivered) != last {
            last = (replied, delivered);
            since = Instant::now();
        } else if since.elapsed() >= idle {
            break;
        }
        if send_end.elapsed() > Duration::from_secs(300) {
            report.warn("drain stopped after 300 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end_mark = mark(&c.server_pids);
    report.top(
        "send_secs",
        json!(round(send_end.duration_since(start).as_secs_f64(), 3)),
    );
    report.top(
        "drain_secs",
        json!(round(end_mark.at.duration_since(send_end).as_secs_f64(), 3)),
    );
    ctx.stop.cancel();
    let mut outs = BTreeMap::new();
    let mut kept = Vec::new();
    for mut s in sessions {
        let out = (&mut s.reader).await.unwrap_or_default();
        outs.insert(s.idx, out);
        kept.push(s);
    }
    (kept, outs, start_mark, end_mark)
}

/// Acked messages that did not reach a session that should have had them.
pub(super) struct Losses {
    /// Its name in the report.
    pub(super) key: &'static str,
    pub(super) lost: u64,
    /// Deliveries of messages whose sender got no ack.
    pub(super) without_ack: u64,
}

/// The figures common to `dm` and `room` after a run.
pub(super) fn message_figures(
    ctx: &Ctx,
    p: &MsgParams,
    start: &Mark,
    losses: Losses,
    senders: &[usize],
    outs: &BTreeMap<usize, ReaderOut>,
    report: &mut Report,
) -> (u64, u64) {
    let Losses {
        key: lost_key,
        lost,
        without_ack,
    } = losses;
    let stats = &ctx.stats;
    let sent = stats.sent.load(Ordering::Relaxed);
    let acked = stats.acked.load(Ordering::Relaxed);
    let errored = stats.errored.load(Ordering::Relaxed);
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let t0 = stats.us_at(start.at);
    let span = |last_us: u64| {
        let secs = last_us.saturating_sub(t0) as f64 / 1e6;
        secs.max(p.secs).max(1e-9)
    };
    report.top("sent", json!(sent));
    report.top("acked", json!(acked));
    report.top("delivered", json!(delivered));
    report.top(
        "acked_per_sec",
        json!(round(
            acked as f64 / span(stats.last_ack_us.load(Ordering::Relaxed)),
            1
        )),
    );
    report.top(
        "delivered_per_sec",
        json!(round(
            delivered as f64 / span(stats.last_delivery_us.load(Ordering::Relaxed)),
            1
        )),
    );
    report.top("ack_latency_us", stats.latency(Kind::Ack));
    report.top("delivery_latency_us", stats.latency(Kind::Delivery));
    if p.rate > 0.0 {
        report.top("send_lag_latency_us", stats.latency(Kind::SendLag));
    }
    report.top("slowest_windows", stats.slow_windows(t0, 5));
    let errors = stats.errors();
    if errors.contains_key("rate_limited") {
        report.warn(
            "the server rate-limited requests: start it with a high per-connection rate \
             (confab: CONFAB_RATE_PER_SEC / CONFAB_RATE_BURST)"
                .into(),
        );
    }
    report.top("errors", json!(errors));
    report.top(lost_key, json!(lost));
    report.top("delivered_without_ack", json!(without_ack));
    report.top("unanswered", json!(sent.saturating_sub(acked + errored)));
    report.top(
        "duplicates",
        json!(outs.values().map(|o| o.duplicates).sum::<u64>()),
    );
    report.top(
        "out_of_order",
        json!(outs.values().map(|o| o.out_of_order).sum::<u64>()),
    );
    // Fairness: how the acks were spread over the senders.
    let mut per_sender: Vec<u64> = senders
        .iter()
        .map(|s| outs.get(s).map_or(0, |o| o.acked.len()))
        .collect();
    per_sender.sort_unstable();
    report.top(
        "acked_per_sender",
        match per_sender.len() {
            0 => Value::Null,
            n => json!({
                "min": per_sender[0],
                "p10": per_sender[n / 10],
                "p50": per_sender[n / 2],
                "max": per_sender[n - 1],
            }),
        },
    );
    let ended = outs.values().filter(|o| o.ended.is_some()).count();
    report.top("sessions_closed_early", json!(ended));
    if lost > 0 {
        report.warn(format!("{lost} acknowledged deliveries never arrived"));
    }
    (acked, delivered)
}
