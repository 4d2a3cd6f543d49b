//! The cluster's broker in Redis: [`RedisBus`] on pub/sub (two
//! connections, one for commands, one for pushes) and [`ClusterPresence`]
//! in Lua scripts (docs/cluster.md, sections 3, 5 and 7).

pub mod presence;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub use self::presence::{ClusterPresence, Keys};
use super::bus::{Bus, Inbox, Publish};
use super::{Broker, ClusterSettings, lock};
use crate::domain::error::PortError;

/// Longest wait for any one Redis call: an outage must fail a request, not
/// hang it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// One payload to every channel named, in one command whatever their number.
const FANOUT: &str =
    "for i = 1, #ARGV - 1 do redis.call('PUBLISH', ARGV[i], ARGV[#ARGV]) end return #ARGV - 1";

/// Connects to Redis (two connections: pub/sub and commands) and draws this
/// process's incarnation: the bus and the presence of one cluster member.
///
/// # Errors
/// When Redis cannot be reached or the URL is invalid.
pub async fn connect(settings: &ClusterSettings) -> anyhow::Result<Broker> {
    let client = client(&settings.redis_url)?;
    let commands = timeout(
        REDIS_TIMEOUT * 2,
        client.get_connection_manager_with_config(manager_config()),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .context("cannot connect to Redis")?;
    let (pushes, incoming) = mpsc::unbounded_channel();
    let subscriber = subscriber(&client, pushes.clone())
        .await
        .context("cannot connect to Redis for pub/sub")?;
    let incarnation = uuid::Uuid::new_v4().to_string();
    let presence = Arc::new(ClusterPresence::new(
        commands.clone(),
        Keys::new(settings.prefix.clone()),
        settings.node_id.clone(),
        incarnation.clone(),
        settings.presence_ttl,
    ));
    let bus = Arc::new(RedisBus {
        client,
        commands,
        subscriber: Mutex::new(subscriber),
        pushes,
        incoming: Mutex::new(Some(incoming)),
    });
    Ok(Broker {
        incarnation,
        bus,
        presence,
    })
}

/// Redis pub/sub as the cluster's [`Bus`]: each publish is one `EVAL` of
/// [`FANOUT`], pipelined; pushes arrive on a RESP3 connection that the
/// crate reconnects and resubscribes by itself.
pub struct RedisBus {
    client: redis::Client,
    commands: ConnectionManager,
    /// Replaced when the probe finds it deaf.
    subscriber: Mutex<ConnectionManager>,
    /// Where every subscriber connection, old or new, sends its pushes.
    pushes: mpsc::UnboundedSender<PushInfo>,
    /// Taken by [`Bus::listen`].
    incoming: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
}

impl RedisBus {
    fn subscriber(&self) -> ConnectionManager {
        lock(&self.subscriber).clone()
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn listen(&self, inbox: Arc<dyn Inbox>) -> JoinHandle<()> {
        let incoming = lock(&self.incoming).take();
        tokio::spawn(async move {
            if let Some(pushes) = incoming {
                run_pushes(inbox, pushes).await;
            }
        })
    }

    async fn subscribe(&self, channels: &[&str]) -> Result<(), PortError> {
        let mut conn = self.subscriber();
        bounded(
            "pub/sub",
            "subscribe",
            REDIS_TIMEOUT,
            conn.subscribe(channels),
        )
        .await
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), PortError> {
        let mut conn = self.subscriber();
        bounded(
            "pub/sub",
            "unsubscribe",
            REDIS_TIMEOUT,
            conn.unsubscribe(channel),
        )
        .await
    }

    async fn publish(&self, batch: &[Publish]) -> Result<(), PortError> {
        let mut pipe = redis::pipe();
        for out in batch {
            pipe.cmd("EVAL")
                .arg(FANOUT)
                .arg(0)
                .arg(&out.channels)
                .arg(&out.payload)
                .ignore();
        }
        let mut conn = self.commands.clone();
        bounded(
            "pub/sub",
            "publish",
            REDIS_TIMEOUT,
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    async fn reconnect(&self) -> Result<(), PortError> {
        let fresh = subscriber(&self.client, self.pushes.clone())
            .await
            .map_err(|_| PortError(anyhow::anyhow!("redis pub/sub: cannot reconnect")))?;
        *lock(&self.subscriber) = fresh;
        Ok(())
    }
}

/// Runs one Redis call for at most `limit`, turning its failure into a
/// `PortError` that names the operation only (never the URL or a secret).
async fn bounded<T>(
    area: &'static str,
    op: &'static str,
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, PortError> {
    match timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PortError(anyhow::anyhow!("redis {area} {op}: {e}"))),
        Err(_) => Err(PortError(anyhow::anyhow!(
            "redis {area} {op}: no answer within {limit:?}"
        ))),
    }
}

/// A client speaking RESP3, which the pub/sub connection needs for pushes
/// and for resubscribing after a reconnect.
fn client(url: &str) -> anyhow::Result<redis::Client> {
    // The crate's message could quote the URL, password included.
    let info = url
        .into_connection_info()
        .map_err(|_| anyhow::anyhow!("redis_url is not a valid Redis URL"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(|_| anyhow::anyhow!("redis_url is not a valid Redis URL"))
}

/// Reconnects quickly: a node must notice an outage and its end within
/// seconds. Every call has its own timeout; the connection's own is only
/// the longest of them (a presence close may wait in a queue of thousands).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(6)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1))
        .set_response_timeout(Some(Duration::from_secs(20)))
        .set_connection_timeout(Some(REDIS_TIMEOUT))
}

/// The pub/sub connection: pushes go to `pushes`, and the crate subscribes
/// again to what it had after reconnecting.
async fn subscriber(
    client: &redis::Client,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> anyhow::Result<ConnectionManager> {
    let config = manager_config()
        .set_push_sender(pushes)
        .set_automatic_resubscription();
    timeout(
        REDIS_TIMEOUT * 2,
        client.get_connection_manager_with_config(config),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .context("no connection")
}

/// Hands pushes to the inbox: payloads, and the crate's word that the
/// connection dropped.
async fn run_pushes(inbox: Arc<dyn Inbox>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message => {
                if let Some(msg) = redis::Msg::from_push_info(push) {
                    inbox.received(msg.get_channel_name(), msg.get_payload_bytes());
                }
            }
            PushKind::Disconnection => inbox.disconnected(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
