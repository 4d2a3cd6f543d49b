//! The message scenarios: `dm` between pairs, `room` to every member.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use tokio::sync::Semaphore;

use super::phase::{Losses, Sender, body_json, message_figures, run_phase};
use super::usage::usage;
use super::{Common, MsgParams, accounts, close_all, connect_all, new_ctx, settle};
use crate::net::{ReaderOut, Session};
use crate::report::Report;
use crate::stats::round;

/// `dm`: clients in pairs, 2i and 2i+1 messaging each other.
pub async fn dm(c: Common, clients: usize, p: MsgParams) -> Result<Report> {
    if clients < 2 || !clients.is_multiple_of(2) {
        bail!("--clients must be an even number of at least 2");
    }
    let mut report = Report::new("dm", c.params.clone());
    let accounts = accounts(&c, clients, &mut report).await?;
    let ctx = new_ctx();
    let sessions = connect_all(&c, &accounts, &ctx, &mut report).await;
    let up: Vec<bool> = sessions.iter().map(Option::is_some).collect();
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let body = body_json(p.body_size);
    let mut senders = Vec::new();
    for i in 0..clients {
        let peer = i ^ 1;
        if up[i] && up[peer] {
            senders.push((
                i,
                Sender {
                    s: i as u32,
                    head: r#"{"type":"sendPrivateMessage","id":""#.to_owned(),
                    target: format!("\"to\":{}", serde_json::to_string(&accounts[peer].id)?),
                    body: body.clone(),
                    nonce: ctx.nonce.clone(),
                },
            ));
        }
    }
    if senders.is_empty() {
        bail!("no connected pair to send with");
    }
    report
        .setup
        .insert("pairs".into(), json!(senders.len() / 2));
    if c.several_nodes() {
        let across = senders
            .iter()
            .filter(|(i, _)| i % 2 == 0 && c.node_of(*i) != c.node_of(i + 1))
            .count();
        report
            .setup
            .insert("pairs_across_nodes".into(), json!(across));
    }
    settle(
        &ctx.stats,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await;
    let sender_idx: Vec<usize> = senders.iter().map(|(i, _)| *i).collect();
    let (sessions, outs, start, end) =
        run_phase(&c, &ctx, sessions, senders, &p, 1, &mut report).await;
    // Every message that client s had acked must have reached s ^ 1.
    let mut lost = 0;
    let mut without_ack = 0;
    let empty = ReaderOut::default();
    for (&s, out) in &outs {
        let peer = outs.get(&(s ^ 1)).unwrap_or(&empty);
        let got = peer.delivered.get(&(s as u32));
        lost += out.acked.count_missing_from(got);
        if let Some(got) = got {
            without_ack += got.count_missing_from(Some(&out.acked));
        }
    }
    let (acked, _) = message_figures(
        &ctx,
        &p,
        &start,
        Losses {
            key: "never_delivered",
            lost,
            without_ack,
        },
        &sender_idx,
        &outs,
        &mut report,
    );
    usage(&c, &start, &end, &[("msg", acked)], &mut report);
    close_all(sessions).await;
    Ok(report)
}

/// `room`: one public room; `senders` of its members send at `rate`.
pub async fn room(c: Common, members: usize, senders: usize, p: MsgParams) -> Result<Report> {
    if members < 2 || senders < 1 || senders > members {
        bail!("need --members >= 2 and 1 <= --senders <= --members");
    }
    let mut report = Report::new("room", c.params.clone());
    let accounts = accounts(&c, members, &mut report).await?;
    let ctx = new_ctx();
    let sessions = connect_all(&c, &accounts, &ctx, &mut report).await;
    let mut sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    if sessions.len() < 2 {
        bail!("fewer than 2 sessions connected");
    }
    eprintln!(
        "confab-bench: creating the room, {} members joining",
        sessions.len()
    );
    let t = Instant::now();
    let name = format!("bench {}", ctx.nonce.trim_matches('.'));
    let created = sessions[0]
        .ack("createRoom", json!({"name": name, "visibility": "public"}))
        .await?;
    let room_id = created["conversation"]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("createRoom ack without conversation.id: {created}"))?
        .to_owned();
    let sem = Arc::new(Semaphore::new(64));
    let mut joins = Vec::new();
    let creator = sessions.remove(0);
    for mut s in sessions {
        let sem = sem.clone();
        let room_id = room_id.clone();
        joins.push(tokio::spawn(async move {
            let _p = sem.acquire().await.expect("semaphore");
            let r = s.ack("joinRoom", json!({"conversationId": room_id})).await;
            (s, r)
        }));
    }
    let mut sessions = vec![creator];
    for j in joins {
        let (s, r) = j.await?;
        if let Err(e) = r {
            ctx.stats.error("join_failed");
            eprintln!("confab-bench: {e:#}");
            s.close().await;
            continue;
        }
        sessions.push(s);
    }
    sessions.sort_by_key(|s| s.idx);
    report.setup.insert("room_id".into(), json!(room_id));
    report.setup.insert("members".into(), json!(sessions.len()));
    // Let the join events pass before measuring.
    settle(
        &ctx.stats,
        Duration::from_millis(300),
        Duration::from_secs(60),
    )
    .await;
    report.setup.insert(
        "room_secs".into(),
        json!(round(t.elapsed().as_secs_f64(), 3)),
    );
    let body = body_json(p.body_size);
    let target = format!("\"conversationId\":{}", serde_json::to_string(&room_id)?);
    let member_idx: Vec<usize> = sessions.iter().map(|s| s.idx).collect();
    let sending: Vec<(usize, Sender)> = member_idx
        .iter()
        .take(senders)
        .map(|&i| {
            (
                i,
                Sender {
                    s: i as u32,
                    head: r#"{"type":"sendMessage","id":""#.to_owned(),
                    target: target.clone(),
                    body: body.clone(),
                    nonce: ctx.nonce.clone(),
                },
            )
        })
        .collect();
    report.setup.insert("senders".into(), json!(sending.len()));
    let fanout = (member_idx.len() - 1) as u64;
    let sender_idx: Vec<usize> = sending.iter().map(|(i, _)| *i).collect();
    let (sessions, outs, start, end) =
        run_phase(&c, &ctx, sessions, sending, &p, fanout, &mut report).await;
    // Every message a sender had acked must have reached every other member.
    let mut lost = 0;
    let mut without_ack = 0;
    let empty = ReaderOut::default();
    for &s in &sender_idx {
        let acked = &outs.get(&s).unwrap_or(&empty).acked;
        for &r in &member_idx {
            if r == s {
                continue;
            }
            let got = outs.get(&r).and_then(|o| o.delivered.get(&(s as u32)));
            lost += acked.count_missing_from(got);
            if let Some(got) = got {
                without_ack += got.count_missing_from(Some(acked));
            }
        }
    }
    let (acked, delivered) = message_figures(
        &ctx,
        &p,
        &start,
        Losses {
            key: "lost",
            lost,
            without_ack,
        },
        &sender_idx,
        &outs,
        &mut report,
    );
    usage(
        &c,
        &start,
        &end,
        &[("delivery", delivered), ("msg", acked)],
        &mut report,
    );
    close_all(sessions).await;
    Ok(report)
}
