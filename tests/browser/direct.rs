//! Two people in two browsers: sign up, find each other, talk both ways,
//! see each other typing and reading, edit and delete, hit a limit, and
//! use it at phone width.

use serde_json::json;

use crate::setup;
use crate::ui::{BODIES, DESKTOP, PHONE, Page};
use crate::webdriver::{ARROW_UP, ENTER, TAB};

#[tokio::test]
async fn two_people_talk_in_a_direct_conversation() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (ann, bob) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    ann.sign_up("ann").await;
    bob.sign_up("bob").await;
    // No token is kept in storage (devices.rs says more), and logging out
    // goes back to the login screen.
    let kept = ann
        .b
        .eval(
            "return sessionStorage.length + localStorage.length",
            json!([]),
        )
        .await;
    assert_eq!(kept, 0, "nothing is kept in storage");
    ann.b.click("#logout").await;
    ann.b.find("#auth-form").await;
    ann.log_in("ann").await;

    // Ann finds Bob by the start of his name and writes first, from the
    // keyboard alone: type, Tab to the result, Enter, type, Enter.
    ann.b.type_into("#search", "bo").await;
    ann.b.find("#people-results .result").await;
    ann.b.keys(TAB).await;
    let focused = "document.activeElement.matches('#people-results .result')";
    ann.b
        .wait_for("the result to have the focus", focused)
        .await;
    ann.b.keys(ENTER).await;
    ann.wait_for_text("#chat-title", "bob").await;
    let focused = "document.activeElement.id === 'message-input'";
    ann.b
        .wait_for("the message box to have the focus", focused)
        .await;
    ann.b.keys(&format!("Hi Bob!{ENTER}")).await;
    ann.wait_for_bodies(&["Hi Bob!"]).await;
    assert_eq!(
        ann.b
            .eval(
                "return document.getElementById('message-input').value",
                json!([])
            )
            .await,
        ""
    );

    // Bob was not looking: an unread badge, with Ann online beside it.
    bob.wait_for_badge("ann", 1).await;
    bob.b.find("#conversations .dot.online").await;
    bob.open_conversation("ann").await;
    bob.wait_for_bodies(&["Hi Bob!"]).await;
    bob.wait_for_badge("ann", 0).await;

    // Bob read it: Ann sees it seen.
    ann.wait_for_text("#messages .message.mine .seen", "Seen")
        .await;

    // Bob types; Ann sees it; Bob sends; the hint goes.
    bob.b.type_into("#message-input", "Hello").await;
    ann.wait_for_text("#typing", "bob is typing").await;
    bob.b
        .type_into("#message-input", &format!(" Ann{ENTER}"))
        .await;
    ann.wait_for_bodies(&["Hi Bob!", "Hello Ann"]).await;
    ann.b
        .wait_for(
            "the typing hint to go",
            "document.getElementById('typing').textContent === ''",
        )
        .await;
    bob.wait_for_bodies(&["Hi Bob!", "Hello Ann"]).await;

    // Text from others is text, never markup.
    let markup = "<img src=x id=injected><b>bold</b>";
    bob.send(markup).await;
    ann.wait_for_bodies(&["Hi Bob!", "Hello Ann", markup]).await;
    let injected = ann
        .b
        .eval(
            "return document.querySelector('#messages img, #messages b') === null",
            json!([]),
        )
        .await;
    assert_eq!(injected, true, "a message was parsed as HTML");

    // Ann edits her message from the keyboard: the up arrow in the empty
    // box, new text, Enter.
    ann.b.click("#message-input").await;
    ann.b.keys(ARROW_UP).await;
    ann.b.find("#editing").await;
    let editing = ann
        .b
        .eval(
            "return document.getElementById('message-input').value",
            json!([]),
        )
        .await;
    assert_eq!(editing, "Hi Bob!");
    ann.b.clear("#message-input").await;
    ann.send("Hi Bob, how are you?").await;
    bob.wait_for_bodies(&["Hi Bob, how are you?", "Hello Ann", markup])
        .await;
    bob.wait_for_text("#messages .message .edited", "edited")
        .await;

    // Ann deletes it: two presses of the same button.
    let delete = "#messages .message.mine .delete";
    ann.b.click(delete).await;
    ann.wait_for_text(delete, "Delete for everyone?").await;
    ann.b.click(delete).await;
    bob.wait_for_bodies(&["This message was deleted.", "Hello Ann", markup])
        .await;
    ann.wait_for_bodies(&["This message was deleted.", "Hello Ann", markup])
        .await;

    // A message over the limit is refused, said why, and kept in the box.
    let long = "x".repeat(4001);
    ann.b
        .eval(
            "const box = document.getElementById('message-input'); box.value = arguments[0]; box.focus();",
            json!([long]),
        )
        .await;
    ann.b.keys(ENTER).await;
    ann.wait_for_text("#send-error", "too long").await;
    let kept = ann
        .b
        .eval(
            "return document.getElementById('message-input').value.length",
            json!([]),
        )
        .await;
    assert_eq!(kept, 4001, "the text stays in the box");
    assert_eq!(ann.bodies().await.len(), 3);

    // At phone width the list and the conversation take turns.
    bob.b.resize(PHONE.0, PHONE.1).await;
    let shown =
        |id: &str| format!("getComputedStyle(document.querySelector('{id}')).display !== 'none'");
    bob.b
        .wait_for(
            "the conversation alone",
            &format!("{} && !({})", shown(".chat"), shown(".sidebar")),
        )
        .await;
    bob.b.click("#back").await;
    bob.b
        .wait_for(
            "the list alone",
            &format!("{} && !({})", shown(".sidebar"), shown(".chat")),
        )
        .await;
    bob.open_conversation("ann").await;
    let messages = bob
        .b
        .eval(&format!("return {BODIES}.length"), json!([]))
        .await;
    assert_eq!(messages, 3);

    ann.b.quit().await;
    bob.b.quit().await;
}
