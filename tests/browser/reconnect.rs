//! History comes in pages as one scrolls up. Connections drop: the client
//! says so, keeps what was being sent, comes back by itself, and shows what
//! it missed exactly once. A session that can no longer be renewed sends
//! the user back to the login screen.

use serde_json::json;

use crate::setup;
use crate::ui::{DESKTOP, Page};

#[tokio::test]
async fn after_a_server_restart_the_client_catches_up_without_duplicates() {
    // Bob writes faster than the default request rate allows.
    let fast = [
        ("CONFAB_RATE_PER_SEC", "10000"),
        ("CONFAB_RATE_BURST", "10000"),
    ];
    let Some((mut server, driver)) = setup(&fast).await else {
        return;
    };
    let ann = server.register("ann").await;
    let bob = server.register("bob").await;

    // More than a page of history: the newest page first, the rest when
    // Ann scrolls to the top.
    let mut from_bob = server.connect(&bob).await;
    let mut expected: Vec<String> = (1..=60).map(|i| format!("before {i}")).collect();
    for body in &expected {
        from_bob
            .ack("sendPrivateMessage", json!({"to": ann.id, "body": body}))
            .await;
    }
    let page = Page::open(&driver, &server, DESKTOP).await;
    page.log_in("ann").await;
    page.open_conversation("bob").await;
    page.wait_for_bodies(&expected[10..]).await;
    page.b
        .eval(
            "document.getElementById('scroller').scrollTop = 0",
            json!([]),
        )
        .await;
    page.wait_for_bodies(&expected).await;
    from_bob.close().await;

    server.terminate();
    page.wait_for_text("#connection-status", "Reconnecting")
        .await;

    // What Ann sends while disconnected stays in the box until it can go.
    page.send("sent while away").await;
    page.wait_for_text("#send-error", "Not connected").await;

    // Meanwhile the same data is served on another port, where Bob writes
    // what Ann's page can only learn by asking for the history it missed.
    let mut elsewhere = server.start_again().await;
    let mut from_bob = elsewhere.connect(&bob).await;
    for body in ["missed 1", "missed 2", "missed 3"] {
        from_bob
            .ack("sendPrivateMessage", json!({"to": ann.id, "body": body}))
            .await;
    }
    from_bob.close().await;
    elsewhere.terminate();

    server.resume().await;
    expected.extend(["missed 1", "missed 2", "missed 3", "sent while away"].map(String::from));
    page.wait_for_bodies(&expected).await;
    page.b
        .wait_for(
            "the status bar to go",
            "document.getElementById('connection-status').hidden",
        )
        .await;
    let box_text = page
        .b
        .eval(
            "return document.getElementById('message-input').value",
            json!([]),
        )
        .await;
    assert_eq!(box_text, "", "the message left the box once it was sent");

    // Live again: one more message arrives once, after all the others.
    let mut from_bob = server.connect(&bob).await;
    let stored = from_bob
        .ack(
            "getHistory",
            json!({"conversationId": page_conversation(&page).await}),
        )
        .await;
    let newest = stored["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        newest["seq"], 64,
        "the message sent while away was stored once"
    );
    assert_eq!(newest["body"], "sent while away");
    from_bob
        .ack("sendPrivateMessage", json!({"to": ann.id, "body": "live"}))
        .await;
    expected.push("live".into());
    page.wait_for_bodies(&expected).await;

    page.b.quit().await;
}

async fn page_conversation(page: &Page) -> String {
    let id = page
        .b
        .eval("return document.querySelector('#conversations .conversation.active').dataset.conversationId", json!([]))
        .await;
    id.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_session_that_cannot_be_renewed_sends_the_user_back_to_the_login_screen() {
    // The access token would be renewed after 2.4 s, by when the refresh
    // token has expired.
    let short = [
        ("CONFAB_TOKEN_TTL_SECS", "3"),
        ("CONFAB_REFRESH_TTL_SECS", "1"),
    ];
    let Some((server, driver)) = setup(&short).await else {
        return;
    };
    server.register("ann").await;
    let page = Page::open(&driver, &server, DESKTOP).await;
    page.log_in("ann").await;
    page.wait_for_text("#auth-message", "expired").await;
    page.b.find("#auth-form").await;
    // A reload does not bring the session back.
    page.b.goto(&server.url("/")).await;
    page.b.find("#auth-form").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let app_hidden = page
        .b
        .eval("return document.getElementById('app').hidden", json!([]))
        .await;
    assert_eq!(app_hidden, true, "still at the login screen");
    page.b.quit().await;
}
