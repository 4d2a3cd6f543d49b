//! The picture of the main screen in the README (`docs/web-client.png`),
//! taken of a small made-up team. Not a test: run it by hand after changing
//! how the client looks, with
//! `cargo test --test browser -- --ignored main_screen_screenshot`.

use serde_json::json;

use crate::setup;
use crate::ui::{DESKTOP, Page};

#[tokio::test]
#[ignore = "writes docs/web-client.png; run by hand"]
async fn main_screen_screenshot() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let (mut a, mut b, mut c, mut d) = (
        server.connect(&alice).await,
        server.connect(&bob).await,
        server.connect(&carol).await,
        server.connect(&dave).await,
    );

    let general = a
        .ack(
            "createRoom",
            json!({"name": "general", "visibility": "public"}),
        )
        .await["conversation"]["id"]
        .clone();
    for who in [&mut b, &mut c, &mut d] {
        who.ack("joinRoom", json!({"conversationId": general}))
            .await;
    }
    c.ack(
        "sendPrivateMessage",
        json!({"to": alice.id, "body": "Are we still on for lunch tomorrow?"}),
    )
    .await;
    let reply = a
        .ack(
            "sendPrivateMessage",
            json!({"to": carol.id, "body": "Yes! 12:30 at the usual place."}),
        )
        .await;
    let reply = &reply["message"];
    a.ack(
        "markRead",
        json!({"conversationId": reply["conversationId"], "seq": reply["seq"]}),
    )
    .await;
    let design = a
        .ack(
            "createRoom",
            json!({"name": "design-review", "visibility": "private"}),
        )
        .await["conversation"]["id"]
        .clone();
    for who in [&bob, &carol] {
        a.ack(
            "inviteToRoom",
            json!({"conversationId": design, "userId": who.id}),
        )
        .await;
    }
    let mockups = b.ack("sendMessage", json!({"conversationId": design, "body": "Uploaded the new mockups to the shared folder."})).await;
    a.ack(
        "markRead",
        json!({"conversationId": design, "seq": mockups["message"]["seq"]}),
    )
    .await;
    for (from_dave, body) in [
        (true, "Deploy finished, all checks green."),
        (false, "Nice work, Dave!"),
        (true, "Retro moved to Thursday at 3pm."),
    ] {
        let who = if from_dave { &mut d } else { &mut c };
        who.ack(
            "sendMessage",
            json!({"conversationId": general, "body": body}),
        )
        .await;
    }
    let mut last = json!(null);
    for (from_bob, body) in [
        (
            true,
            "Morning! Did you get a chance to look at the release notes?",
        ),
        (
            false,
            "Yes, they read well. Two small fixes and they are good to go.",
        ),
        (
            true,
            "Great, I'll make those and tag the release this afternoon.",
        ),
        (false, "Perfect. I'll let everyone know in #general."),
    ] {
        last = if from_bob {
            b.ack("sendPrivateMessage", json!({"to": alice.id, "body": body}))
                .await
        } else {
            a.ack("sendPrivateMessage", json!({"to": bob.id, "body": body}))
                .await
        };
    }
    c.ack("setStatus", json!({"status": "away"})).await;
    d.close().await;
    a.close().await;

    let page = Page::open(&driver, &server, (DESKTOP.0, 900)).await;
    page.log_in("alice").await;
    page.open_conversation("bob").await;
    let message = &last["message"];
    b.ack(
        "markRead",
        json!({"conversationId": message["conversationId"], "seq": message["seq"]}),
    )
    .await;
    page.wait_for_text("#messages .seen", "Seen").await;
    b.ack(
        "typing",
        json!({"conversationId": message["conversationId"], "active": true}),
    )
    .await;
    page.wait_for_text("#typing", "bob is typing").await;
    page.wait_for_badge("general", 3).await;
    // No caret or focus ring in the picture.
    page.b
        .eval("document.activeElement.blur()", json!([]))
        .await;

    let png = page.b.screenshot().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/web-client.png");
    std::fs::write(path, png).expect("write the screenshot");
    page.b.quit().await;
}
