//! Just enough of the W3C WebDriver protocol to drive headless Chromium
//! through chromedriver: sessions, navigation, elements, keys, scripts and
//! screenshots. Plain JSON over HTTP with the `reqwest` the other tests
//! already use, so the browser tests add no dependency to build.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// How long a condition may take to come true before a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The key WebDriver types for Enter.
pub const ENTER: &str = "\u{E007}";
/// The key WebDriver types for Tab.
pub const TAB: &str = "\u{E004}";
/// The key WebDriver types for the up arrow.
pub const ARROW_UP: &str = "\u{E013}";
/// The key WebDriver types for Escape.
pub const ESCAPE: &str = "\u{E00C}";
/// The key WebDriver types for Backspace.
pub const BACKSPACE: &str = "\u{E003}";
/// Control: held, when typed into an element, until `RELEASE`.
pub const CONTROL: &str = "\u{E009}";
/// Releases the modifier keys held while typing into an element.
pub const RELEASE: &str = "\u{E000}";

/// The W3C name of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, when both are installed.
pub struct Installed {
    chromium: PathBuf,
    driver: PathBuf,
}

impl Installed {
    /// Looks on `PATH` (and where Debian keeps the driver); `Err` names
    /// what is missing.
    pub fn find() -> Result<Self, String> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| on_path(name))
            .ok_or("chromium not found")?;
        let driver = on_path("chromedriver").ok_or("chromedriver not found")?;
        Ok(Self { chromium, driver })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/lib/chromium")])
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running chromedriver, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    http: reqwest::Client,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    pub async fn start(installed: &Installed) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&installed.driver)
            .arg(format!("--port={port}"))
            // A group of its own, so that dropping the driver also ends
            // the browsers it started, even after a failed test.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: installed.chromium.clone(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let status = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await;
            if let Ok(res) = status
                && let Ok(body) = res.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a new browser (a profile of its own: its own storage, its own
    /// user) with a window of `width` x `height` CSS pixels.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        self.open(width, height, None).await
    }

    /// Opens a new browser as a phone's: a touch screen `width` x `height`
    /// CSS pixels. (A headless window is never narrower than 500 pixels;
    /// an emulated phone's screen is as narrow as asked.)
    pub async fn phone(&self, width: u32, height: u32) -> Browser {
        let metrics = json!({"width": width, "height": height, "pixelRatio": 1.0, "touch": true});
        self.open(width, height, Some(json!({ "deviceMetrics": metrics })))
            .await
    }

    async fn open(&self, width: u32, height: u32, mobile: Option<Value>) -> Browser {
        let mut caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.chromium,
                        "args": [
                            "--headless=new",
                            // Root in a container has no user namespace to sandbox with.
                            "--no-sandbox",
                            "--disable-dev-shm-usage",
                            "--disable-gpu",
                            "--disable-extensions",
                            "--no-first-run",
                            "--hide-scrollbars",
                            "--force-device-scale-factor=1",
                            format!("--window-size={width},{height}"),
                        ],
                    },
                },
            },
        });
        if let Some(mobile) = mobile {
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] = mobile;
        }
        let res = answer(self.http.post(format!("{}/session", self.url)).json(&caps)).await;
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {res}"));
        Browser {
            http: self.http.clone(),
            session: format!("{}/session/{id}", self.url),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// chromedriver's JSON answer to a request.
async fn answer(req: reqwest::RequestBuilder) -> Value {
    req.send()
        .await
        .expect("chromedriver answers")
        .json()
        .await
        .expect("a JSON answer")
}

/// One browser window, driven over WebDriver.
pub struct Browser {
    http: reqwest::Client,
    session: String,
}

/// An element found on the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|(error, message)| panic!("WebDriver {path}: {error}: {message}"))
    }

    /// A command's value, or its error code and message.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = answer(req).await;
        match res["value"]["error"].as_str() {
            Some(error) => Err((error.to_owned(), res["value"]["message"].to_string())),
            None => Ok(res["value"].clone()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Loads `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and
    /// returns what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Waits until the JavaScript expression `condition` is truthy and
    /// returns its value; fails the test, saying `what`, after `WAIT`.
    pub async fn wait_for(&self, what: &str, condition: &str) -> Value {
        self.wait_for_within(what, condition, WAIT).await
    }

    /// `wait_for` with a time limit of its own.
    pub async fn wait_for_within(&self, what: &str, condition: &str, limit: Duration) -> Value {
        let script =
            format!("try {{ return ({condition}) || null; }} catch (e) {{ return null; }}");
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(&script, json!([])).await;
            if !value.is_null() {
                return value;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval(
                        "return document.body ? document.body.innerText : ''",
                        json!([]),
                    )
                    .await;
                panic!("waited {limit:?} for {what} ({condition}); the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the JavaScript expression `element` yields an element
    /// that is displayed, and returns it.
    pub async fn element(&self, what: &str, element: &str) -> Element {
        let found = self
            .wait_for(
                &format!("{what} to be shown"),
                &format!("(() => {{ const e = ({element}); return e && e.getClientRects().length > 0 && e; }})()"),
            )
            .await;
        Element(found[ELEMENT_KEY].as_str().expect("an element").to_owned())
    }

    /// Waits until an element matching `css` is on the page and displayed.
    pub async fn find(&self, css: &str) -> Element {
        self.element(css, &format!("document.querySelector({})", json!(css)))
            .await
    }

    /// Clicks what the JavaScript expression `element` yields, once it is
    /// shown; found again if the page replaced it in between.
    pub async fn click_element(&self, what: &str, element: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self.element(what, element).await;
            let path = format!("/element/{}/click", e.0);
            match self
                .try_call(reqwest::Method::POST, &path, Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err((error, _))
                    if error == "stale element reference" && Instant::now() < deadline => {}
                Err((error, message)) => panic!("WebDriver click on {what}: {error}: {message}"),
            }
        }
    }

    /// Clicks the element matching `css`, once it is shown.
    pub async fn click(&self, css: &str) {
        self.click_element(css, &format!("document.querySelector({})", json!(css)))
            .await;
    }

    /// Types `text` into the element matching `css` (after focusing it);
    /// `ENTER` and the other key codes may be part of it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await;
    }

    /// Chooses the file at `path` in the file input matching `css`, as the
    /// WebDriver standard does it (its value is the path); the input may
    /// be hidden behind a button of the page's own.
    pub async fn choose_file(&self, css: &str, path: &Path) {
        let found = self
            .wait_for(
                &format!("{css} on the page"),
                &format!("document.querySelector({})", json!(css)),
            )
            .await;
        let id = found[ELEMENT_KEY].as_str().expect("an element");
        let path = path.to_str().expect("a UTF-8 path");
        self.post(&format!("/element/{id}/value"), json!({ "text": path }))
            .await;
    }

    /// Empties the field matching `css`.
    pub async fn clear(&self, css: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{}/clear", e.0), json!({}))
            .await;
    }

    /// Types keys into whatever has the focus, as someone at a keyboard would.
    pub async fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", e.0),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The handles of the browser's windows and tabs.
    pub async fn windows(&self) -> Vec<String> {
        let value = self
            .call(reqwest::Method::GET, "/window/handles", None)
            .await;
        serde_json::from_value(value).expect("a list of window handles")
    }

    /// Sends the commands that follow to the window or tab `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.post("/window", json!({ "handle": handle })).await;
    }

    /// Resizes the window to `width` x `height`.
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }

    /// Closes the browser.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
