//! The load generator at tiny scale against a real server, run in this
//! process: each scenario runs, prints exactly one JSON object with
//! `--json`, and finds nothing lost.

use std::path::Path;
use std::process::Command;

use confab::app::Application;
use confab::config::Settings;
use serde_json::Value;

/// A confab server serving in this process, on a port of its own.
struct TestServer {
    port: u16,
    _data: tempfile::TempDir,
}

impl TestServer {
    /// `http://127.0.0.1:PORT` + path.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process the server runs in: this one.
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// Starts a server on the test's runtime with the end-to-end harness's
/// settings (cheap hashes, no throttling of one address's many users).
async fn server() -> TestServer {
    let data = tempfile::tempdir().unwrap();
    let settings = Settings::from_overrides(&[
        ("port", "0"),
        ("data_dir", data.path().to_str().unwrap()),
        ("argon2_memory_kib", "64"),
        ("argon2_iterations", "1"),
        ("auth_rate_per_sec", "100000"),
        ("auth_rate_burst", "100000"),
        ("rate_per_sec", "100000"),
        ("rate_burst", "100000"),
    ])
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    // Until the test's runtime drops it: SIGTERM stays the test process's.
    tokio::spawn(app.run_until(std::future::pending()));
    TestServer { port, _data: data }
}

/// Runs confab-bench with `--json` against `s`; returns its JSON output.
async fn bench(s: &TestServer, cache: &Path, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab-bench"));
    cmd.args(["--url", &s.url(""), "--json"])
        .args(["--server-pid", &s.pid().to_string()])
        .arg("--token-cache")
        .arg(cache)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run confab-bench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "confab-bench {args:?} failed: {stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object expected on stdout: {stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("JSON on stdout");
    assert!(v.is_object(), "{v}");
    v
}

fn assert_cpu_figures(v: &Value) {
    assert!(v["server"]["cpu_secs"].is_number(), "server cpu: {v}");
    assert!(v["server"]["rss_after_kib"].as_u64().unwrap() > 0, "{v}");
    assert!(v["tool"]["cpu_secs"].is_number(), "tool cpu: {v}");
    // The server's threads by name (comm, 15 bytes): async workers and
    // the SQLite writer at least.
    for name in ["tokio-rt-worker", "confab-sqlite-w"] {
        let t = &v["server_threads"][name];
        assert!(t["cpu_cores"].is_number(), "{name}: {v}");
        assert!(t["voluntary_switches_per_sec"].is_number(), "{name}: {v}");
        assert!(t["involuntary_switches_per_sec"].is_number(), "{name}: {v}");
    }
}

fn assert_clean_run(v: &Value, lost_key: &str) {
    assert!(v["acked"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["sent"], v["acked"], "{v}");
    assert_eq!(v[lost_key], 0, "{v}");
    assert_eq!(v["delivered_without_ack"], 0, "{v}");
    assert_eq!(v["unanswered"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert!(v["ack_latency_us"]["p50"].as_u64().unwrap() > 0, "{v}");
    assert!(v["delivery_latency_us"]["p999"].is_u64(), "{v}");
    assert!(v["slowest_windows"].is_array(), "{v}");
    assert_cpu_figures(v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_connect_holds_sessions_and_reports_memory() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokens.json");
    let v = bench(
        &s,
        &cache,
        &["connect", "--clients", "4", "--hold-secs", "0.2"],
    )
    .await;
    assert_eq!(v["scenario"], "connect");
    assert_eq!(v["params"]["clients"], 4);
    assert_eq!(v["params"]["sched"], "batch", "{v}");
    assert_eq!(v["connected"], 4, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["open_after_hold"], 4, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert_eq!(v["setup"]["registered"], 4, "{v}");
    assert!(v["server_memory"]["bytes_per_session"].is_i64(), "{v}");
    assert!(
        v["server_memory"]["bytes_per_session_from_start"].is_i64(),
        "{v}"
    );
    assert!(
        v["server_memory"]["rss_at_start_kib"].as_u64() > Some(0),
        "{v}"
    );
    assert_cpu_figures(&v);

    // A second run takes the tokens from the cache.
    let v = bench(
        &s,
        &cache,
        &[
            "connect",
            "--clients",
            "4",
            "--hold-secs",
            "0",
            "--sched",
            "normal",
        ],
    )
    .await;
    assert_eq!(v["params"]["sched"], "normal", "{v}");
    assert_eq!(v["setup"]["cached"], 4, "{v}");
    assert_eq!(v["setup"]["registered"], 0, "{v}");
    assert_eq!(v["connected"], 4, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_dm_closed_loop_loses_nothing() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokens.json");
    let v = bench(
        &s,
        &cache,
        &["dm", "--clients", "4", "--rate", "0", "--secs", "1"],
    )
    .await;
    assert_eq!(v["scenario"], "dm");
    assert_eq!(v["params"]["mode"], "closed_loop");
    assert_eq!(v["params"]["in_flight"], 8);
    assert_clean_run(&v, "never_delivered");
    assert_eq!(v["delivered"], v["acked"], "{v}");
    assert!(v["server"]["cpu_us_per_msg"].is_number(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_dm_open_loop_loses_nothing() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokens.json");
    let v = bench(
        &s,
        &cache,
        &["dm", "--clients", "4", "--rate", "50", "--secs", "1"],
    )
    .await;
    assert_eq!(v["params"]["mode"], "open_loop");
    assert_clean_run(&v, "never_delivered");
    assert_eq!(v["delivered"], v["acked"], "{v}");
    // About 50 messages in the second (each sender starts at a random phase).
    let acked = v["acked"].as_u64().unwrap();
    assert!((40..=60).contains(&acked), "{v}");
    // A lateness per wake-up of a sender; a wake-up sends what is due.
    let wakes = v["send_lag_latency_us"]["count"].as_u64().unwrap();
    assert!((1..=acked).contains(&wakes), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_room_reaches_every_member() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokens.json");
    let v = bench(
        &s,
        &cache,
        &[
            "room",
            "--members",
            "4",
            "--senders",
            "2",
            "--rate",
            "20",
            "--secs",
            "1",
        ],
    )
    .await;
    assert_eq!(v["scenario"], "room");
    assert_eq!(v["setup"]["members"], 4, "{v}");
    assert_eq!(v["setup"]["senders"], 2, "{v}");
    assert_clean_run(&v, "lost");
    // Each message reaches the 3 other members.
    assert_eq!(
        v["delivered"].as_u64().unwrap(),
        3 * v["acked"].as_u64().unwrap(),
        "{v}"
    );
    assert!(v["server"]["cpu_us_per_delivery"].is_number(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_files_round_trips_a_file_and_measures_the_disk() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokens.json");
    let scratch = dir.path().to_str().unwrap().to_owned();
    let v = bench(
        &s,
        &cache,
        &["files", "--size", "3MiB", "--scratch-dir", &scratch],
    )
    .await;
    assert_eq!(v["scenario"], "files");
    assert_eq!(v["params"]["size"], 3 << 20, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert_eq!(v["upload"]["sha256_ok"], true, "{v}");
    assert_eq!(v["download"]["sha256_ok"], true, "{v}");
    assert_eq!(v["download"]["bytes"], 3 << 20, "{v}");
    for key in [
        "upload",
        "download",
        "copy_fsync",
        "write_fsync",
        "hash_copy_fsync",
        "sha256",
    ] {
        assert!(v["mb_per_sec"][key].as_f64() > Some(0.0), "{key}: {v}");
    }
    let rss = &v["server_rss_upload"];
    assert!(rss["baseline_kib"].as_u64() > Some(0), "{v}");
    assert!(
        rss["peak_kib"].as_u64() >= rss["baseline_kib"].as_u64(),
        "{v}"
    );
    assert!(rss["samples"].as_u64() >= Some(2), "{v}");
    // The kernel's peak, reset at the baseline: this process's own.
    assert!(
        rss["hwm_kib"].as_u64() >= rss["baseline_kib"].as_u64(),
        "{v}"
    );
    assert!(v["upload"]["server_cpu_secs"].is_number(), "{v}");
    // The scratch folder is left as it was found.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "tokens.json")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
