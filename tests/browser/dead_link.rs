//! A connection that dies without a word (a proxy or a NAT that stops
//! forwarding, closing nothing): the client's own ping goes unanswered, and
//! it says "Reconnecting…" and opens a new connection at once, instead of
//! waiting a minute or more for the browser to give up on the old one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{Account, TestServer};
use crate::setup;
use crate::ui::{DESKTOP, Page, bob_wrote_to_ann};
use crate::webdriver::Driver;

/// A TCP relay between the browser and the server that can go silent:
/// every connection it carries then stops forwarding both ways while
/// staying open, as a dead link looks from either end. Connections opened
/// after that are carried as usual.
struct Relay {
    port: u16,
    silenced: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let (silenced, watching) = watch::channel(0u64);
        let target = SocketAddr::from(([127, 0, 0, 1], to));
        let task = tokio::spawn(async move {
            // Every connection's task lives in this set, ended with the relay.
            let mut carried = tokio::task::JoinSet::new();
            while let Ok((mut browser, _)) = listener.accept().await {
                let mut watching = watching.clone();
                let born = *watching.borrow_and_update();
                carried.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let silenced = async {
                        let _ = watching.wait_for(|now| *now != born).await;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut browser, &mut server) => return,
                        () = silenced => {}
                    }
                    // Hold both ends open, saying nothing.
                    std::future::pending::<()>().await;
                });
            }
        });
        Relay {
            port,
            silenced,
            task,
        }
    }

    /// Makes every connection open now go silent for good.
    fn silence(&self) {
        self.silenced.send_modify(|n| *n += 1);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ann, in a browser that reaches the server only through `relay`, with
/// Bob's message open, and a record kept of what the status bar shows
/// (it may show "Reconnecting…" for only a moment); Bob's account.
async fn ann_talking_to_bob(
    driver: &Driver,
    server: &TestServer,
    relay: &Relay,
) -> (Page, Account) {
    // Bob's connection goes: this test's heartbeat would end it meanwhile.
    let (_, bob, from_bob, _) = bob_wrote_to_ann(server, &["hello"]).await;
    from_bob.close().await;
    let page = Page {
        b: driver.browser(DESKTOP.0, DESKTOP.1).await,
    };
    page.b.goto(&relay.url()).await;
    page.log_in("ann").await;
    page.open_conversation("bob").await;
    page.wait_for_bodies(&["hello"]).await;
    page.b
        .eval(
            "const bar = document.getElementById('connection-status');
             window.statusShown = [];
             new MutationObserver(() => { if (!bar.hidden) window.statusShown.push(bar.textContent); })
               .observe(bar, { attributes: true, childList: true, characterData: true, subtree: true });",
            json!([]),
        )
        .await;
    (page, bob)
}

/// What shows that the page said it was reconnecting, however briefly.
const SAID_RECONNECTING: &str = "window.statusShown.some(t => t.includes('Reconnecting'))";

/// After the link went silent: messages go both ways on the new connection.
async fn back_and_talking(page: &Page, server: &TestServer, bob: &Account) {
    page.b
        .wait_for(
            "the status bar to go",
            "document.getElementById('connection-status').hidden",
        )
        .await;
    let mut from_bob = server.connect(bob).await;
    page.send("back again").await;
    let event = from_bob
        .wait_for(|f| f["type"] == "message" && f["content"]["message"]["body"] == "back again")
        .await;
    let conversation = event["content"]["message"]["conversationId"].clone();
    page.wait_for_bodies(&["hello", "back again"]).await;
    from_bob
        .ack(
            "sendMessage",
            json!({"conversationId": conversation, "body": "welcome back"}),
        )
        .await;
    page.wait_for_bodies(&["hello", "back again", "welcome back"])
        .await;
}

#[tokio::test]
async fn a_silently_dead_connection_is_dropped_and_replaced_at_once() {
    // The client pings at 5/6 of the server's heartbeat and waits half of
    // it for the reply: about every 3.3 s, 2 s here.
    let Some((server, driver)) = setup(&[("CONFAB_HEARTBEAT_SECS", "4")]).await else {
        return;
    };
    let relay = Relay::start(server.port).await;
    let (page, bob) = ann_talking_to_bob(&driver, &server, &relay).await;

    relay.silence();
    page.b
        .wait_for("the page to say it is reconnecting", SAID_RECONNECTING)
        .await;
    back_and_talking(&page, &server, &bob).await;
    page.b.quit().await;
}

#[tokio::test]
async fn at_the_default_heartbeat_a_dead_connection_is_noticed_within_45_seconds() {
    let Some((server, driver)) = setup(&[]).await else {
        return;
    };
    let relay = Relay::start(server.port).await;
    let (page, bob) = ann_talking_to_bob(&driver, &server, &relay).await;

    // A ping every 25 s, 15 s for its reply: noticed at most 40 s after the
    // link died.
    relay.silence();
    let died = Instant::now();
    page.b
        .wait_for_within(
            "the page to say it is reconnecting",
            SAID_RECONNECTING,
            Duration::from_secs(45),
        )
        .await;
    eprintln!("dead link noticed after {:?}", died.elapsed());
    back_and_talking(&page, &server, &bob).await;
    page.b.quit().await;
}
