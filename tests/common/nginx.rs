//! nginx as the load balancer in front of test servers: a config of its
//! own in a temp dir (round-robin upstream, WebSocket upgrade), one
//! foreground process on a free loopback port, killed when the value is
//! dropped. The system's nginx service is never touched.
//!
//! Without nginx the tests that need it are skipped with a message on
//! standard error; under `CI=true` they fail instead.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::{free_port, installed, log_tail, skip_or_fail};

/// How long a starting nginx may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running nginx that balances over a set of local ports.
pub struct TestNginx {
    child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TestNginx {
    /// Starts nginx round-robin over `127.0.0.1:P` for each of `ports`;
    /// `None` when nginx is not installed and this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when nginx is missing, and when it does not accept
    /// connections within 10 s.
    pub async fn start(ports: &[u16]) -> Option<Self> {
        let Some(program) = program() else {
            skip_or_fail("nginx not found (apt-get install nginx)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(
            &conf,
            config(&dir.path().display().to_string(), port, ports),
        )
        .unwrap();
        let error_log = dir.path().join("error.log");
        let child = Command::new(program)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // Before it reads the config nginx opens its built-in error
            // log (/var/log/nginx), which must not be touched.
            .arg("-e")
            .arg(&error_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(nginx);
            }
            let exited = nginx.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                nginx.stop();
                panic!(
                    "nginx did not start on port {port} ({exited:?}): {}",
                    log_tail(&error_log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The WebSocket endpoint through nginx.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// nginx's error log so far, for a failure message.
    pub fn error_log(&self) -> String {
        log_tail(&self.dir.path().join("error.log"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The nginx binary: on the PATH, or where Debian puts it (/usr/sbin is
/// not on every user's PATH).
fn program() -> Option<PathBuf> {
    if installed("nginx") {
        return Some("nginx".into());
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    installed(debian.to_str()?).then_some(debian)
}

/// One foreground process (no master, no daemon) with every file it writes
/// under `dir`, round-robin over `upstreams`, WebSocket upgrades passed on.
fn config(dir: &str, port: u16, upstreams: &[u16]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p};\n"))
        .collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    # No ip_hash: consecutive requests go to the next node in turn.
    upstream confab {{
{servers}    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://confab;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"#
    )
}
