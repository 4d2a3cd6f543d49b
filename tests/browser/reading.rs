//! What counts as read: logging in opens the latest conversation on a wide
//! screen, but nothing in it is marked read, nor shown "Seen" to the
//! sender, until the person looks at it (presses, types or scrolls in it).

use std::time::Duration;

use serde_json::json;

use crate::setup;
use crate::ui::{DESKTOP, Page, bob_wrote_to_ann};
use crate::webdriver::ESCAPE;

#[tokio::test]
async fn logging_in_marks_nothing_read_until_the_person_looks_at_it() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, _, mut from_bob, conversation) = bob_wrote_to_ann(&server, &["Are you there?"]).await;

    let page = Page::open(&driver, &server, DESKTOP).await;
    page.log_in("ann").await;
    // Opened for her, shown, and still unread.
    page.wait_for_text("#chat-title", "bob").await;
    page.wait_for_bodies(&["Are you there?"]).await;
    page.wait_for_badge("bob", 1).await;

    // A search goes over the same connection as a markRead would have, and
    // after it: once its results show, any markRead was handled.
    page.b.type_into("#search", "zz").await;
    page.b.find("#search-results").await;
    let mut ann_elsewhere = server.connect(&ann).await;
    let listed = ann_elsewhere.ack("getConversations", json!({})).await;
    let read = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conversation)
        .map(|c| c["lastReadSeq"].clone());
    assert_eq!(read, Some(json!(0)), "marked read without being looked at");
    from_bob
        .expect_none(Duration::from_millis(200), |f| f["type"] == "receipt")
        .await;

    // She clicks into the conversation: now it is read, and Bob is told.
    page.b.keys(ESCAPE).await;
    page.b.click("#messages .message .bubble").await;
    let receipt = from_bob.event("receipt").await;
    assert_eq!(receipt["conversationId"], conversation);
    assert_eq!(receipt["seq"], 1);
    page.wait_for_badge("bob", 0).await;
    page.b.quit().await;
}
