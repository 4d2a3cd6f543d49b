//! Browser tests: the web client served by the real server binary, driven
//! in headless Chromium over WebDriver (chromedriver), as people would use
//! it. Each test starts its own server and chromedriver; each person gets a
//! browser of their own, so their storage and their sessions are apart.
//!
//! They need Debian's `chromium` and `chromium-driver` packages. Without
//! them the tests pass without running and say so on standard error;
//! under `CI=true` that is a failure instead.

#[path = "../common/mod.rs"]
mod common;
mod ui;
mod webdriver;

mod blocking;
mod dead_link;
mod devices;
mod direct;
mod files;
mod reading;
mod reconnect;
mod rooms;
mod screenshot;
mod text;

use std::io::Write;
use std::sync::Once;

use common::TestServer;
use webdriver::{Driver, Installed};

/// A server and a chromedriver for one test, or `None` (after saying why)
/// when Chromium is not installed and this is not CI.
pub async fn setup(env: &[(&str, &str)]) -> Option<(TestServer, Driver)> {
    let installed = match Installed::find() {
        Ok(found) => found,
        Err(missing) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true needs the browser tests to run, and {missing}");
            }
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                // Straight to the process's stderr: the test harness
                // captures eprintln! from tests that pass.
                let _ = writeln!(
                    std::io::stderr(),
                    "browser tests skipped: {missing} (apt-get install chromium chromium-driver \
                     to run them; CI=true makes this a failure)"
                );
            });
            return None;
        }
    };
    let server = TestServer::start_with(env).await;
    let driver = Driver::start(&installed).await;
    Some((server, driver))
}
