//! A real Redis for unit tests: the machine's (or `CONFAB_TEST_REDIS_URL`),
//! a fresh key prefix per test, and the keys deleted when the test ends.
//! Without a Redis the tests skip, except under CI where that is a failure.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection and a key prefix nobody else uses; deletes its keys on drop.
pub(crate) struct TestRedis {
    /// Commands connection to the test Redis.
    pub conn: ConnectionManager,
    /// This test's key prefix.
    pub prefix: String,
    url: String,
}

/// The test Redis URL.
pub(crate) fn url() -> String {
    std::env::var("CONFAB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Connects, or returns `None` after saying why the test is skipped (outside
/// CI only: with `CI=true` a missing Redis panics).
pub(crate) async fn connect() -> Option<TestRedis> {
    let url = url();
    match try_connect(&url).await {
        Ok(conn) => Some(TestRedis {
            conn,
            prefix: format!("confab-test-{}", uuid::Uuid::new_v4()),
            url,
        }),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("no Redis at {url} for the cluster presence tests: {e}")
        }
        Err(e) => {
            eprintln!("cluster presence tests skipped: no Redis at {url} ({e})");
            None
        }
    }
}

/// Another connection to the same Redis, as a second node would have.
pub(crate) async fn another(redis: &TestRedis) -> ConnectionManager {
    try_connect(&redis.url).await.expect("second connection")
}

async fn try_connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client, config),
    )
    .await??;
    Ok(conn)
}

impl Drop for TestRedis {
    // Synchronous, so that the keys go even when the test panicked.
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
