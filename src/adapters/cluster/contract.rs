//! The [`Bus`] contract, run on every implementation (the in-memory bus in
//! `super::tests`, Redis in `super::redis::tests`): what delivery relies
//! on, checked between two nodes' connections to one broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bus::{Bus, Inbox, Publish};
use super::lock;

/// What one node's inbox got.
#[derive(Default)]
struct Collect {
    payloads: Mutex<Vec<(String, String)>>,
}

impl Inbox for Collect {
    fn received(&self, channel: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload).into_owned();
        lock(&self.payloads).push((channel.to_owned(), text));
    }

    fn disconnected(&self) {}
}

impl Collect {
    /// Waits for `n` payloads in all, then a little more for any extra one,
    /// and takes what came.
    async fn take(&self, n: usize) -> Vec<(String, String)> {
        for _ in 0..500 {
            if lock(&self.payloads).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::mem::take(&mut *lock(&self.payloads))
    }
}

fn publish(channels: &[&str], payload: &str) -> Publish {
    Publish {
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// Runs the contract on two connections, `a` and `b`, to one broker, with
/// channel names under `prefix` that nothing else uses.
pub(crate) async fn check(a: Arc<dyn Bus>, b: Arc<dyn Bus>, prefix: &str) {
    let inbox = Arc::new(Collect::default());
    let listening = b.listen(inbox.clone());
    let (x, y) = (format!("{prefix}:x"), format!("{prefix}:y"));
    let got = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let owned = |(c, p): &(&str, &str)| ((*c).to_owned(), (*p).to_owned());
        pairs.iter().map(owned).collect()
    };

    // What is published after the subscription is confirmed arrives, in
    // the order of the publisher's calls, on the channels subscribed only.
    b.subscribe(&[&x]).await.unwrap();
    let batch = [publish(&[&x, &y], "1"), publish(&[&x], "2")];
    a.publish(&batch).await.unwrap();
    a.publish(&[publish(&[&x], "3")]).await.unwrap();
    assert_eq!(inbox.take(3).await, got(&[(&x, "1"), (&x, "2"), (&x, "3")]));

    // Subscribing again, as a recovery does, is harmless: one copy each.
    b.subscribe(&[&x, &y]).await.unwrap();
    a.publish(&[publish(&[&x, &y], "4")]).await.unwrap();
    let mut four = inbox.take(2).await;
    four.sort();
    assert_eq!(four, got(&[(&x, "4"), (&y, "4")]));

    // Unsubscribed, a channel is quiet; the others are not.
    b.unsubscribe(&y).await.unwrap();
    a.publish(&[publish(&[&y], "5"), publish(&[&x], "6")])
        .await
        .unwrap();
    assert_eq!(inbox.take(1).await, got(&[(&x, "6")]));

    // A replaced connection, subscribed again, receives.
    b.reconnect().await.unwrap();
    b.subscribe(&[&x]).await.unwrap();
    a.publish(&[publish(&[&x], "7")]).await.unwrap();
    assert_eq!(inbox.take(1).await, got(&[(&x, "7")]));
    listening.abort();
}
