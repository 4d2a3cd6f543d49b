//! Rooms in the browser: one person creates a public room and another
//! finds and joins it; a private room takes an invitation; and while
//! someone looks elsewhere, the badge of the room they are not looking at
//! counts what they have not read.

use crate::setup;
use crate::ui::{DESKTOP, Page};

#[tokio::test]
async fn people_create_join_and_invite_into_rooms_and_unread_badges_count_up() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, cat) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    ann.sign_up("ann").await;
    cat.sign_up("cat").await;

    // Ann creates a public room.
    ann.b.click("#new-room-button").await;
    ann.b.type_into("#room-name", "general").await;
    ann.b.click("#new-room-create").await;
    ann.wait_for_text("#chat-title", "general").await;
    ann.wait_for_text("#chat-sub", "Public room · 1 member")
        .await;

    // Cat finds it and joins; Ann sees the room grow.
    cat.pick_from_search("gen", "room-results", "general").await;
    cat.wait_for_text("#chat-title", "general").await;
    ann.wait_for_text("#chat-sub", "2 members").await;
    ann.send("Welcome, Cat").await;
    cat.wait_for_bodies(&["Welcome, Cat"]).await;
    cat.send("Thanks!").await;
    ann.wait_for_bodies(&["Welcome, Cat", "Thanks!"]).await;

    // A private room: found by nobody, entered by invitation.
    ann.b.click("#new-room-button").await;
    ann.b.type_into("#room-name", "plans").await;
    ann.b.click("#room-private").await;
    ann.b.click("#new-room-create").await;
    ann.wait_for_text("#chat-sub", "Private room").await;
    ann.b.click("#invite-button").await;
    ann.b.type_into("#invite-search", "ca").await;
    ann.b.click("#invite-results .result[data-user-id]").await;
    ann.wait_for_text("#invite-status", "cat is now in plans")
        .await;
    ann.b.click("#invite-close").await;

    // Cat stays in "general" and is told about "plans" by its badge.
    cat.wait_for_badge("plans", 0).await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        ann.send(text).await;
        cat.wait_for_badge("plans", i as u32 + 1).await;
    }
    cat.wait_for_badge("general", 0).await;
    cat.open_conversation("plans").await;
    cat.wait_for_bodies(&["one", "two", "three"]).await;
    cat.wait_for_badge("plans", 0).await;

    ann.b.quit().await;
    cat.b.quit().await;
}
