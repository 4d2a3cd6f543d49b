//! Devices (issue 27): the refresh token stays out of the page's reach
//! (an HttpOnly cookie) and the access token out of storage; a reload
//! restores the session from the cookie; short-lived access tokens are
//! renewed on the open connection. The account dialog lists the user's
//! devices, logs one or all of them out, and changes the password; a
//! device logged out from elsewhere is back at the login screen at once,
//! its connection closed with 4003.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestServer;
use crate::setup;
use crate::ui::{DESKTOP, PASSWORD, Page};

/// Watches the WebSockets the page opens from now on: the access tokens
/// they were opened with (`window.testTokens`, gone with the page) and the
/// codes they closed with (`test.closes` in sessionStorage, which outlives
/// the reload that signing out does).
const WATCH_SOCKETS: &str = r#"
    window.testTokens = [];
    const Original = window.WebSocket;
    window.WebSocket = class extends Original {
      constructor(url, protocols) {
        super(url, protocols);
        window.testTokens.push(new URL(url).searchParams.get('access_token'));
        this.addEventListener('close', (e) => {
          const codes = JSON.parse(sessionStorage.getItem('test.closes') || '[]');
          codes.push(e.code);
          sessionStorage.setItem('test.closes', JSON.stringify(codes));
        });
      }
    };
"#;

/// The close code of a connection whose device session was ended.
const SESSION_REVOKED: u64 = 4003;

async fn watch_sockets(page: &Page) {
    page.b.eval(WATCH_SOCKETS, json!([])).await;
}

/// The access tokens of the sockets opened since `watch_sockets`.
async fn socket_tokens(page: &Page) -> Vec<String> {
    let value = page.b.eval("return window.testTokens", json!([])).await;
    serde_json::from_value(value).expect("a list of tokens")
}

/// The close codes of the watched sockets, across reloads of the tab.
async fn close_codes(page: &Page) -> Vec<u64> {
    let value = page
        .b
        .eval(
            "return JSON.parse(sessionStorage.getItem('test.closes') || '[]')",
            json!([]),
        )
        .await;
    serde_json::from_value(value).expect("a list of close codes")
}

/// A page at the login form, watching its sockets, then logged in as `name`.
async fn logged_in_watched(page: &Page, name: &str) {
    page.b.find("#auth-form").await;
    watch_sockets(page).await;
    page.log_in(name).await;
}

/// Opens the account dialog and waits for `count` devices in it.
async fn open_devices(page: &Page, count: usize) {
    page.b.click("#account-button").await;
    page.b.find("#account").await;
    wait_for_devices(page, count).await;
}

async fn wait_for_devices(page: &Page, count: usize) {
    page.b
        .wait_for(
            &format!("{count} devices listed"),
            &format!(
                "document.querySelectorAll('#devices .device').length === {count} \
                 && document.getElementById('devices-status').textContent === ''"
            ),
        )
        .await;
}

/// Waits until `page` shows the login screen, saying something with `part`
/// in it (nothing at all when `part` is empty).
async fn wait_for_login_screen(page: &Page, part: &str) {
    page.b.find("#auth-form").await;
    if part.is_empty() {
        page.b
            .wait_for(
                "no message at the login screen",
                "document.getElementById('auth-message').hidden",
            )
            .await;
    } else {
        page.wait_for_text("#auth-message", part).await;
    }
    let app_hidden = page
        .b
        .eval("return document.getElementById('app').hidden", json!([]))
        .await;
    assert_eq!(app_hidden, true, "the app is not shown at the login screen");
}

async fn login_status(server: &TestServer, name: &str, password: &str) -> u16 {
    let (status, _) = server
        .post(
            "/api/v1/login",
            json!({"username": name, "password": password}),
        )
        .await;
    status
}

#[tokio::test]
async fn no_token_reaches_storage_a_reload_restores_the_session_and_logging_out_ends_it() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    server.register("ann").await;
    let page = Page::open(&driver, &server, DESKTOP).await;
    logged_in_watched(&page, "ann").await;
    let token = socket_tokens(&page).await.remove(0);

    // The refresh cookie is HttpOnly, and no token is in storage.
    let exposed: Value = page
        .b
        .eval(
            "const token = arguments[0]; \
             const stored = [sessionStorage, localStorage].flatMap(s => \
               Array.from({length: s.length}, (_, i) => s.getItem(s.key(i)))); \
             return { cookie: document.cookie, \
                      stored: stored.some(v => v.includes(token) || v.includes('refresh')) }",
            json!([token]),
        )
        .await;
    assert_eq!(exposed, json!({"cookie": "", "stored": false}));

    // A reload signs in again from the cookie, without the form.
    page.b.goto(&server.url("/")).await;
    page.wait_ready().await;
    let form_hidden = page
        .b
        .eval("return document.getElementById('auth').hidden", json!([]))
        .await;
    assert_eq!(form_hidden, true, "the session was restored");

    page.b.click("#logout").await;
    wait_for_login_screen(&page, "").await;
    let (status, _) = server.get("/api/v1/me", Some(&token)).await;
    assert_eq!(status, 401, "the logged-out device's token is refused");

    // The cookie went with the session: a reload stays at the login screen.
    page.b.goto(&server.url("/")).await;
    page.b.find("#auth-form").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_login_screen(&page, "").await;
    page.b.quit().await;
}

#[tokio::test]
async fn the_devices_panel_lists_both_devices_and_logs_the_other_one_out() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (laptop, phone) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    laptop.sign_up("ann").await;
    logged_in_watched(&phone, "ann").await;

    open_devices(&laptop, 2).await;
    let rows: Value = laptop
        .b
        .eval(
            "return Array.from(document.querySelectorAll('#devices .device'), d => ({ \
               current: d.classList.contains('current'), \
               tag: d.querySelector('.tag') ? d.querySelector('.tag').textContent : null, \
               named: d.querySelector('.device-name').textContent.length > 0, \
               seen: d.querySelector('.device-seen').textContent.startsWith('Last active') }))",
            json!([]),
        )
        .await;
    let mut rows = rows.as_array().expect("rows").clone();
    rows.sort_by_key(|r| r["current"].as_bool());
    assert_eq!(
        rows,
        [
            json!({"current": false, "tag": null, "named": true, "seen": true}),
            json!({"current": true, "tag": "This device", "named": true, "seen": true}),
        ]
    );

    // The phone is logged out from the laptop: its connection is closed
    // with 4003 and it is back at the login screen at once.
    laptop
        .b
        .click("#devices .device:not(.current) button")
        .await;
    wait_for_devices(&laptop, 1).await;
    wait_for_login_screen(&phone, "This device was logged out").await;
    assert!(
        close_codes(&phone).await.contains(&SESSION_REVOKED),
        "the phone's connection closed with 4003: {:?}",
        close_codes(&phone).await
    );
    // The laptop is still signed in and connected.
    laptop.b.click("#account-close").await;
    laptop
        .b
        .wait_for(
            "the laptop to stay connected",
            "document.getElementById('connection-status').hidden && !document.getElementById('app').hidden",
        )
        .await;

    laptop.b.quit().await;
    phone.b.quit().await;
}

#[tokio::test]
async fn logging_out_everywhere_sends_every_device_to_the_login_screen() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (laptop, phone) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    laptop.sign_up("ann").await;
    logged_in_watched(&phone, "ann").await;
    let phone_token = socket_tokens(&phone).await.remove(0);

    open_devices(&laptop, 2).await;
    laptop.b.click("#logout-all").await;
    wait_for_login_screen(&laptop, "").await;
    wait_for_login_screen(&phone, "This device was logged out").await;
    assert!(close_codes(&phone).await.contains(&SESSION_REVOKED));
    let (status, _) = server.get("/api/v1/me", Some(&phone_token)).await;
    assert_eq!(status, 401);
    // Logging in again works.
    laptop.log_in("ann").await;

    laptop.b.quit().await;
    phone.b.quit().await;
}

#[tokio::test]
async fn the_password_form_explains_refusals_and_a_change_logs_out_the_other_devices() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let (laptop, phone) = tokio::join!(
        Page::open(&driver, &server, DESKTOP),
        Page::open(&driver, &server, DESKTOP),
    );
    laptop.sign_up("ann").await;
    logged_in_watched(&phone, "ann").await;
    open_devices(&laptop, 2).await;

    let attempt = async |current: &str, new: &str| {
        laptop.b.clear("#current-password").await;
        laptop.b.type_into("#current-password", current).await;
        laptop.b.clear("#new-password").await;
        laptop.b.type_into("#new-password", new).await;
        laptop.b.click("#password-submit").await;
    };
    let new_password = "correct-horse-7";

    attempt("not-my-password", new_password).await;
    laptop
        .wait_for_text("#password-message", "Your current password is wrong")
        .await;
    attempt(PASSWORD, "short").await;
    laptop
        .wait_for_text("#password-message", "The new password cannot be used")
        .await;
    let class = laptop
        .b
        .eval(
            "return document.getElementById('password-message').className",
            json!([]),
        )
        .await;
    assert_eq!(class, "form-error", "refusals are shown as errors");
    assert_eq!(login_status(&server, "ann", PASSWORD).await, 200);

    attempt(PASSWORD, new_password).await;
    laptop
        .wait_for_text("#password-message", "Password changed")
        .await;
    wait_for_login_screen(&phone, "This device was logged out").await;
    assert!(close_codes(&phone).await.contains(&SESSION_REVOKED));
    // The laptop stays signed in, now the only device (the two logins
    // above over HTTP ended with the change too).
    wait_for_devices(&laptop, 1).await;
    laptop.b.click("#account-close").await;
    laptop
        .b
        .wait_for(
            "the laptop to stay connected",
            "document.getElementById('connection-status').hidden && !document.getElementById('app').hidden",
        )
        .await;
    assert_eq!(login_status(&server, "ann", PASSWORD).await, 401);
    assert_eq!(login_status(&server, "ann", new_password).await, 200);

    laptop.b.quit().await;
    phone.b.quit().await;
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_on_the_open_connection() {
    // Renewed 3.2 s into their 5 s: time to spare on a busy machine.
    let Some((server, driver)) = setup(&[("CONFAB_TOKEN_TTL_SECS", "5")]).await else {
        return;
    };
    let ann = server.register("ann").await;
    let page = Page::open(&driver, &server, DESKTOP).await;
    logged_in_watched(&page, "ann").await;
    page.b
        .eval(
            "window.testReconnecting = false; \
             const bar = document.getElementById('connection-status'); \
             new MutationObserver(() => { if (!bar.hidden) window.testReconnecting = true; }) \
               .observe(bar, { attributes: true });",
            json!([]),
        )
        .await;

    // Over two lifetimes of the access token.
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Bob signs up only now, so that his token is fresh.
    let bob = server.register("bob").await;
    let mut from_bob = server.connect(&bob).await;
    from_bob
        .ack(
            "sendPrivateMessage",
            json!({"to": ann.id, "body": "still there?"}),
        )
        .await;
    page.open_conversation("bob").await;
    page.wait_for_bodies(&["still there?"]).await;

    assert_eq!(
        socket_tokens(&page).await.len(),
        1,
        "one connection all along: reauth extended it (closes {:?})",
        close_codes(&page).await
    );
    assert_eq!(close_codes(&page).await, Vec::<u64>::new());
    let reconnecting = page
        .b
        .eval("return window.testReconnecting", json!([]))
        .await;
    assert_eq!(reconnecting, false, "the user never saw a reconnection");
    page.b.quit().await;
}

#[tokio::test]
async fn two_tabs_opened_at_once_both_restore_the_session() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let page = Page::open(&driver, &server, DESKTOP).await;
    page.sign_up("ann").await;
    let first = page.b.windows().await.remove(0);

    // Both refresh with the same cookie at the same moment: one of them is
    // answered 409, and tries again with the cookie the other one got.
    page.b
        .eval(
            "window.open(arguments[0]); window.open(arguments[0]);",
            json!([server.url("/")]),
        )
        .await;
    let mut tabs = Vec::new();
    for _ in 0..100 {
        tabs = page.b.windows().await;
        if tabs.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tabs.len(), 3, "two tabs opened");
    for tab in tabs.iter().filter(|t| **t != first) {
        page.b.switch_to(tab).await;
        page.wait_ready().await;
        wait_for_login_screen_not_shown(&page).await;
    }
    page.b.quit().await;
}

async fn wait_for_login_screen_not_shown(page: &Page) {
    let shown = page
        .b
        .eval("return !document.getElementById('auth').hidden", json!([]))
        .await;
    assert_eq!(shown, false, "the tab was signed in without the form");
}

#[tokio::test]
async fn a_connection_closed_for_an_expired_token_comes_back_with_a_renewed_one() {
    let Some((server, driver)) = setup(&[("CONFAB_TOKEN_TTL_SECS", "3")]).await else {
        return;
    };
    let ann = server.register("ann").await;
    let page = Page::open(&driver, &server, DESKTOP).await;
    logged_in_watched(&page, "ann").await;
    // Refreshes fail, as if the server were out of reach, until let through:
    // the token expires on the open connection.
    page.b
        .eval(
            "window.testBlockRefresh = true; \
             const original = window.fetch; \
             window.fetch = (url, init) => \
               window.testBlockRefresh && String(url).includes('/token/refresh') \
                 ? Promise.reject(new TypeError('blocked by the test')) \
                 : original.call(window, url, init);",
            json!([]),
        )
        .await;
    page.b
        .wait_for(
            "the connection to close with 4001",
            "JSON.parse(sessionStorage.getItem('test.closes') || '[]').includes(4001)",
        )
        .await;
    page.wait_for_text("#connection-status", "Reconnecting")
        .await;
    let app_shown = page
        .b
        .eval("return !document.getElementById('app').hidden", json!([]))
        .await;
    assert_eq!(
        app_shown, true,
        "a refresh that got no answer signs no one out"
    );

    page.b
        .eval("window.testBlockRefresh = false", json!([]))
        .await;
    page.b
        .wait_for(
            "the connection to come back",
            "document.getElementById('connection-status').hidden",
        )
        .await;
    let tokens = socket_tokens(&page).await;
    assert!(tokens.len() >= 2, "{tokens:?}");
    assert_ne!(
        tokens.first(),
        tokens.last(),
        "it came back with a renewed token"
    );
    let bob = server.register("bob").await;
    let mut from_bob = server.connect(&bob).await;
    from_bob
        .ack(
            "sendPrivateMessage",
            json!({"to": ann.id, "body": "welcome back"}),
        )
        .await;
    page.open_conversation("bob").await;
    page.wait_for_bodies(&["welcome back"]).await;
    page.b.quit().await;
}
