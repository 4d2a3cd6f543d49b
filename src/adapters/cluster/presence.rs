//! The `PresenceRegistry` adapter for a cluster: presence shared by every
//! node through Redis (docs/cluster.md, section 5), plus the tasks that keep
//! it honest: the heartbeat that keeps this node's sessions alive, the
//! reaper that closes the sessions of nodes that died, and the claim of a
//! restarted node's own leftovers.
//!
//! Every port method is one Lua script, so each is atomic across nodes;
//! scripts read Redis `TIME`, so node clocks never decide an expiry.
//!
//! Key layout under a prefix `{p}`:
//! - `{p}:p:s:{user}` ZSET, member `{inc}/{session}`, score = expiry ms;
//! - `{p}:p:l:{user}` HASH: `name`, `status` (`online`/`away`), `active` (ms);
//! - `{p}:p:online` ZSET, member user id, score = latest expiry of the user;
//! - `{p}:inc:{inc}` SET of the JSON pairs `[user, session]` an incarnation holds;
//! - `{p}:node:{node_id}` STRING, the node's current incarnation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ScriptInvocation};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::REDIS_TIMEOUT;
use crate::domain::error::PortError;
use crate::domain::ports::{OpenSessionError, PresenceRegistry};
use crate::domain::presence::{ActiveStatus, LiveStatus, TooManySessions};
use crate::domain::service::{Caller, ChatService};
use crate::domain::{SessionId, Timestamp, User, UserId, Username};

/// Longest wait for a close, which no client waits for: when thousands of
/// sessions end at once (a network blip, a bench run ending) their closes
/// queue up in Redis, and one that gives up leaves its user online until
/// the entry expires.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Sessions per refresh script, so that one call never blocks Redis for long.
const REFRESH_BATCH: usize = 500;
/// Users per `live` script; the core asks for at most 1000 at a time anyway.
const LIVE_BATCH: usize = 1000;
/// Expired entries handled per reaper batch.
const REAP_BATCH: usize = 1000;
/// Batches per reaper tick, so that a dead node with many sessions is
/// reaped within the bound without one tick running forever.
const REAP_BATCHES_PER_TICK: usize = 20;
/// How often the reaper runs; the offline event leaves at most this long
/// after the entry expired.
const REAP_EVERY: Duration = Duration::from_secs(1);

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("presence/common.lua"),
            include_str!(concat!("presence/", $file))
        ))
    };
}

/// Key names, all under one prefix so tests (and several clusters on one Redis) never collide.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, e.g. `confab`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The STRING naming a node's current incarnation.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.prefix)
    }

    /// The SET of sessions an incarnation holds.
    pub fn incarnation(&self, incarnation: &str) -> String {
        format!("{}:inc:{incarnation}", self.prefix)
    }

    /// The ZSET of a user's session entries.
    pub fn sessions(&self, user: &UserId) -> String {
        format!("{}:p:s:{user}", self.prefix)
    }

    /// The HASH of a user's live state.
    pub fn live(&self, user: &UserId) -> String {
        format!("{}:p:l:{user}", self.prefix)
    }

    /// The ZSET of online users.
    pub fn online(&self) -> String {
        format!("{}:p:online", self.prefix)
    }
}

struct Scripts {
    open: Script,
    close: Script,
    set_status: Script,
    touch: Script,
    live: Script,
    online: Script,
    expired: Script,
    claim: Script,
    refresh: Script,
    leave: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            open: script!("open.lua"),
            close: script!("close.lua"),
            set_status: script!("set_status.lua"),
            touch: script!("touch.lua"),
            live: script!("live.lua"),
            online: script!("online.lua"),
            expired: script!("expired.lua"),
            claim: script!("claim.lua"),
            refresh: script!("refresh.lua"),
            leave: script!("leave.lua"),
        }
    }
}

type Local = HashMap<(UserId, SessionId), Username>;

/// Presence shared by the nodes of a cluster, in Redis.
pub struct ClusterPresence {
    conn: ConnectionManager,
    keys: Keys,
    node_id: String,
    incarnation: String,
    ttl: Duration,
    scripts: Scripts,
    // Sessions this process opened and has not closed: what the heartbeat
    // keeps alive. Held for map operations only, never across an await.
    local: Mutex<Local>,
    // Closes hold it shared and refresh exclusively: otherwise a refresh
    // that read the map just before a close could re-add, just after the
    // close, the entry that close removed, and leave a ghost for a TTL.
    gate: tokio::sync::RwLock<()>,
    reap_failures: AtomicU64,
    // Activity since the last flush, newest per user: written once a
    // second rather than a Redis round trip before every request.
    touched: Mutex<HashMap<UserId, Timestamp>>,
}

impl ClusterPresence {
    /// `conn`: a ConnectionManager for commands (not the pub/sub one).
    /// `incarnation`: this process's random id (UUIDv4 string; it must not
    /// contain `/`). `node_id`: stable name of the node. `ttl`: how long a
    /// session entry lives without a heartbeat.
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        node_id: String,
        incarnation: String,
        ttl: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            node_id,
            incarnation,
            ttl,
            scripts: Scripts::new(),
            local: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
            reap_failures: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// This process's incarnation id.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// The key names this registry uses.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// How often `refresh` should run: ttl / 4.
    pub fn heartbeat_every(&self) -> Duration {
        // Never zero: a zero period would panic in `tokio::time::interval`.
        (self.ttl / 4).max(Duration::from_millis(1))
    }

    /// Reaper closes that failed since start (each is retried next tick).
    pub fn reap_failures(&self) -> u64 {
        self.reap_failures.load(Ordering::Relaxed)
    }

    /// At start: records this incarnation as the node's current one and
    /// returns the sessions the previous incarnation of this node id left
    /// behind, for the caller to close at once through
    /// `ChatService::close_session` (contacts hear offline, lastSeen is
    /// recorded). The previous incarnation's set empties as those closes
    /// run, and Redis deletes it then; members whose entry is already gone
    /// are dropped here.
    ///
    /// # Errors
    /// A [`PortError`] when Redis fails or does not answer.
    pub async fn claim_node(&self) -> Result<Vec<(User, SessionId)>, PortError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.node(&self.node_id))
            .arg(&self.incarnation)
            .arg("GET");
        let mut conn = self.conn.clone();
        let previous: Option<String> =
            bounded("claim", REDIS_TIMEOUT, cmd.query_async(&mut conn)).await?;
        let Some(previous) = previous.filter(|p| *p != self.incarnation) else {
            return Ok(Vec::new());
        };
        let mut inv = self.scripts.claim.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(&previous);
        let flat: Vec<String> = self.run("claim", &inv).await?;
        let mut out = Vec::new();
        for t in flat.chunks_exact(3) {
            let (user, session) = (UserId::new(&t[0]), SessionId::new(&t[2]));
            if let Some(user) = self.named(user, &t[1], &session).await {
                out.push((user, session));
            }
        }
        info!(
            previous = %previous,
            sessions = out.len(),
            "claimed the node id from its previous incarnation"
        );
        Ok(out)
    }

    /// Heartbeat: pushes the expiry of every session this process opened and
    /// has not closed, re-adding entries that are missing (Redis restarted,
    /// or another node reaped them during an outage) without the limit
    /// check; also refreshes each user's online score and name.
    ///
    /// # Errors
    /// A [`PortError`] when Redis fails or does not answer; some batches may
    /// have been applied.
    pub async fn refresh(&self) -> Result<(), PortError> {
        let _gate = self.gate.write().await;
        let sessions: Vec<_> = self
            .lock()
            .iter()
            .map(|((u, s), n)| (u.clone(), s.clone(), n.clone()))
            .collect();
        let ttl = ttl_ms(self.ttl);
        for batch in sessions.chunks(REFRESH_BATCH) {
            let mut inv = self.scripts.refresh.prepare_invoke();
            inv.arg(self.keys.prefix()).arg(&self.incarnation).arg(ttl);
            for (user, session, name) in batch {
                inv.arg(user.as_str())
                    .arg(session.as_str())
                    .arg(name.as_str());
            }
            let _: i64 = self.run("refresh", &inv).await?;
        }
        Ok(())
    }

    /// Sessions anywhere in the cluster whose entry has expired, at most
    /// `max`, with their `User`, for the caller to close through
    /// `ChatService::close_session`. Removes nothing: `close` does, exactly
    /// once. Only users with no live entry left are listed (a user still
    /// connected elsewhere needs no offline; their leftovers go when they
    /// do), and this process's own sessions are skipped while it still
    /// serves them: the next refresh brings them back.
    ///
    /// # Errors
    /// A [`PortError`] when Redis fails or does not answer.
    pub async fn expired(&self, max: usize) -> Result<Vec<(User, SessionId)>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.expired.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(max);
        let flat: Vec<String> = self.run("expired", &inv).await?;
        let mut out = Vec::new();
        for q in flat.chunks_exact(4) {
            let (user, session) = (UserId::new(&q[0]), SessionId::new(&q[3]));
            let ours = q[2] == self.incarnation
                && self.lock().contains_key(&(user.clone(), session.clone()));
            if ours {
                continue;
            }
            if let Some(user) = self.named(user, &q[1], &session).await {
                out.push((user, session));
            }
        }
        Ok(out)
    }

    /// Graceful shutdown: removes whatever remains of this incarnation (its
    /// entries, its set, and the node key if it still names it), without
    /// announcing anything: sessions were closed through the service first.
    ///
    /// # Errors
    /// A [`PortError`] when Redis fails or does not answer.
    pub async fn leave(&self) -> Result<(), PortError> {
        let _gate = self.gate.write().await;
        self.lock().clear();
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(&self.incarnation)
            .arg(&self.node_id);
        let removed: i64 = self.run("leave", &inv).await?;
        info!(removed, "left the cluster's presence");
        Ok(())
    }

    /// Writes the activity recorded since the last flush, for every node to
    /// read.
    ///
    /// # Errors
    /// A [`PortError`] when Redis fails or does not answer; what was not
    /// written is kept for the next flush.
    pub async fn flush_touches(&self) -> Result<(), PortError> {
        let touched: Vec<(UserId, Timestamp)> =
            std::mem::take(&mut *self.touches()).into_iter().collect();
        for (i, batch) in touched.chunks(REFRESH_BATCH).enumerate() {
            let mut inv = self.scripts.touch.prepare_invoke();
            inv.arg(self.keys.prefix());
            for (user, at) in batch {
                inv.arg(user.as_str()).arg(at.millis());
            }
            if let Err(e) = self.run::<i64>("touch", &inv).await {
                let mut pending = self.touches();
                for (user, at) in touched.into_iter().skip(i * REFRESH_BATCH) {
                    let newest = pending.entry(user).or_insert(at);
                    *newest = (*newest).max(at);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn touches(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Timestamp>> {
        // A map of timestamps cannot be left half-changed.
        self.touched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // A panic while holding the lock leaves at worst a session more or
        // less to refresh, which the TTL and the reaper repair.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, PortError> {
        let mut conn = self.conn.clone();
        bounded(op, REDIS_TIMEOUT, inv.invoke_async(&mut conn)).await
    }

    /// The `User` for an entry, or `None` (after closing the entry quietly)
    /// when its hash lost the name, which only a partial data loss in Redis
    /// can cause: nobody could be told about it anyway.
    async fn named(&self, id: UserId, name: &str, session: &SessionId) -> Option<User> {
        match Username::parse(name) {
            Ok(username) => Some(User { id, username }),
            Err(_) => {
                warn!(user = %id, session = %session, "presence entry without a valid name; dropped");
                if let Err(e) = self.close(&id, session).await {
                    warn!(error = %e, "dropping a nameless presence entry failed");
                }
                None
            }
        }
    }
}

/// Runs one Redis call for at most `limit`, turning its failure into a
/// `PortError` that names the operation only (never the URL or a secret).
async fn bounded<T>(
    op: &'static str,
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PortError(anyhow!("redis presence {op}: {e}"))),
        Err(_) => Err(PortError(anyhow!(
            "redis presence {op}: no answer within {limit:?}"
        ))),
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

fn status_name(status: ActiveStatus) -> &'static str {
    match status {
        ActiveStatus::Online => "online",
        ActiveStatus::Away => "away",
    }
}

#[async_trait]
impl PresenceRegistry for ClusterPresence {
    async fn open(
        &self,
        user: &User,
        session: &SessionId,
        now: Timestamp,
        limit: usize,
    ) -> Result<bool, OpenSessionError> {
        let mut inv = self.scripts.open.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(&self.incarnation)
            .arg(user.id.as_str())
            .arg(session.as_str())
            .arg(user.username.as_str())
            .arg(now.millis())
            .arg(limit)
            .arg(ttl_ms(self.ttl));
        let answer: i64 = self.run("open", &inv).await?;
        if answer < 0 {
            return Err(TooManySessions { limit }.into());
        }
        self.lock()
            .insert((user.id.clone(), session.clone()), user.username.clone());
        Ok(answer == 1)
    }

    async fn close(&self, user: &UserId, session: &SessionId) -> Result<bool, PortError> {
        let _gate = self.gate.read().await;
        // Forgotten first, even if Redis fails: the session is over here,
        // and its entry then expires and is reaped.
        self.lock().remove(&(user.clone(), session.clone()));
        let mut inv = self.scripts.close.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(user.as_str())
            .arg(session.as_str());
        let mut conn = self.conn.clone();
        let went_offline: i64 =
            bounded("close", CLOSE_TIMEOUT, inv.invoke_async(&mut conn)).await?;
        Ok(went_offline == 1)
    }

    async fn set_status(
        &self,
        user: &UserId,
        status: ActiveStatus,
        now: Timestamp,
    ) -> Result<Option<(LiveStatus, bool)>, PortError> {
        let mut inv = self.scripts.set_status.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(user.as_str())
            .arg(status_name(status))
            .arg(now.millis());
        let answer: i64 = self.run("set_status", &inv).await?;
        let live = LiveStatus {
            status,
            last_active: now,
        };
        Ok((answer >= 0).then_some((live, answer == 1)))
    }

    async fn touch(&self, user: &UserId, now: Timestamp) -> Result<(), PortError> {
        let mut touched = self.touches();
        let newest = touched.entry(user.clone()).or_insert(now);
        *newest = (*newest).max(now);
        Ok(())
    }

    async fn live(&self, users: &[UserId]) -> Result<HashMap<UserId, LiveStatus>, PortError> {
        let mut out = HashMap::new();
        for batch in users.chunks(LIVE_BATCH) {
            let mut inv = self.scripts.live.prepare_invoke();
            inv.arg(self.keys.prefix());
            for user in batch {
                inv.arg(user.as_str());
            }
            let flat: Vec<String> = self.run("live", &inv).await?;
            for t in flat.chunks_exact(3) {
                let status = match t[1].as_str() {
                    "away" => ActiveStatus::Away,
                    _ => ActiveStatus::Online,
                };
                let active = t[2].parse::<i64>().map_err(|_| {
                    PortError(anyhow!("redis presence live: bad active time {:?}", t[2]))
                })?;
                let user = UserId::new(&t[0]);
                // This node's activity not yet flushed is newer still.
                let pending = self.touches().get(&user).copied();
                let stored = Timestamp::from_millis(active);
                let last_active = pending.map_or(stored, |p| stored.max(p));
                out.insert(
                    user,
                    LiveStatus {
                        status,
                        last_active,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn online_users(&self, limit: usize) -> Result<Vec<User>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.online.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(limit);
        let flat: Vec<String> = self.run("online_users", &inv).await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|p| {
                let username = Username::parse(&p[1]).ok()?;
                Some(User {
                    id: UserId::new(&p[0]),
                    username,
                })
            })
            .collect())
    }
}

/// Runs the heartbeat (every ttl/4) and the reaper (every second) until
/// aborted, after claiming the node id and closing the previous
/// incarnation's sessions through the service.
pub fn spawn_tasks(
    presence: Arc<ClusterPresence>,
    service: Arc<ChatService>,
    reaped: Counter,
) -> JoinHandle<()> {
    tokio::spawn(run_tasks(presence, reaped, move |caller: Caller| {
        let service = service.clone();
        async move { service.close_session(&caller).await }
    }))
}

/// The loop behind [`spawn_tasks`], with the close left to the caller so
/// that tests can run it without a `ChatService`.
async fn run_tasks<F, Fut>(presence: Arc<ClusterPresence>, reaped: Counter, mut close: F)
where
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    let mut claimed = claim(&presence, &mut close).await;
    let mut heartbeat = tokio::time::interval(presence.heartbeat_every());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reaper = tokio::time::interval(REAP_EVERY);
    reaper.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failed heartbeat is retried every reaper tick rather than a whole
    // heartbeat later, so that after an outage this node re-asserts its
    // sessions before other nodes' reapers close them.
    let mut behind = false;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => behind = !heartbeat_once(&presence).await,
            _ = reaper.tick() => {
                if !claimed {
                    claimed = claim(&presence, &mut close).await;
                }
                if behind {
                    behind = !heartbeat_once(&presence).await;
                }
                if let Err(e) = presence.flush_touches().await {
                    warn!(error = %e, "cannot record activity in Redis");
                }
                reap(&presence, &reaped, &mut close).await;
            }
        }
    }
}

async fn heartbeat_once(presence: &ClusterPresence) -> bool {
    match presence.refresh().await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e.0, "presence heartbeat failed");
            false
        }
    }
}

/// Claims the node id and closes what its previous incarnation left; false
/// when Redis failed, to be tried again.
async fn claim<F, Fut>(presence: &ClusterPresence, close: &mut F) -> bool
where
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    match presence.claim_node().await {
        Ok(left) => {
            for (user, session) in left {
                if let Err(e) = close(Caller { user, session }).await {
                    // Its entry expires and the reaper closes it later.
                    warn!(error = %e, "closing a session of the previous incarnation failed");
                }
            }
            true
        }
        Err(e) => {
            warn!(error = %e.0, "claiming the node id failed");
            false
        }
    }
}

/// Closes expired entries, batch after batch while batches come back full
/// and make progress. Returns how many closes succeeded.
async fn reap<F, Fut>(presence: &ClusterPresence, reaped: &Counter, close: &mut F) -> usize
where
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    let mut done = 0;
    for _ in 0..REAP_BATCHES_PER_TICK {
        let batch = match presence.expired(REAP_BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e.0, "listing expired presence entries failed");
                break;
            }
        };
        let full = batch.len() == REAP_BATCH;
        let mut progress = false;
        for (user, session) in batch {
            match close(Caller { user, session }).await {
                Ok(()) => {
                    reaped.inc();
                    done += 1;
                    progress = true;
                }
                Err(e) => {
                    presence.reap_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "closing an expired session failed");
                }
            }
        }
        if !full || !progress {
            break;
        }
    }
    done
}

#[cfg(test)]
pub(crate) mod test_redis;

#[cfg(test)]
mod tests;
