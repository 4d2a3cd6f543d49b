//! Text that is hard to lay out: a word longer than the screen is wide, in
//! the box or in a message, never widens the page; the box counts the
//! characters near the limit; right-to-left scripts run right to left.

use serde_json::{Value, json};

use crate::setup;
use crate::ui::{DESKTOP, Page, bob_wrote_to_ann};
use crate::webdriver::{BACKSPACE, CONTROL, RELEASE};

/// A small phone held upright.
const SMALL_PHONE: (u32, u32) = (375, 740);

/// How the page fits the window: the page's width, the window's, and the
/// right edges of the Send button and of the element matching `css` (0
/// when there is none).
async fn fit(page: &Page, css: &str) -> (i64, i64, i64, i64) {
    let v: Value = page
        .b
        .eval(
            "const right = (e) => e ? Math.ceil(e.getBoundingClientRect().right) : 0;
             return [document.documentElement.scrollWidth, window.innerWidth,
                     right(document.getElementById('send-button')),
                     right(document.querySelector(arguments[0]))];",
            json!([css]),
        )
        .await;
    let n = |i: usize| v[i].as_i64().expect("a number");
    (n(0), n(1), n(2), n(3))
}

/// Fails unless the page is no wider than the window and the Send button
/// and `css` are inside it.
async fn assert_fits(page: &Page, css: &str, when: &str) {
    let (page_width, window, send, other) = fit(page, css).await;
    assert!(
        page_width <= window && send <= window && other <= window,
        "{when}: the page is {page_width} px wide in a window of {window} px, \
         Send ends at {send} px, {css} at {other} px"
    );
}

#[tokio::test]
async fn long_words_never_widen_the_page_and_the_box_counts_near_the_limit() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    bob_wrote_to_ann(&server, &["hi"]).await;
    let page = Page {
        b: driver.phone(SMALL_PHONE.0, SMALL_PHONE.1).await,
    };
    page.b.goto(&server.url("/")).await;
    page.log_in("ann").await;
    page.open_conversation("bob").await;
    let width = page.b.eval("return window.innerWidth", json!([])).await;
    assert_eq!(width, SMALL_PHONE.0, "the phone's width");

    // Typed one key at a time, as a person would: the count appears at
    // 3,500 characters and turns to a warning past 4,000.
    let count = "document.getElementById('char-count')";
    page.b.type_into("#message-input", &"w".repeat(3499)).await;
    let hidden = page
        .b
        .eval(&format!("return {count}.hidden"), json!([]))
        .await;
    assert_eq!(hidden, true, "no count far from the limit");
    assert_fits(&page, "#message-input", "3,499 characters typed").await;
    page.b.type_into("#message-input", "w").await;
    page.wait_for_text("#char-count", "3500 / 4000").await;
    page.b.type_into("#message-input", &"w".repeat(501)).await;
    page.wait_for_text("#char-count", "4001 / 4000").await;
    let over = page
        .b
        .eval(
            &format!("return {count}.classList.contains('over')"),
            json!([]),
        )
        .await;
    assert_eq!(over, true);
    assert_fits(&page, "#char-count", "4,001 characters typed").await;

    // Sending it is refused, and the reason is in view.
    page.b.click("#send-button").await;
    page.wait_for_text("#send-error", "too long").await;
    assert_fits(&page, "#send-error", "the error shown").await;

    // A long word that is sent wraps in its bubble.
    let word = "x".repeat(600);
    // Select all, delete: as a person empties the box (a WebDriver clear
    // is a script's change, which fires no input event).
    page.b
        .type_into("#message-input", &format!("{CONTROL}a{RELEASE}{BACKSPACE}"))
        .await;
    page.b
        .wait_for("the count to go", &format!("{count}.hidden"))
        .await;
    page.send(&word).await;
    page.wait_for_bodies(&["hi", word.as_str()]).await;
    assert_fits(&page, "#messages .message.mine .bubble", "the word sent").await;

    page.b.quit().await;
}

#[tokio::test]
async fn right_to_left_messages_and_previews_run_right_to_left() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let hebrew = "שלום, מה שלומך?";
    let arabic = "مرحبا، كيف حالك؟";
    bob_wrote_to_ann(&server, &["Hello", hebrew, arabic]).await;
    let page = Page::open(&driver, &server, DESKTOP).await;
    page.log_in("ann").await;
    page.open_conversation("bob").await;
    page.wait_for_bodies(&["Hello", hebrew, arabic]).await;
    let directions = page
        .b
        .eval(
            "return Array.from(document.querySelectorAll('#messages .message .body'), \
             e => getComputedStyle(e).direction)",
            json!([]),
        )
        .await;
    assert_eq!(directions, json!(["ltr", "rtl", "rtl"]));
    let preview = page
        .b
        .eval(
            "const e = document.querySelector('#conversations .conversation-last'); \
             const s = getComputedStyle(e); return [e.textContent, s.direction, s.textAlign]",
            json!([]),
        )
        .await;
    assert_eq!(preview, json!([arabic, "rtl", "start"]));
    page.b.quit().await;
}
