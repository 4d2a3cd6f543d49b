//! The data folder on disk: no other local user may read it, and the text
//! an edit or a delete replaced does not stay in any file of it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::TestServer;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_new_data_folder_and_every_file_in_it_are_the_servers_user_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = TestServer::start_in(tmp.path(), &[("CONFAB_DATA_DIR", data.to_str().unwrap())]).await;
    let a = s.register("ann").await;
    let b = s.register("bob").await;
    let mut c = s.connect(&a).await;
    c.ack("sendPrivateMessage", json!({"to": b.id, "body": "hello"}))
        .await;
    assert_eq!(mode(&data), 0o700);
    for name in ["confab.db", "confab.db-wal", "confab.db-shm", "jwt_secret"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
}

/// The files of `dir` that hold any of `needles`.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // A file may vanish between listing and reading (a checkpoint).
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{needle} in {}", path.display()));
            }
        }
    }
    found
}

#[tokio::test]
async fn edited_and_deleted_text_leaves_every_file_of_the_data_folder() {
    let s = TestServer::start_with(&[("CONFAB_SQLITE_SCRUB_SECS", "1")]).await;
    let a = s.register("cara").await;
    let b = s.register("dan").await;
    let mut c = s.connect(&a).await;
    let (edited, deleted) = ("e2e-marker-edited-93c1d7", "e2e-marker-deleted-0b64fa");
    let mut sent = Vec::new();
    for body in [edited, deleted, "e2e-kept-text"] {
        let ack = c
            .ack("sendPrivateMessage", json!({"to": b.id, "body": body}))
            .await;
        sent.push(ack["message"].clone());
    }
    let conversation = sent[0]["conversationId"].clone();
    c.ack(
        "editMessage",
        json!({"conversationId": conversation, "messageId": sent[0]["id"], "body": "e2e-new-text"}),
    )
    .await;
    c.ack(
        "deleteMessage",
        json!({"conversationId": conversation, "messageId": sent[1]["id"]}),
    )
    .await;
    // Hang guard only: the server empties its WAL a second after the edit.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = files_holding(&s.data_dir, &[edited, deleted]);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still on disk: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = c.history_after(conversation.as_str().unwrap(), 0).await;
    let bodies: Vec<&str> = history
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["e2e-new-text", "", "e2e-kept-text"]);
    assert!(!files_holding(&s.data_dir, &["e2e-kept-text"]).is_empty());
}
