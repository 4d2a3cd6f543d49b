//! The helpers the cluster tests stand on, checked on their own: a Redis
//! of the test's own that restarts on its port, and nginx that passes
//! HTTP and WebSocket traffic to a node unchanged.

use serde_json::json;

use crate::common::Client;
use crate::support::{TestNginx, TestRedis, TestServer};

#[tokio::test]
async fn the_test_redis_answers_and_restarts_empty_on_its_port() {
    let Some(mut redis) = TestRedis::start().await else {
        return;
    };
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    let port = redis.port;
    redis.restart().await;
    assert_eq!(redis.port, port);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.cli(&["GET", "k"]), "", "nothing survives a restart");
    redis.stop();
    let refused = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "PING"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("PONG"),
        "a stopped Redis does not answer"
    );
    redis.resume().await;
    assert_eq!(redis.cli(&["PING"]), "PONG");
}

#[tokio::test]
async fn nginx_passes_http_and_websocket_traffic_to_a_node() {
    let s = TestServer::start().await;
    let Some(nginx) = TestNginx::start(&[s.port]).await else {
        return;
    };
    let http = reqwest::Client::new();
    let register = |name: &'static str| {
        http.post(nginx.url("/api/v1/register"))
            .json(&json!({"username": name, "password": "stapled-battery-9"}))
            .send()
    };
    let ann = register("ann").await.unwrap();
    assert_eq!(ann.status(), 201, "{}", nginx.error_log());
    let ann: serde_json::Value = ann.json().await.unwrap();
    let bob: serde_json::Value = register("bob").await.unwrap().json().await.unwrap();
    let login = http
        .post(nginx.url("/api/v1/login"))
        .json(&json!({"username": "bob", "password": "stapled-battery-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let bob_token = login.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut a = Client::connect(&nginx.ws_url(), ann["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(a.next_frame().await["type"], "welcome");
    let mut b = Client::connect(&nginx.ws_url(), &bob_token).await.unwrap();
    assert_eq!(b.next_frame().await["type"], "welcome");
    let sent = a
        .ack(
            "sendPrivateMessage",
            json!({"to": bob["user"]["id"], "body": "through the proxy"}),
        )
        .await;
    let got = b.event("message").await;
    assert_eq!(got["message"], sent["message"]);
    let users = http
        .get(nginx.url("/api/v1/users?prefix=ann"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(users["users"][0]["online"], true, "{users}");
    let unauthorized = Client::connect(&nginx.ws_url(), "not-a-token").await;
    assert_eq!(unauthorized.err(), Some(401));
}
