//! A Redis server of a test's own: a `redis-server` child on a free
//! loopback port, with nothing persisted, killed when the value is dropped.
//! A test that owns its Redis can restart it (the cluster's outage tests)
//! and never sees another test's channels or keys.
//!
//! Without `redis-server` the tests that need it are skipped with a
//! message on standard error; under `CI=true` they fail instead.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a starting server may take to answer `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running `redis-server` owned by one test.
pub struct TestRedis {
    child: Option<Child>,
    /// The loopback port it listens on, kept across restarts.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TestRedis {
    /// Starts a server on a free port and waits until it answers; `None`
    /// when `redis-server` is not installed and this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when `redis-server` is missing, and when the server
    /// does not answer within 10 s.
    pub async fn start() -> Option<Self> {
        if !installed("redis-server") {
            skip_or_fail("redis-server not found");
            return None;
        }
        let port = free_port();
        let mut redis = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.spawn().await;
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/`, for `CONFAB_REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL, so nothing is said to its clients) and
    /// leaves the port closed until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, after `stop`.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        self.spawn().await;
    }

    /// Kills the server and starts an empty one on the same port, as a
    /// crashed and restarted Redis would be.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns what it printed
    /// (e.g. `cli(&["CLIENT", "KILL", "TYPE", "pubsub"])`).
    ///
    /// # Panics
    /// When `redis-cli` cannot be run or fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        if !answers_ping(self.port, START_LIMIT).await {
            self.stop();
            panic!(
                "redis-server did not answer on port {} within {START_LIMIT:?}: {}",
                self.port,
                log_tail(&self.dir.path().join("redis.log"))
            );
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `program` can be run (it answers `-v`).
pub(crate) fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Outside CI: says once, on the process's standard error, that the
/// cluster tests are skipped. Under `CI=true`: fails the test.
pub(crate) fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true needs it: {why}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // eprintln! from tests that pass, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "cluster tests skipped: {why}; they pass without running \
             (CI=true makes this a failure)"
        );
    });
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().unwrap().port()
}

/// Whether a Redis on `port` answers `PING` within `limit`.
async fn answers_ping(port: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let ping = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            conn.write_all(b"PING\r\n").await?;
            let mut buf = [0; 7];
            conn.read_exact(&mut buf).await?;
            std::io::Result::Ok(&buf == b"+PONG\r\n")
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The last lines of a log file, for a failure message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
