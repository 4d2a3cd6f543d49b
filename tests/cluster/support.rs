//! The cluster under test (nodes on one PostgreSQL schema and one Redis),
//! watched sessions that send pipelined traffic, and the check of what each
//! session received against the store, which is the truth.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::common::seaweed;
pub use crate::common::{Account, Backend, Client, TestNginx, TestRedis, TestServer, WAIT};

/// The JWT secret every node shares, so a token from one is good on all.
pub const SECRET: &str = "a-secret-shared-by-every-node";

/// Short presence TTL, resync period and probe interval, so that the
/// tests that wait on them run in seconds.
pub const FAST: &[(&str, &str)] = &[
    ("CONFAB_PRESENCE_TTL_SECS", "3"),
    ("CONFAB_CLUSTER_RESYNC_SECS", "2"),
    ("CONFAB_CLUSTER_PROBE_SECS", "2"),
];

/// Long enough for a resync pass to have delivered a duplicate, if one
/// were coming, after a session looked complete.
pub const LINGER: Duration = Duration::from_millis(2_500);

/// How long every session may take to become complete: several resync
/// periods, on a busy machine.
pub const COMPLETE_WITHIN: Duration = Duration::from_secs(25);

/// Nodes on one PostgreSQL schema, one Redis and one S3 bucket, each with
/// the shared secret and its own node id (`n1`, `n2`, ...).
pub struct Cluster {
    /// The Redis every node uses.
    pub redis: TestRedis,
    /// The nodes, `n1` first.
    pub nodes: Vec<TestServer>,
    /// Each node's settings, to start it again as the same node.
    envs: Vec<Vec<(String, String)>>,
    /// The folder every node keeps files in (cluster mode needs one they
    /// share; a test may name another store).
    _files: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes with the `FAST` settings and their files in a fresh
    /// bucket of a SeaweedFS S3 server; `None` (skipped) as `start_with`,
    /// or without weed outside CI.
    pub async fn start_on_s3(n: usize) -> Option<Self> {
        let files_url = seaweed::bucket().await?;
        let settings: Vec<(&str, &str)> = FAST
            .iter()
            .copied()
            .chain([("CONFAB_FILES_URL", files_url.as_str())])
            .collect();
        Self::start_with(n, &settings, &[]).await
    }

    /// `n` nodes with the `FAST` settings.
    pub async fn start(n: usize) -> Option<Self> {
        Self::start_with(n, FAST, &[]).await
    }

    /// `n` nodes with `settings` on each, and `per_node[i]` on node `i`
    /// only; `None` (the test is skipped) when Redis, PostgreSQL or `weed`
    /// is missing outside CI.
    pub async fn start_with(
        n: usize,
        settings: &[(&str, &str)],
        per_node: &[&[(&str, &str)]],
    ) -> Option<Self> {
        let redis = TestRedis::start().await?;
        let files = tempfile::tempdir().expect("a temporary folder");
        let files_url = files.path().display().to_string();
        let envs: Vec<Vec<(String, String)>> = (0..n)
            .map(|i| {
                let node_id = format!("n{}", i + 1);
                let mut env = vec![
                    ("CONFAB_REDIS_URL", redis.url()),
                    ("CONFAB_JWT_SECRET", SECRET.to_owned()),
                    ("CONFAB_NODE_ID", node_id),
                    ("CONFAB_FILES_URL", files_url.clone()),
                    // Tests pipeline far beyond a person's request rate.
                    ("CONFAB_RATE_PER_SEC", "100000".to_owned()),
                    ("CONFAB_RATE_BURST", "100000".to_owned()),
                    ("CONFAB_FILES_URL", files_url.clone()),
                ];
                let own = per_node.get(i).copied().unwrap_or_default();
                env.extend(settings.iter().chain(own).map(|&(k, v)| (k, v.to_owned())));
                env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            })
            .collect();
        let first = TestServer::start_on(Backend::Postgres, &pairs(&envs[0])).await?;
        let mut nodes = vec![first];
        for env in &envs[1..] {
            let node = nodes[0].start_peer(&pairs(env)).await;
            nodes.push(node);
        }
        Some(Self {
            redis,
            nodes,
            envs,
            _files: files,
        })
    }

    /// Starts node `i` again after `kill9` or `terminate`, on its port
    /// and with its settings, so that it rejoins as the same node id.
    pub async fn resume(&mut self, i: usize) {
        let env = pairs(&self.envs[i]);
        self.nodes[i].resume_with(&env).await;
    }

    /// Registers a user (through node 0; the store is shared).
    pub async fn register(&self, name: &str) -> Account {
        self.nodes[0].register(name).await
    }

    /// `node`'s metric `series`, e.g. `confab_cluster_resyncs_total{reason="probe"}`.
    pub async fn metric(&self, node: usize, series: &str) -> f64 {
        metric(&self.nodes[node], series).await
    }

    /// Every node's log lines that mention `needle`, for failure messages.
    pub fn logs_with(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for line in node.logs.lock().unwrap().iter() {
                if line.contains(needle) {
                    found.push(format!("n{}: {line}", i + 1));
                }
            }
        }
        found
    }
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The value of `series` in `node`'s `/metrics`: a full series with labels
/// (`name{reason="probe"}`), or a bare name, which sums all its series.
/// An absent series is 0.
pub async fn metric(node: &TestServer, series: &str) -> f64 {
    metric_in(&node.metrics_text().await, series)
}

/// `metric` over an exposition already fetched.
pub fn metric_in(text: &str, series: &str) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches =
            key == series || (!series.contains('{') && key.starts_with(&format!("{series}{{")));
        if matches {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// What a session sends to, one message a turn each.
#[derive(Debug, Clone)]
pub enum Target {
    /// `sendPrivateMessage` to this user id.
    User(String),
    /// `sendMessage` into this conversation id.
    Room(String),
}

/// One WebSocket session under watch.
pub struct Session {
    /// Who it is and where, e.g. `u3@n2` (unique among the test's sessions;
    /// its clientMsgIds start with it).
    pub label: String,
    /// Its user.
    pub user: Account,
    /// The node index it is connected to.
    pub node: usize,
    /// Its client.
    pub client: Client,
    /// Every `message` it received as an event, in order of arrival.
    pub got: Vec<Value>,
    /// What it sends to in each wave.
    pub targets: Vec<Target>,
    /// The conversations it must account for, from `getConversations`.
    conversations: Vec<String>,
    /// Each conversation's last seq when the session was opened: what is
    /// at or below it is history, not owed as an event.
    baseline: HashMap<String, u64>,
}

impl Session {
    /// Connects `user` to node `node` and waits until the session is
    /// registered (its first reply comes from the running session, which
    /// starts after registration), so that every message committed from
    /// now on is owed to it as an event; what came before is its baseline.
    pub async fn open(cluster: &Cluster, node: usize, user: &Account, label: &str) -> Self {
        let client = cluster.nodes[node].connect(user).await;
        Self::settled(client, node, user, label).await
    }

    /// A session around an already connected client (welcome consumed).
    pub async fn settled(mut client: Client, node: usize, user: &Account, label: &str) -> Self {
        let listed = client.ack("getConversations", json!({})).await;
        let baseline = listed["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["lastSeq"].as_u64().unwrap(),
                )
            })
            .collect();
        Self {
            label: label.to_owned(),
            user: user.clone(),
            node,
            client,
            got: Vec::new(),
            targets: Vec::new(),
            conversations: Vec::new(),
            baseline,
        }
    }

    /// Sends `per` messages to each target, pipelined, each with a
    /// clientMsgId of its own, and returns the acknowledged messages.
    ///
    /// # Panics
    /// When a send is not acknowledged.
    pub async fn send_wave(&mut self, tag: &str, per: usize) -> Vec<Value> {
        let ids = self.fire(tag, per).await;
        self.collect(ids).await
    }

    /// The acknowledged messages of sends written by `fire`.
    ///
    /// # Panics
    /// When a send is not acknowledged.
    pub async fn collect(&mut self, ids: Vec<String>) -> Vec<Value> {
        let mut acked = Vec::new();
        for id in ids {
            let reply = self.client.reply_to(&id).await;
            assert_eq!(reply["type"], "ack", "{}: {reply}", self.label);
            acked.push(reply["content"]["message"].clone());
        }
        acked
    }

    /// Writes the sends of a wave without waiting for their replies;
    /// returns the request ids.
    pub async fn fire(&mut self, tag: &str, per: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for k in 0..per {
            for (t, target) in self.targets.clone().iter().enumerate() {
                let client_msg_id = format!("{}/{tag}/{k}/{t}", self.label);
                let body = format!("{} {tag} {k} to {t}", self.label);
                let id = match target {
                    Target::User(to) => {
                        let content = json!({"to": to, "body": body, "clientMsgId": client_msg_id});
                        self.client
                            .send_request("sendPrivateMessage", content)
                            .await
                    }
                    Target::Room(conversation) => {
                        let content = json!({"conversationId": conversation, "body": body,
                                             "clientMsgId": client_msg_id});
                        self.client.send_request("sendMessage", content).await
                    }
                };
                ids.push(id);
            }
        }
        ids
    }

    /// Whether this session sent `message` itself (it has the ack, not
    /// an event), acknowledged or not.
    pub fn sent(&self, message: &Value) -> bool {
        message["clientMsgId"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{}/", self.label)))
    }

    /// Reads frames for at most `limit`, keeping the `message` events;
    /// stops early once `done` holds.
    async fn read(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.client.next_frame_within(left).await {
                Some(frame) if frame["type"] == "message" => {
                    self.got.push(frame["content"]["message"].clone());
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Reads until the connection is gone (its node died), keeping the
    /// `message` events that had arrived.
    pub async fn read_until_closed(&mut self) {
        self.read(WAIT, |_| false).await;
    }

    /// The last seq of `conversation` when the session opened (0 for a
    /// conversation that did not exist then).
    pub fn baseline(&self, conversation: &str) -> u64 {
        self.baseline.get(conversation).copied().unwrap_or(0)
    }

    /// Asks the server which conversations this session must account for.
    pub async fn learn_conversations(&mut self) {
        let ack = self.client.ack("getConversations", json!({})).await;
        self.conversations = ack["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
    }

    /// The messages of the store owed to this session as events, by
    /// conversation and seq, that it has not received.
    fn missing(&self, truth: &Truth) -> Vec<(String, u64)> {
        let got: HashSet<(&str, u64)> = self
            .got
            .iter()
            .map(|m| (m["conversationId"].as_str().unwrap(), seq(m)))
            .collect();
        let mut missing = Vec::new();
        for c in &self.conversations {
            let history = self.baseline(c);
            for m in truth[c].iter().filter(|m| seq(m) > history) {
                if !self.sent(m) && !got.contains(&(c.as_str(), seq(m))) {
                    missing.push((c.clone(), seq(m)));
                }
            }
        }
        missing
    }

    /// Asserts that the session received every message of its
    /// conversations committed after it opened that it did not send,
    /// exactly once, in seq order, each as the store has it, and nothing
    /// else.
    pub fn assert_complete(&self, truth: &Truth) {
        let mut by_conversation: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in &self.got {
            let c = m["conversationId"].as_str().unwrap();
            assert!(
                self.conversations.iter().any(|mine| mine == c),
                "{} got a message of a conversation it is not in: {m}",
                self.label
            );
            let stored = truth[c]
                .iter()
                .find(|s| seq(s) == seq(m))
                .unwrap_or_else(|| panic!("{} got a message the store lacks: {m}", self.label));
            assert_eq!(
                (&stored["id"], &stored["body"], &stored["senderId"]),
                (&m["id"], &m["body"], &m["senderId"]),
                "{}: the event differs from the store",
                self.label
            );
            assert!(
                !self.sent(m),
                "{} got its own message as an event: {m}",
                self.label
            );
            by_conversation.entry(c).or_default().push(seq(m));
        }
        for (c, seqs) in &by_conversation {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{}: message events of {c} out of order or repeated: {seqs:?}",
                self.label
            );
        }
        let missing = self.missing(truth);
        assert!(
            missing.is_empty(),
            "{} never got {} message(s) (conversation, seq): {missing:?}; got {:?}",
            self.label,
            missing.len(),
            by_conversation
        );
    }
}

/// Every message of each conversation, as the store has it, oldest first.
pub type Truth = HashMap<String, Vec<Value>>;

/// The seq of a message object.
pub fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().unwrap()
}

/// ann on n1 sending to bob on n2, the two sessions in that order.
pub async fn ann_to_bob(cluster: &Cluster) -> Vec<Session> {
    let (ann, bob) = (cluster.register("ann").await, cluster.register("bob").await);
    let mut sessions = vec![
        Session::open(cluster, 0, &ann, "ann@n1").await,
        Session::open(cluster, 1, &bob, "bob@n2").await,
    ];
    sessions[0].targets = vec![Target::User(bob.id.clone())];
    sessions
}

/// `n` users (`user0`, `user1`, ...), user i with a session on node
/// i % nodes (labelled `u{i}@n{node}`) that sends to user (i + k) % n for
/// each k of `partners`.
pub async fn spread(
    cluster: &Cluster,
    n: usize,
    partners: &[usize],
) -> (Vec<Account>, Vec<Session>) {
    let mut users = Vec::new();
    for i in 0..n {
        users.push(cluster.register(&format!("user{i}")).await);
    }
    let mut sessions = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let node = i % cluster.nodes.len();
        let mut s = Session::open(cluster, node, user, &format!("u{i}@n{}", node + 1)).await;
        for k in partners {
            s.targets.push(Target::User(users[(i + k) % n].id.clone()));
        }
        sessions.push(s);
    }
    (users, sessions)
}

/// Learns each session's conversations and reads the store's history of
/// every one of them (through the first session that is in it).
pub async fn truth_for(sessions: &mut [Session]) -> Truth {
    let mut truth = Truth::new();
    for s in sessions.iter_mut() {
        s.learn_conversations().await;
        for c in s.conversations.clone() {
            if let Entry::Vacant(slot) = truth.entry(c) {
                let stored = s.client.history_after(slot.key(), 0).await;
                let seqs: Vec<u64> = stored.iter().map(seq).collect();
                assert_eq!(
                    seqs,
                    (1..=seqs.len() as u64).collect::<Vec<_>>(),
                    "seqs of {} in the store are not dense",
                    slot.key()
                );
                slot.insert(stored);
            }
        }
    }
    truth
}

/// Waits (up to `COMPLETE_WITHIN`) until every session has received
/// every message owed to it, reads on for `LINGER` to catch late
/// duplicates, then asserts each session complete, once, in order.
/// Returns the store's truth.
pub async fn assert_all_complete(sessions: &mut [Session]) -> Truth {
    let truth = truth_for(sessions).await;
    join_all(sessions.iter_mut().map(|s| {
        let truth = &truth;
        async move {
            s.read(COMPLETE_WITHIN, |s| s.missing(truth).is_empty())
                .await;
        }
    }))
    .await;
    join_all(sessions.iter_mut().map(|s| s.read(LINGER, |_| false))).await;
    for s in sessions.iter() {
        s.assert_complete(&truth);
    }
    truth
}

/// Runs one wave of `per` sends on every session at once.
pub async fn wave(sessions: &mut [Session], tag: &str, per: usize) {
    join_all(sessions.iter_mut().map(|s| s.send_wave(tag, per))).await;
}

/// Writes a wave of `per` sends on every session without waiting for the
/// replies; `collect_all` takes them.
pub async fn fire_all(sessions: &mut [Session], tag: &str, per: usize) -> Vec<Vec<String>> {
    let mut ids = Vec::new();
    for s in sessions.iter_mut() {
        ids.push(s.fire(tag, per).await);
    }
    ids
}

/// Waits for the acks of the sends `fire_all` wrote.
pub async fn collect_all(sessions: &mut [Session], ids: Vec<Vec<String>>) {
    join_all(sessions.iter_mut().zip(ids).map(|(s, ids)| s.collect(ids))).await;
}

/// Creates a public room through `owner` and has every other session's
/// user join it; every session then sends into it. Returns its id.
pub async fn room_of_all(sessions: &mut [Session], name: &str) -> String {
    let room = sessions[0]
        .client
        .ack("createRoom", json!({"name": name, "visibility": "public"}))
        .await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut joined = HashSet::from([sessions[0].user.id.clone()]);
    for s in sessions.iter_mut() {
        if joined.insert(s.user.id.clone()) {
            s.client
                .ack("joinRoom", json!({"conversationId": room}))
                .await;
        }
        s.targets.push(Target::Room(room.clone()));
    }
    room
}

/// The presence status of each of `users`, as `client`'s node reports it.
pub async fn statuses(client: &mut Client, users: &[&Account]) -> Vec<String> {
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let ack = client.ack("getPresence", json!({"userIds": ids})).await;
    users
        .iter()
        .map(|u| {
            ack["presence"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["userId"] == u.id.as_str())
                .map_or("missing".to_owned(), |p| {
                    p["status"].as_str().unwrap().to_owned()
                })
        })
        .collect()
}

/// Whether a frame is a `presence` event saying `user` is `status`.
pub fn presence_is<'a>(user: &'a Account, status: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |f| {
        f["type"] == "presence"
            && f["content"]["presence"]["userId"] == user.id.as_str()
            && f["content"]["presence"]["status"] == status
    }
}
