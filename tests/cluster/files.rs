//! Files across the cluster (docs/files.md): the nodes share one S3 bucket
//! (the other cluster tests share a folder, which cluster mode also takes),
//! so a file uploaded through one node is read through any other, with
//! links either node signs; and a node in cluster mode refuses to start on
//! the default disk store, which no other node would see.

use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Account, Backend, Cluster, SECRET, TestRedis, TestServer};

/// Uploads `bytes` as `name` (already percent-encoded) through `node`.
async fn upload(node: &TestServer, user: &Account, name: &str, bytes: &[u8]) -> Value {
    let res = node
        .http()
        .post(node.url(&format!("/api/v1/files?name={name}")))
        .bearer_auth(&user.token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "upload {name}: {body}");
    body["file"].clone()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// An absolute URL for a link a node gave (relative without files_base_url).
fn on(node: &TestServer, link: &str) -> String {
    if link.starts_with("http") {
        link.to_owned()
    } else {
        node.url(link)
    }
}

/// `GET /api/v1/files/{id}{suffix}` on `node` as `user`: the `302`'s
/// Location.
async fn api_link(node: &TestServer, user: &Account, id: &str, suffix: &str) -> String {
    let res = no_redirects()
        .get(node.url(&format!("/api/v1/files/{id}{suffix}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 302, "{id}{suffix}");
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// The status and bytes of a signed link, fetched from `node`.
async fn fetch(node: &TestServer, link: &str) -> (u16, Vec<u8>) {
    let res = no_redirects().get(on(node, link)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

/// A small PNG, so that a thumbnail is made.
fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("a PNG");
    out.into_inner()
}

#[tokio::test]
async fn a_file_uploaded_and_sent_through_one_node_is_downloaded_through_another() {
    let Some(cluster) = Cluster::start_on_s3(2).await else {
        return;
    };
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann = cluster.register("ann").await;
    let bob = cluster.register("bob").await;
    let eve = cluster.register("eve").await;
    // Not text, not an image: stored and served as it is.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = upload(n1, &ann, "report%20%C3%A9t%C3%A9.bin", &bytes).await;
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(file["size"], bytes.len());
    assert_eq!(
        file["sha256"].as_str().unwrap(),
        format!("{:x}", Sha256::digest(&bytes))
    );
    let picture = upload(n1, &ann, "cat.png", &png()).await;
    let picture_id = picture["id"].as_str().unwrap().to_owned();
    assert_eq!(picture["thumbnail"], true, "{picture}");

    let mut bob_on_n2 = n2.connect(&bob).await;
    let mut ann_on_n1 = n1.connect(&ann).await;
    let sent = ann_on_n1
        .ack(
            "sendPrivateMessage",
            json!({"to": bob.id, "attachments": [id, picture_id]}),
        )
        .await["message"]
        .clone();
    assert_eq!(sent["attachments"], json!([file, picture]));
    let event = bob_on_n2.event("message").await["message"].clone();
    assert_eq!(event["attachments"], sent["attachments"]);

    // The API link on node 2, the signed link on node 2: node 1's bytes.
    let link = api_link(n2, &bob, &id, "").await;
    assert!(link.contains(&format!("/files/{id}?")), "{link}");
    let (status, got) = fetch(n2, &link).await;
    assert_eq!(status, 200);
    assert!(
        got == bytes,
        "node 2 served other bytes ({} bytes)",
        got.len()
    );
    // A link one node signed is good on the other: they share the secret.
    let (status, got) = fetch(n1, &link).await;
    assert_eq!((status, got.len()), (200, bytes.len()));
    // The thumbnail node 1 made is there for node 2 too.
    let thumb = api_link(n2, &bob, &picture_id, "/thumbnail").await;
    let (status, got) = fetch(n2, &thumb).await;
    assert_eq!(status, 200);
    let thumbnail = image::load_from_memory(&got).expect("an image");
    assert_eq!((thumbnail.width(), thumbnail.height()), (320, 240));

    // The JSON form of the link, on node 2, describes the same file.
    let (status, answer) = n2
        .get(
            &format!("/api/v1/files/{id}?redirect=false"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["file"], file);
    let (status, got) = fetch(n2, answer["url"].as_str().unwrap()).await;
    assert_eq!((status, got.len()), (200, bytes.len()));

    // Someone outside the conversation finds nothing on either node.
    for node in [n1, n2] {
        let (status, answer) = node
            .get(
                &format!("/api/v1/files/{id}?redirect=false"),
                Some(&eve.token),
            )
            .await;
        assert_eq!(status, 404, "{answer}");
    }
}

#[tokio::test]
async fn a_node_in_cluster_mode_refuses_to_start_on_the_default_disk_store() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let url = redis.url();
    let env = [
        ("CONFAB_REDIS_URL", url.as_str()),
        ("CONFAB_JWT_SECRET", SECRET),
        ("CONFAB_NODE_ID", "n1"),
    ];
    let Some((status, output)) = TestServer::refused_start(Backend::Postgres, &env).await else {
        return;
    };
    assert!(!status.success(), "it started: {output}");
    assert!(output.contains("files_url"), "{output}");
}
