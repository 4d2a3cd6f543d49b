//! The server half of the test harness: starts the real `confab` binary
//! on port 0 with a fresh data folder (and, on PostgreSQL, a fresh schema),
//! stops and restarts it, and calls its HTTP API.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

#[path = "../../src/adapters/store/pg_scratch.rs"]
mod pg_scratch;

use pg_scratch::ScratchSchema;

/// Which database a test server stores its data in.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// The default: an SQLite file in the data folder.
    Sqlite,
    /// A schema of its own on the test PostgreSQL server.
    Postgres,
}

/// How long any single expected frame may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// Its data folder (kept alive as long as the server value).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Its PostgreSQL URL and schema, shared with servers started again on it.
    postgres: Option<(String, Arc<ScratchSchema>)>,
    /// Everything it logged.
    pub logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// A registered user with a token.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user's id.
    pub id: String,
    /// The name as registered.
    pub username: String,
    /// A bearer token.
    pub token: String,
    /// The device session the token belongs to.
    pub session: String,
    /// That session's refresh token.
    pub refresh: String,
}

impl TestServer {
    /// Starts a server with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `CONFAB_*` settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_fresh(env, None).await
    }

    /// Starts a server with extra settings whose process may open at most
    /// `open_files` files (soft and hard limit, so it cannot raise it).
    pub async fn start_with_open_files(open_files: u64, env: &[(&str, &str)]) -> Self {
        Self::start_fresh(env, Some(open_files)).await
    }

    async fn start_fresh(env: &[(&str, &str)], open_files: Option<u64>) -> Self {
        // A memory-backed folder where there is one: fsync costs nothing
        // there, and a killed process loses nothing it wrote either way.
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(&dir, env, open_files).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `backend`; `None` when it is PostgreSQL and that
    /// is not reachable outside CI (the test is then skipped).
    pub async fn start_on(backend: Backend, env: &[(&str, &str)]) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::start_with(env).await),
            Backend::Postgres => {
                let schema = Arc::new(ScratchSchema::create()?);
                Some(Self::start_on_schema(schema, env).await)
            }
        }
    }

    /// Starts a server on an existing PostgreSQL schema, with a data folder
    /// of its own, as a second node of a cluster would be.
    async fn start_on_schema(schema: Arc<ScratchSchema>, env: &[(&str, &str)]) -> Self {
        let url = schema.url();
        // The caller's settings come after, so that a test may override it.
        let mut all = vec![("CONFAB_DATABASE_URL", url.as_str())];
        all.extend_from_slice(env);
        let mut s = Self::start_with(&all).await;
        s.postgres = Some((url.clone(), schema));
        s
    }

    /// The PostgreSQL URL it was given, if on PostgreSQL.
    pub fn database_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(url, _)| url.as_str())
    }

    /// Starts a server on this one's data folder and database, as after a
    /// restart.
    pub async fn start_again(&self) -> Self {
        let Some((url, schema)) = &self.postgres else {
            return Self::start_in(&self.data_dir, &[]).await;
        };
        let mut s = Self::start_in(&self.data_dir, &[("CONFAB_DATABASE_URL", url)]).await;
        s.postgres = Some((url.clone(), schema.clone()));
        s
    }

    /// Starts this server again after `terminate` or `kill9`, on the same
    /// port, data folder and database, so that clients which knew it (a
    /// browser page, say) find it where it was.
    pub async fn resume(&mut self) {
        self.resume_with(&[]).await;
    }

    /// `resume` with extra `CONFAB_*` settings (a cluster node's, say,
    /// which it needs again to rejoin as the same node).
    pub async fn resume_with(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "the server is still running");
        let port = self.port.to_string();
        let mut env = vec![("CONFAB_PORT", port.as_str())];
        if let Some((url, _)) = &self.postgres {
            env.push(("CONFAB_DATABASE_URL", url.as_str()));
        }
        env.extend_from_slice(extra);
        let mut again = Self::start_in(&self.data_dir, &env).await;
        assert_eq!(again.port, self.port);
        self.child = again.child.take();
        self.logs = again.logs.clone();
    }

    /// Starts another server on this one's PostgreSQL schema with a data
    /// folder of its own, as another node of a cluster would be.
    ///
    /// # Panics
    /// When this server is not on PostgreSQL.
    pub async fn start_peer(&self, env: &[(&str, &str)]) -> Self {
        let (_, schema) = self.postgres.as_ref().expect("a server on PostgreSQL");
        Self::start_on_schema(schema.clone(), env).await
    }

    /// Starts a server on an existing data folder (for restarts).
    pub async fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, env, None).await
    }

    /// Runs a server that is expected not to start, on a fresh data folder
    /// (and a fresh schema on PostgreSQL) with `env`: how it exited and
    /// everything it printed. `None` when PostgreSQL is not reachable
    /// outside CI.
    ///
    /// # Panics
    /// When it does not exit within 30 s (it started after all).
    pub async fn refused_start(
        backend: Backend,
        env: &[(&str, &str)],
    ) -> Option<(ExitStatus, String)> {
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(ScratchSchema::create()?),
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let url = schema.as_ref().map(ScratchSchema::url);
        let mut all: Vec<(&str, &str)> = url
            .iter()
            .map(|u| ("CONFAB_DATABASE_URL", u.as_str()))
            .collect();
        all.extend_from_slice(env);
        let out = tmp.path().join("output.log");
        let mut cmd = command(tmp.path(), &all);
        let log = std::fs::File::create(&out).expect("output file");
        cmd.stdout(log.try_clone().expect("output file"))
            .stderr(log);
        let mut child = cmd.spawn().expect("start confab");
        let status =
            tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
                .await
                .expect("waiting for confab");
        let output = std::fs::read_to_string(&out).unwrap_or_default();
        Some((status, output))
    }

    async fn spawn(data_dir: &Path, env: &[(&str, &str)], open_files: Option<u64>) -> Self {
        let mut cmd = command(data_dir, env);
        if let Some(limit) = open_files {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe, as code between fork
            // and exec must be, and touches only the child.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start confab");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let port_tx = port_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                        let _ = port_tx.send(port);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let port = match port_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!("server did not start: {:?}", logs.lock().unwrap());
            }
        };
        Self {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            postgres: None,
            logs,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// A plain HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An HTTP client whose connections come from the local address
    /// `from` (another loopback address, to be another client).
    pub fn http_from(&self, from: IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(from)
            .timeout(WAIT)
            .build()
            .unwrap()
    }

    /// A TCP connection to the server from the local address `from`.
    pub async fn tcp_from(&self, from: IpAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let server = SocketAddr::from(([127, 0, 0, 1], self.port));
        tokio::time::timeout(WAIT, socket.connect(server))
            .await
            .expect("TCP connect in time")
            .unwrap()
    }

    /// POSTs a JSON body; returns status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// GETs with an optional bearer token; returns status and JSON body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Registers a user (name made unique per call) and returns it.
    pub async fn register(&self, name: &str) -> Account {
        let (status, body) = self
            .post(
                "/api/v1/register",
                json!({"username": name, "password": "stapled-battery-9"}),
            )
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
        Account {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            username: body["user"]["username"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            session: body["sessionId"].as_str().unwrap().to_owned(),
            refresh: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs `account` in again from a device named `device`: a second
    /// device session, with tokens of its own.
    pub async fn login_on(&self, account: &Account, device: &str) -> Account {
        let (status, body) = self
            .post(
                "/api/v1/login",
                json!({"username": account.username, "password": "stapled-battery-9", "deviceName": device}),
            )
            .await;
        assert_eq!(
            status, 200,
            "login {} on {device}: {body}",
            account.username
        );
        Account {
            token: body["token"].as_str().unwrap().to_owned(),
            session: body["sessionId"].as_str().unwrap().to_owned(),
            refresh: body["refreshToken"].as_str().unwrap().to_owned(),
            ..account.clone()
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_exit(&mut child, Duration::from_secs(30))
    }

    /// Waits for the process to exit after a signal sent elsewhere.
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_exit(&mut child, Duration::from_secs(30))
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let res = self.http.get(self.url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// The `confab` command with the test defaults and `env`, in `data_dir`,
/// and no `CONFAB_*` setting of the caller's environment.
fn command(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(data_dir)
        .env("CONFAB_PORT", "0")
        .env("CONFAB_DATA_DIR", data_dir)
        .env("CONFAB_LOG", "info")
        // Cheap hashes keep registration fast; the algorithm is unchanged.
        .env("CONFAB_ARGON2_MEMORY_KIB", "64")
        .env("CONFAB_ARGON2_ITERATIONS", "1")
        // Tests register many users from one address.
        .env("CONFAB_AUTH_RATE_PER_SEC", "100000")
        .env("CONFAB_AUTH_RATE_BURST", "100000");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
