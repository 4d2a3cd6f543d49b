//! Test harness: starts the real `confab` binary on port 0 with a fresh
//! data folder (and, on PostgreSQL, a fresh schema), and talks to it with a
//! real HTTP client and real WebSocket clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
}

impl TestServer {
    /// Starts a server with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `CONFAB_*` settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
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
        let mut s = Self::start_in(&dir, env).await;
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
            .env("CONFAB_AUTH_RATE_BURST", "100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
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
                json!({"username": name, "password": "password123"}),
            )
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
        Account {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            username: body["user"]["username"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Opens a session with header auth and consumes the welcome.
    pub async fn connect(&self, account: &Account) -> Client {
        let mut c = Client::connect(&self.ws_url(), &account.token)
            .await
            .unwrap_or_else(|status| panic!("connect {}: HTTP {status}", account.username));
        let welcome = c.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
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

/// A WebSocket client that matches replies to requests by id and keeps
/// every other frame for later inspection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    buffered: Vec<Value>,
    /// The close code, once the server closed the connection.
    pub closed: Option<u16>,
}

impl Client {
    /// Opens a WebSocket with `Authorization: Bearer`; Err(status) when refused.
    pub async fn connect(url: &str, token: &str) -> Result<Client, u16> {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        Self::open(req).await
    }

    /// Opens a WebSocket with a prepared request; Err(status) when refused.
    pub async fn open(req: tungstenite::handshake::client::Request) -> Result<Client, u16> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Client {
                ws,
                next_id: 0,
                buffered: Vec::new(),
                closed: None,
            }),
            Err(tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    /// Sends a raw frame.
    pub async fn send(&mut self, frame: Message) {
        self.ws.send(frame).await.unwrap();
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// Sends a request with a fresh id and returns its reply (ack or error).
    pub async fn request(&mut self, kind: &str, content: Value) -> Value {
        let id = self.send_request(kind, content).await;
        self.reply_to(&id).await
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, kind: &str, content: Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let frame = json!({"type": kind, "id": id, "content": content});
        self.send_text(&frame.to_string()).await;
        id
    }

    /// Waits for the reply to request `id`.
    pub async fn reply_to(&mut self, id: &str) -> Value {
        self.wait_for(|f| f["id"] == id && (f["type"] == "ack" || f["type"] == "error"))
            .await
    }

    /// The ack content of a request; panics on an error reply.
    pub async fn ack(&mut self, kind: &str, content: Value) -> Value {
        let reply = self.request(kind, content).await;
        assert_eq!(reply["type"], "ack", "{kind}: {reply}");
        reply["content"].clone()
    }

    /// The error code of a request that must fail.
    pub async fn error_code(&mut self, kind: &str, content: Value) -> String {
        let reply = self.request(kind, content).await;
        assert_eq!(reply["type"], "error", "{kind} should fail: {reply}");
        reply["content"]["code"].as_str().unwrap().to_owned()
    }

    /// The next frame from the server, buffered ones first.
    pub async fn next_frame(&mut self) -> Value {
        if !self.buffered.is_empty() {
            return self.buffered.remove(0);
        }
        self.read_frame(WAIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {WAIT:?} (closed: {:?})", self.closed))
    }

    async fn read_frame(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(_) => {
                    if self.closed.is_none() {
                        self.closed = Some(1006);
                    }
                    return None;
                }
            }
        }
    }

    /// The first frame (buffered or new) matching `pred`; others are kept.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.buffered.iter().position(&pred) {
            return self.buffered.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.read_frame(left).await else {
                panic!(
                    "no matching frame within {WAIT:?}; closed: {:?}; kept: {:?}",
                    self.closed, self.buffered
                );
            };
            if pred(&frame) {
                return frame;
            }
            self.buffered.push(frame);
        }
    }

    /// The next event of type `kind`.
    pub async fn event(&mut self, kind: &str) -> Value {
        self.wait_for(|f| f["type"] == kind).await["content"].clone()
    }

    /// Reads for `window` and fails if a frame matching `pred` arrives.
    pub async fn expect_none(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) {
        if let Some(f) = self.buffered.iter().find(|f| pred(f)) {
            panic!("unexpected frame {f}");
        }
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.read_frame(left).await {
                Some(f) if pred(&f) => panic!("unexpected frame {f}"),
                Some(f) => self.buffered.push(f),
                None => return,
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed_with(&mut self, limit: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + limit;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "not closed within {limit:?}");
            if let Some(f) = self.read_frame(left).await {
                self.buffered.push(f);
            }
        }
        self.closed.unwrap()
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Drain until the server answers the close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }

    /// Reads raw frames (no JSON parsing, so it keeps up with floods)
    /// until a `message` event has been seen and then `linger` has passed,
    /// or `limit` runs out; returns how many `message` events came.
    pub async fn count_message_events(&mut self, limit: Duration, linger: Duration) -> usize {
        let mut deadline = tokio::time::Instant::now() + limit;
        let mut seen = 0;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Text(t) = frame
                && t.starts_with(r#"{"type":"message""#)
            {
                seen += 1;
                deadline = deadline.min(tokio::time::Instant::now() + linger);
            }
        }
        seen
    }

    /// Frames received but not yet consumed.
    pub fn buffered(&self) -> &[Value] {
        &self.buffered
    }
}

/// Declares an end-to-end test once per backend, as `NAME::sqlite` and
/// `NAME::postgres`, from `async fn NAME(backend: Backend)`; a test skipped
/// for want of PostgreSQL returns early (see `TestServer::start_on`).
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$test($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}
pub(crate) use on_each_backend;
