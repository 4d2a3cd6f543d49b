//! Process lifecycle: configuration errors, graceful shutdown, and
//! durability of acknowledged messages across kill -9.

use std::process::Command;

use serde_json::json;

use crate::helpers::{Backend, TestServer, WAIT, on_each_backend};

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_0() {
    let mut s = TestServer::start().await;
    let a = s.register("ann").await;
    let mut c1 = s.connect(&a).await;
    let mut c2 = s.connect(&a).await;
    c1.ack("ping", json!({})).await;
    let status = tokio::task::spawn_blocking({
        let pid = s.pid();
        move || {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
        }
    });
    status.await.unwrap().unwrap();
    assert_eq!(c1.closed_with(WAIT).await, 1001);
    assert_eq!(c2.closed_with(WAIT).await, 1001);
    assert_eq!(s.terminate_wait().code(), Some(0));
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_before_the_close() {
    let mut s = TestServer::start().await;
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut c = s.connect(&a).await;
    // Several, sent right before the signal: whichever the server has read
    // or not yet read when it starts shutting down, each gets its reply.
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"to": b.id, "body": format!("last words {i}")});
        ids.push(c.send_request("sendPrivateMessage", body).await);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for id in ids {
        let reply = c.reply_to(&id).await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    assert_eq!(c.closed_with(WAIT).await, 1001);
    assert_eq!(s.terminate_wait().code(), Some(0));
}

async fn every_acknowledged_message_survives_kill_9(backend: Backend) {
    let Some(mut s) = TestServer::start_on(
        backend,
        &[
            ("CONFAB_RATE_PER_SEC", "10000"),
            ("CONFAB_RATE_BURST", "10000"),
        ],
    )
    .await
    else {
        return;
    };
    let (a, b) = (s.register("ann").await, s.register("bob").await);
    let mut c = s.connect(&a).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            c.send_request(
                "sendPrivateMessage",
                json!({"to": b.id, "body": format!("m{i}")}),
            )
            .await,
        );
    }
    let mut acked = Vec::new();
    for id in ids.iter().take(200) {
        let f = c.reply_to(id).await;
        assert_eq!(f["type"], "ack");
        acked.push(f["content"]["message"].clone());
    }
    // Crash with the rest of the requests possibly in flight.
    s.kill9();
    let s2 = s.start_again().await;
    let mut cb = s2.connect(&b).await;
    let conv = acked[0]["conversationId"].as_str().unwrap();
    let stored = cb.history_after(conv, 0).await;
    for m in &acked {
        assert!(stored.contains(m), "acknowledged message lost: {m}");
    }
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense after the crash"
    );
}

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir.path())
        .env("CONFAB_DATA_DIR", dir.path())
        .env("CONFAB_PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_setting_stops_the_server_with_a_message_naming_it() {
    for (key, value, name) in [
        ("CONFAB_PORT", "not-a-port", "port"),
        ("CONFAB_PORT", "70000", "port"),
        ("CONFAB_RATE_PER_SEC", "0", "rate_per_sec"),
        ("CONFAB_HEARTBEAT_SECS", "-5", "heartbeat_secs"),
        (
            "CONFAB_MAX_SESSIONS_PER_USER",
            "lots",
            "max_sessions_per_user",
        ),
        ("CONFAB_LOG", "confab=[", "log"),
        ("CONFAB_DATABASE_URL", "mysql://x", "database_url"),
        ("CONFAB_JWT_SECRET", "short", "jwt_secret"),
    ] {
        let (code, stderr) = run_with(&[(key, value)]);
        assert_eq!(code, Some(2), "{key}={value}: {stderr}");
        assert!(stderr.contains(name), "{key}={value}: {stderr}");
    }
}

#[test]
fn a_config_file_is_read_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "rate_per_sec = 0\n").unwrap();
    let path = file.to_str().unwrap();
    let (code, stderr) = run_with(&[("CONFAB_CONFIG", path)]);
    assert_eq!(code, Some(2), "the file's bad value is seen: {stderr}");
    assert!(stderr.contains("rate_per_sec"));
    // An explicitly named file that does not exist is an error too.
    let (code, _) = run_with(&[("CONFAB_CONFIG", "/no/such/confab.toml")]);
    assert_eq!(code, Some(2));
}

on_each_backend!(every_acknowledged_message_survives_kill_9,);
