//! The contract's core flows through nginx round-robin in front of three
//! nodes, as a deployment would run them: consecutive connections land on
//! different nodes, and the clients cannot tell.

use serde_json::{Value, json};

use crate::common::Client;
use crate::support::{Cluster, TestNginx, metric};

/// Plain HTTP through nginx.
struct Front<'a> {
    nginx: &'a TestNginx,
    http: reqwest::Client,
}

impl Front<'_> {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.nginx.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.nginx.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// Registers `name`; returns its id.
    async fn register(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/register",
                json!({"username": name, "password": "stapled-battery-9"}),
            )
            .await;
        assert_eq!(status, 201, "{body}; nginx: {}", self.nginx.error_log());
        body["user"]["id"].as_str().unwrap().to_owned()
    }

    /// Logs `name` in; returns a token.
    async fn login(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/login",
                json!({"username": name, "password": "stapled-battery-9"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A session through nginx, welcome consumed.
    async fn connect(&self, token: &str) -> Result<Client, u16> {
        let mut client = Client::connect(&self.nginx.ws_url(), token).await?;
        assert_eq!(client.next_frame().await["type"], "welcome");
        // Its first reply comes once the node has registered it.
        client.ack("ping", json!({})).await;
        Ok(client)
    }
}

/// `confab_sessions` of every node.
async fn sessions(cluster: &Cluster) -> Vec<f64> {
    let mut all = Vec::new();
    for node in &cluster.nodes {
        all.push(metric(node, "confab_sessions").await);
    }
    all
}

#[tokio::test]
async fn through_nginx_three_nodes_serve_the_core_of_the_contract() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let Some(nginx) = TestNginx::start(&ports).await else {
        return;
    };
    let front = Front {
        nginx: &nginx,
        http: reqwest::Client::new(),
    };
    let mut ids = Vec::new();
    for name in ["ann", "bob", "cat", "dan"] {
        ids.push(front.register(name).await);
    }
    let (bob_id, cat_id) = (&ids[1], &ids[2]);
    let mut tokens = Vec::new();
    for name in ["ann", "bob", "cat", "dan"] {
        tokens.push(front.login(name).await);
    }

    // Three connections in a row, each on a node of its own.
    let mut clients = Vec::new();
    let mut placed = Vec::new();
    for token in &tokens[..3] {
        let before = sessions(&cluster).await;
        clients.push(front.connect(token).await.unwrap());
        let after = sessions(&cluster).await;
        let node = (0..3).find(|&i| after[i] == before[i] + 1.0);
        placed.push(node.unwrap_or_else(|| panic!("sessions {before:?} then {after:?}")));
    }
    placed.sort_unstable();
    assert_eq!(placed, [0, 1, 2], "round-robin spreads the sessions");
    let [a, b, c] = &mut clients[..] else {
        unreachable!()
    };

    // Whichever node answers, the others' users are online, dan is not.
    for _ in 0..3 {
        let (status, body) = front.get("/api/v1/users?prefix=", &tokens[0]).await;
        assert_eq!(status, 200, "{body}");
        let online: Vec<(&str, bool)> = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["username"].as_str().unwrap(), u["online"] == true))
            .collect();
        assert_eq!(
            online,
            [("ann", true), ("bob", true), ("cat", true), ("dan", false)]
        );
    }

    // A private message, its history, and the read receipt.
    let sent = a
        .ack(
            "sendPrivateMessage",
            json!({"to": bob_id, "body": "hello bob"}),
        )
        .await["message"]
        .clone();
    assert_eq!(b.event("message").await["message"], sent);
    let direct = sent["conversationId"].clone();
    let page = b.ack("getHistory", json!({"conversationId": direct})).await;
    assert_eq!(page["messages"], json!([sent]));
    b.ack("markRead", json!({"conversationId": direct, "seq": 1}))
        .await;
    let receipt = a.event("receipt").await;
    assert_eq!(
        receipt,
        json!({"conversationId": direct, "userId": bob_id, "seq": 1})
    );

    // A room: join, invite, a message to both, history, leave.
    let room = a
        .ack(
            "createRoom",
            json!({"name": "lobby", "visibility": "public"}),
        )
        .await["conversation"]["id"]
        .clone();
    b.ack("joinRoom", json!({"conversationId": room})).await;
    let joined = a.event("member").await;
    assert_eq!(
        (&joined["action"], &joined["user"]["id"]),
        (&json!("joined"), &json!(bob_id))
    );
    a.ack(
        "inviteToRoom",
        json!({"conversationId": room, "userId": cat_id}),
    )
    .await;
    let invited = c.event("member").await;
    assert_eq!(
        (&invited["action"], &invited["conversationId"]),
        (&json!("invited"), &room)
    );
    let said = a
        .ack(
            "sendMessage",
            json!({"conversationId": room, "body": "hi all"}),
        )
        .await["message"]
        .clone();
    assert_eq!(b.event("message").await["message"], said);
    assert_eq!(c.event("message").await["message"], said);
    let page = c.ack("getHistory", json!({"conversationId": room})).await;
    assert_eq!(page["messages"], json!([said]));

    // Presence across nodes: cat steps away, ann (in the room) hears it.
    c.ack("setStatus", json!({"status": "away"})).await;
    let away = a
        .wait_for(|f| f["type"] == "presence" && f["content"]["presence"]["userId"] == *cat_id)
        .await;
    assert_eq!(away["content"]["presence"]["status"], "away");
    let presence = b.ack("getPresence", json!({"userIds": [cat_id]})).await;
    assert_eq!(presence["presence"][0]["status"], "away");

    b.ack("leaveRoom", json!({"conversationId": room})).await;
    let left = a
        .wait_for(|f| f["type"] == "member" && f["content"]["action"] == "left")
        .await;
    assert_eq!(left["content"]["user"]["id"], json!(bob_id));
    assert_eq!(
        b.error_code("sendMessage", json!({"conversationId": room, "body": "x"}))
            .await,
        "forbidden"
    );

    // Ten sessions of dan's spread over the nodes; an eleventh is refused
    // wherever it lands.
    let before = sessions(&cluster).await;
    let mut dans = Vec::new();
    for _ in 0..10 {
        dans.push(front.connect(&tokens[3]).await.unwrap());
    }
    let after = sessions(&cluster).await;
    for i in 0..3 {
        assert!(
            after[i] - before[i] >= 3.0,
            "dan's sessions per node: {before:?} then {after:?}"
        );
    }
    for _ in 0..3 {
        let refused = Client::connect(&nginx.ws_url(), &tokens[3]).await;
        assert_eq!(refused.err(), Some(429));
    }
}
