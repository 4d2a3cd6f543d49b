//! Blocking from a direct conversation's header: the blocked person can no
//! longer write and sees the blocker offline, until unblocked.

use crate::setup;
use crate::ui::{DESKTOP, Page};

#[tokio::test]
async fn a_blocked_person_cannot_write_until_unblocked() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    ann.sign_up("ann").await;
    bob.sign_up("bob").await;
    ann.pick_from_search("bo", "people-results", "bob").await;
    ann.send("Hi Bob!").await;
    ann.wait_for_bodies(&["Hi Bob!"]).await;
    bob.open_conversation("ann").await;
    bob.wait_for_bodies(&["Hi Bob!"]).await;
    ann.wait_for_text("#chat-sub", "online").await;

    bob.wait_for_text("#block-button", "Block").await;
    bob.b.click("#block-button").await;
    bob.wait_for_text("#block-button", "Unblock").await;
    // To Ann, Bob is offline from now on, and her messages do not go.
    ann.wait_for_text("#chat-sub", "offline").await;
    ann.send("Are you there?").await;
    ann.wait_for_text("#send-error", "not allowed").await;
    assert_eq!(bob.bodies().await, ["Hi Bob!"]);

    bob.b.click("#block-button").await;
    bob.wait_for_text("#block-button", "Block").await;
    ann.wait_for_text("#chat-sub", "online").await;
    ann.b.clear("#message-input").await;
    ann.send("Hello again").await;
    bob.wait_for_text("#messages", "Hello again").await;
}
