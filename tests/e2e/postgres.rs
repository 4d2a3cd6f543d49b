//! PostgreSQL as the shared store of several server processes: what one
//! node stores every node serves, in one dense order per conversation, and
//! its URL never shows its password. (Events reaching sessions on another
//! node are the cluster's work, not the store's.)

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestServer};

const SHARED: &[(&str, &str)] = &[
    // Tokens from one node must be good on the other.
    ("CONFAB_JWT_SECRET", "a-secret-shared-by-every-node"),
    ("CONFAB_RATE_PER_SEC", "10000"),
    ("CONFAB_RATE_BURST", "10000"),
];

#[tokio::test]
async fn two_servers_on_one_database_share_users_and_one_dense_order() {
    let Some(one) = TestServer::start_on(Backend::Postgres, SHARED).await else {
        return;
    };
    let two = one.start_peer(SHARED).await;
    let ann = one.register("ann").await;
    let bob = two.register("bob").await;
    let (status, _) = two
        .post(
            "/api/v1/register",
            json!({"username": "ANN", "password": "stapled-battery-9"}),
        )
        .await;
    assert_eq!(
        status, 409,
        "a name taken on one node is taken on the other"
    );

    let mut ann_on_one = one.connect(&ann).await;
    let mut bob_on_two = two.connect(&bob).await;
    let first = ann_on_one
        .ack("sendPrivateMessage", json!({"to": bob.id, "body": "start"}))
        .await;
    let conversation = first["message"]["conversationId"].clone();

    // Both nodes take sends into the one conversation at full speed.
    let (mut from_ann, mut from_bob) = (Vec::new(), Vec::new());
    for i in 0..150 {
        let content = json!({"conversationId": conversation, "body": format!("a{i}")});
        from_ann.push(ann_on_one.send_request("sendMessage", content).await);
        let content = json!({"conversationId": conversation, "body": format!("b{i}")});
        from_bob.push(bob_on_two.send_request("sendMessage", content).await);
    }
    let mut acked = vec![first["message"].clone()];
    for (client, ids) in [(&mut ann_on_one, from_ann), (&mut bob_on_two, from_bob)] {
        let mut seqs = Vec::new();
        for id in ids {
            let reply = client.reply_to(&id).await;
            assert_eq!(reply["type"], "ack", "{reply}");
            seqs.push(reply["content"]["message"]["seq"].as_u64().unwrap());
            acked.push(reply["content"]["message"].clone());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    let stored = history(&mut bob_on_two, &conversation).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=301).collect::<Vec<_>>());
    for m in &acked {
        assert!(stored.contains(m), "acknowledged but not stored: {m}");
    }
    assert_eq!(history(&mut ann_on_one, &conversation).await, stored);
}

#[tokio::test]
async fn a_retry_sent_to_another_server_acks_the_original() {
    let Some(one) = TestServer::start_on(Backend::Postgres, SHARED).await else {
        return;
    };
    let two = one.start_peer(SHARED).await;
    let (ann, bob) = (one.register("ann").await, one.register("bob").await);
    let mut on_one = one.connect(&ann).await;
    let mut on_two = two.connect(&ann).await;
    let send = json!({"to": bob.id, "body": "once", "clientMsgId": "k-1"});
    let first = on_one
        .send_request("sendPrivateMessage", send.clone())
        .await;
    let retry = on_two.send_request("sendPrivateMessage", send).await;
    let first = on_one.reply_to(&first).await;
    let retry = on_two.reply_to(&retry).await;
    assert_eq!(first["type"], "ack", "{first}");
    assert_eq!(first["content"], retry["content"]);
    let conversation = first["content"]["message"]["conversationId"].clone();
    assert_eq!(history(&mut on_two, &conversation).await.len(), 1);
}

#[tokio::test]
async fn the_log_shows_the_database_url_without_its_password() {
    let Some(plain) = TestServer::start_on(Backend::Postgres, &[]).await else {
        return;
    };
    // The test server trusts local connections, so any password will do.
    let url = with_password(plain.database_url().unwrap(), "hunter2");
    let s = plain.start_peer(&[("CONFAB_DATABASE_URL", &url)]).await;
    let a = s.register("ann").await;
    s.connect(&a).await;
    assert!(s.logged("database: PostgreSQL at postgres"), "{:?}", s.logs);
    assert!(s.logged(":***@"), "{:?}", s.logs);
    assert!(!s.logged("hunter2"), "{:?}", s.logs);
}

#[test]
fn an_unreachable_database_stops_the_server_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .current_dir(dir.path())
        .env("CONFAB_DATA_DIR", dir.path())
        .env("CONFAB_PORT", "0")
        .env(
            "CONFAB_DATABASE_URL",
            "postgres://confab:s3cret-pw@127.0.0.1:1/confab",
        )
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot connect to PostgreSQL"), "{said}");
    assert!(said.contains("confab:***@127.0.0.1:1"), "{said}");
    assert!(!said.contains("s3cret-pw"), "{said}");
}

/// `url` with `password` for its user.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    match rest.split_once('@') {
        Some((user, host)) => format!("{scheme}://{user}:{password}@{host}"),
        None => format!("{scheme}://postgres:{password}@{rest}"),
    }
}

/// Every message of a conversation, oldest first.
async fn history(client: &mut crate::helpers::Client, conversation: &Value) -> Vec<Value> {
    client
        .history_after(conversation.as_str().unwrap(), 0)
        .await
}
