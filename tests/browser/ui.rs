//! The web client as a person sees it: pages and the things one does on
//! them (sign up, open a conversation, send), in terms of what is shown.

use std::fmt::Debug;

use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{Account, Client, TestServer};
use crate::webdriver::{Browser, Driver, ENTER};

/// The password every test person uses (the one `TestServer::register` sets).
pub const PASSWORD: &str = "stapled-battery-9";

/// A desktop window.
pub const DESKTOP: (u32, u32) = (1280, 800);
/// A phone held upright.
pub const PHONE: (u32, u32) = (390, 800);

/// The message bodies in the open conversation, oldest first.
pub const BODIES: &str =
    "Array.from(document.querySelectorAll('#messages .message .body'), e => e.textContent)";

/// Ann and Bob, who has written `bodies` to her over a connection of his
/// own: their accounts, his connection and the id of their conversation.
pub async fn bob_wrote_to_ann(
    server: &TestServer,
    bodies: &[&str],
) -> (Account, Account, Client, Value) {
    let ann = server.register("ann").await;
    let bob = server.register("bob").await;
    let mut from_bob = server.connect(&bob).await;
    let mut conversation = Value::Null;
    for body in bodies {
        let sent = from_bob
            .ack("sendPrivateMessage", json!({"to": ann.id, "body": body}))
            .await;
        conversation = sent["message"]["conversationId"].clone();
    }
    (ann, bob, from_bob, conversation)
}

/// One person's browser on the client.
pub struct Page {
    /// The browser, for anything not covered here.
    pub b: Browser,
}

impl Page {
    /// Opens a browser at the client's page.
    pub async fn open(driver: &Driver, server: &TestServer, (w, h): (u32, u32)) -> Page {
        let b = driver.browser(w, h).await;
        b.goto(&server.url("/")).await;
        Page { b }
    }

    /// Creates an account through the form and waits for the app.
    pub async fn sign_up(&self, name: &str) {
        self.fill_in(name).await;
        self.b.click("#register-button").await;
        self.wait_ready().await;
    }

    /// Logs in through the form and waits for the app.
    pub async fn log_in(&self, name: &str) {
        self.fill_in(name).await;
        self.b.click("#login-button").await;
        self.wait_ready().await;
    }

    async fn fill_in(&self, name: &str) {
        self.b.find("#auth-form").await;
        self.b.clear("#username").await;
        self.b.type_into("#username", name).await;
        self.b.clear("#password").await;
        self.b.type_into("#password", PASSWORD).await;
    }

    /// Waits until the app is connected and has its conversations.
    pub async fn wait_ready(&self) {
        self.b
            .wait_for(
                "the app to be ready",
                "document.body.dataset.ready === 'true'",
            )
            .await;
    }

    /// The conversation in the sidebar titled `title`.
    fn conversation(title: &str) -> String {
        format!(
            "Array.from(document.querySelectorAll('#conversations .conversation'))\
             .find(b => b.querySelector('.title-text').textContent === {})",
            json!(title)
        )
    }

    /// Opens the conversation titled `title` from the sidebar.
    pub async fn open_conversation(&self, title: &str) {
        self.b
            .click_element(&format!("conversation {title}"), &Self::conversation(title))
            .await;
        self.b
            .wait_for(
                &format!("{title} to open"),
                &format!(
                    "document.getElementById('chat-title').textContent === {}",
                    json!(title)
                ),
            )
            .await;
    }

    /// Waits until the unread badge of `title` shows `count` (0: no badge).
    pub async fn wait_for_badge(&self, title: &str, count: u32) {
        let badge = format!(
            "(() => {{ const c = {}; if (!c) return null; const b = c.querySelector('.badge'); \
             return (b ? Number(b.textContent) : 0) === {count}; }})()",
            Self::conversation(title)
        );
        self.b
            .wait_for(&format!("{title} to show {count} unread"), &badge)
            .await;
    }

    /// Types `text` in the search box and clicks the result `name` in `section`
    /// (`people-results` or `room-results`).
    pub async fn pick_from_search(&self, text: &str, section: &str, name: &str) {
        self.b.clear("#search").await;
        self.b.type_into("#search", text).await;
        let result = format!(
            "Array.from(document.querySelectorAll('#{section} .result'))\
             .find(b => b.querySelector('.result-name').textContent === {})",
            json!(name)
        );
        self.b
            .click_element(&format!("{name} in the search results"), &result)
            .await;
    }

    /// Types a message and presses Enter.
    pub async fn send(&self, text: &str) {
        self.b
            .type_into("#message-input", &format!("{text}{ENTER}"))
            .await;
    }

    /// Waits until the open conversation shows exactly these messages.
    pub async fn wait_for_bodies<S: Serialize + Debug>(&self, expected: &[S]) {
        let check = format!(
            "JSON.stringify({BODIES}) === {}",
            json!(json!(expected).to_string())
        );
        self.b
            .wait_for(&format!("the messages {expected:?}"), &check)
            .await;
    }

    /// The messages of the open conversation, oldest first.
    pub async fn bodies(&self) -> Vec<String> {
        let value = self.b.eval(&format!("return {BODIES};"), json!([])).await;
        serde_json::from_value(value).expect("a list of strings")
    }

    /// Waits until the text of `css` contains `part`.
    pub async fn wait_for_text(&self, css: &str, part: &str) -> Value {
        let check = format!(
            "(() => {{ const e = document.querySelector({}); return e && e.textContent.includes({}) && e.textContent; }})()",
            json!(css),
            json!(part)
        );
        self.b
            .wait_for(&format!("{css} to say {part:?}"), &check)
            .await
    }
}
