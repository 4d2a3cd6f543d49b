//! The `files` scenario: one large file up through `POST /api/v1/files`
//! and down through its signed link (docs/files.md), streamed from and to
//! disk, beside what the disk itself does with the same bytes: the
//! physical limit of an upload on one machine.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use super::{Common, accounts};
use crate::report::Report;
use crate::stats::{ProcSample, proc_sample, reset_peak_rss, round, self_usage, status_kib};

/// The buffer of every read and write, the server's own staging buffer's size.
const CHUNK: usize = 256 * 1024;
/// The bound of issue 28: a 1 GiB upload raises the server's RSS by less.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// Parameters of the `files` scenario.
pub struct FileParams {
    /// Bytes of the file.
    pub size: u64,
    /// Where the file and the disk baselines go: a folder on the server's
    /// data disk, so that both meet the same disk.
    pub scratch: PathBuf,
    /// How often the server's RSS is read during a transfer.
    pub sample_every: Duration,
}

#[derive(Deserialize)]
struct Uploaded {
    file: UploadedFile,
}

#[derive(Deserialize)]
struct UploadedFile {
    id: String,
    size: u64,
    sha256: String,
}

/// `files`: upload and download throughput, the server's RSS during
/// both, and the same disk's copy, write and hash rates.
pub async fn files(c: Common, p: FileParams) -> Result<Report> {
    let mut report = Report::new("files", c.params.clone());
    let pid = match c.server_pids.first() {
        Some(&pid) => Some(pid),
        None => {
            let port = c.targets[0].addr.port();
            let found = tokio::task::spawn_blocking(move || pid_listening_on(port)).await?;
            if found.is_some() {
                report
                    .setup
                    .insert("server_pid_from_port".into(), json!(found));
            } else {
                report.warn(format!(
                    "no --server-pid and no readable process listens on port {port}: no server figures"
                ));
            }
            found
        }
    };
    let account = accounts(&c, 1, &mut report)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("no account"))?;
    let dir = p
        .scratch
        .join(format!("confab-bench-files-{:08x}", rand::random::<u32>()));
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    report
        .setup
        .insert("scratch".into(), json!(dir.display().to_string()));
    let result = measure(&c, &p, pid, &account.token, &dir, &mut report).await;
    let cleanup = dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(cleanup)).await;
    result?;
    Ok(report)
}

async fn measure(
    c: &Common,
    p: &FileParams,
    pid: Option<u32>,
    token: &str,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let size = p.size;
    let source = dir.join("source.bin");
    eprintln!(
        "confab-bench: writing a {size}-byte file in {}",
        dir.display()
    );
    let made = blocking({
        let source = source.clone();
        move || write_file(&source, size, rand::random())
    })
    .await?;
    report
        .setup
        .insert("source_secs".into(), json!(round(made, 3)));
    // Read back from the page cache, as the upload will read it: the rate
    // of SHA-256 alone, which the server's staging pays on every byte.
    let (want_sha, hash_secs) = blocking({
        let source = source.clone();
        move || hash_file(&source)
    })
    .await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = &c.targets[0].base;

    eprintln!("confab-bench: uploading");
    let tool_cpu = self_usage().0;
    let cpu_before = pid.and_then(proc_sample);
    let rss = RssTrace::start(pid, p.sample_every);
    let body_done = Arc::new(Mutex::new(None::<Instant>));
    let start = Instant::now();
    let file = tokio::fs::File::open(&source).await?;
    let stream = ReaderStream::with_capacity(file, CHUNK).inspect({
        let body_done = body_done.clone();
        let mut read = 0u64;
        move |chunk| {
            if let Ok(bytes) = chunk {
                read += bytes.len() as u64;
                if read >= size {
                    *body_done.lock().unwrap() = Some(Instant::now());
                }
            }
        }
    });
    let res = client
        .post(format!("{base}/api/v1/files?name=confab-bench.bin"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .context("POST /api/v1/files")?;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let up_secs = start.elapsed().as_secs_f64();
    let up_rss = rss.finish(pid);
    let cpu_after = pid.and_then(proc_sample);
    if status != 201 {
        bail!("POST /api/v1/files: HTTP {status} {text}");
    }
    let uploaded: Uploaded =
        serde_json::from_str(&text).with_context(|| format!("upload answer {text}"))?;
    let up_ok = uploaded.file.sha256 == want_sha && uploaded.file.size == size;
    if !up_ok {
        report.warn(format!(
            "the server stored {} bytes with SHA-256 {}, the file has {size} bytes with {want_sha}",
            uploaded.file.size, uploaded.file.sha256
        ));
    }
    let body_secs = body_done
        .lock()
        .unwrap()
        .map(|t| t.duration_since(start).as_secs_f64());
    let up_cpu = cpu_between(&cpu_before, &cpu_after);
    let up_tool = self_usage().0 - tool_cpu;

    eprintln!("confab-bench: downloading");
    let tool_cpu = self_usage().0;
    let rss = RssTrace::start(pid, p.sample_every);
    let start = Instant::now();
    let res = client
        .get(format!("{base}/api/v1/files/{}", uploaded.file.id))
        .bearer_auth(token)
        .send()
        .await
        .context("GET /api/v1/files/{id}")?;
    if res.status().as_u16() != 302 {
        let status = res.status().as_u16();
        bail!(
            "GET /api/v1/files/{{id}}: HTTP {status} {}, not a 302",
            res.text().await.unwrap_or_default()
        );
    }
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("a 302 without a Location"))?
        .to_owned();
    let link_secs = start.elapsed().as_secs_f64();
    let url = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else {
        format!("{base}{location}")
    };
    let cpu_before = pid.and_then(proc_sample);
    let fetch = Instant::now();
    let mut res = client.get(&url).send().await.context("GET /files/{id}")?;
    if res.status().as_u16() != 200 {
        let status = res.status().as_u16();
        bail!(
            "GET /files/{{id}}: HTTP {status} {}",
            res.text().await.unwrap_or_default()
        );
    }
    // Hashed and thrown away: the tool's disk stays out of the figure.
    let mut sha = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = res.chunk().await.context("reading the download")? {
        got += chunk.len() as u64;
        sha.update(&chunk);
    }
    let fetch_secs = fetch.elapsed().as_secs_f64();
    let down_secs = start.elapsed().as_secs_f64();
    let down_rss = rss.finish(pid);
    let cpu_after = pid.and_then(proc_sample);
    let down_cpu = cpu_between(&cpu_before, &cpu_after);
    let down_tool = self_usage().0 - tool_cpu;
    let got_sha = hex(&sha.finalize());
    let down_ok = got == size && got_sha == want_sha;
    if !down_ok {
        report.warn(format!(
            "downloaded {got} bytes with SHA-256 {got_sha}, uploaded {size} with {want_sha}"
        ));
    }

    eprintln!("confab-bench: the disk's own rates");
    let (copy_secs, hashed_copy_secs, write_secs) = blocking({
        let dir = dir.to_owned();
        let source = source.clone();
        move || {
            let copy = dir.join("copy.bin");
            let t = Instant::now();
            std::fs::copy(&source, &copy)?;
            File::open(&copy)?.sync_all()?;
            let copy_secs = t.elapsed().as_secs_f64();
            std::fs::remove_file(&copy)?;
            let hashed = dir.join("hashed.bin");
            let hashed_copy_secs = hashed_copy(&source, &hashed)?;
            std::fs::remove_file(&hashed)?;
            let written = dir.join("written.bin");
            let write_secs = write_file(&written, size, rand::random())?;
            std::fs::remove_file(&written)?;
            Ok((copy_secs, hashed_copy_secs, write_secs))
        }
    })
    .await?;

    let mbps = |secs: f64| round(size as f64 / secs.max(1e-9) / 1e6, 1);
    let cores = |cpu: Option<f64>, secs: f64| cpu.map(|c| round(c / secs.max(1e-9), 3));
    report.top(
        "mb_per_sec",
        json!({
            "upload": mbps(up_secs),
            "download": mbps(down_secs),
            "copy_fsync": mbps(copy_secs),
            "write_fsync": mbps(write_secs),
            "hash_copy_fsync": mbps(hashed_copy_secs),
            "sha256": mbps(hash_secs),
        }),
    );
    report.top(
        "upload",
        json!({
            "bytes": size,
            "secs": round(up_secs, 3),
            "body_sent_secs": body_secs.map(|s| round(s, 3)),
            "answer_after_body_secs": body_secs.map(|s| round(up_secs - s, 3)),
            "server_cpu_secs": up_cpu.map(|c| round(c, 3)),
            "server_cpu_cores": cores(up_cpu, up_secs),
            "tool_cpu_cores": round(up_tool / up_secs.max(1e-9), 3),
            "sha256_ok": up_ok,
        }),
    );
    report.top(
        "download",
        json!({
            "bytes": got,
            "secs": round(down_secs, 3),
            "link_ms": round(link_secs * 1e3, 2),
            "body_secs": round(fetch_secs, 3),
            "server_cpu_secs": down_cpu.map(|c| round(c, 3)),
            "server_cpu_cores": cores(down_cpu, fetch_secs),
            "tool_cpu_cores": round(down_tool / down_secs.max(1e-9), 3),
            "sha256_ok": down_ok,
        }),
    );
    report.top(
        "disk_secs",
        json!({
            "copy_fsync": round(copy_secs, 3),
            "write_fsync": round(write_secs, 3),
            "hash_copy_fsync": round(hashed_copy_secs, 3),
            "sha256": round(hash_secs, 3),
        }),
    );
    report.top("server_rss_upload", up_rss.json());
    report.top("server_rss_download", down_rss.json());
    if let Some(increase) = up_rss.increase_kib()
        && increase >= RSS_BOUND_KIB as i64
    {
        report.warn(format!(
            "the upload raised the server's RSS by {increase} KiB, the bound is {RSS_BOUND_KIB}"
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Writes `size` new pseudo-random bytes from `seed` to a new file at
/// `path` and syncs it; the seconds it took, less those spent making the
/// bytes. New bytes every run, as an upload brings: the server's store
/// then cannot find them already there, nor can a layer under the disk.
fn write_file(path: &Path, size: u64, seed: u64) -> io::Result<f64> {
    let mut buf = vec![0u8; CHUNK];
    let mut state = seed;
    let mut making = Duration::ZERO;
    let t = Instant::now();
    let mut f = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let made = Instant::now();
        fill_from(&mut state, &mut buf[..n]);
        making += made.elapsed();
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok((t.elapsed() - making).as_secs_f64())
}

/// splitmix64: plenty random for bytes no compressor or deduplication is
/// to see through, at memory speed.
fn fill_from(state: &mut u64, buf: &mut [u8]) {
    for word in buf.chunks_mut(8) {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
    }
}

/// The SHA-256 of a file (lowercase hex) and the seconds it took.
fn hash_file(path: &Path) -> io::Result<(String, f64)> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut sha = Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok((hex(&sha.finalize()), t.elapsed().as_secs_f64()))
}

/// What the server's upload does without HTTP: read, hash, write in
/// chunks, then sync; the seconds it took.
fn hashed_copy(from: &Path, to: &Path) -> io::Result<f64> {
    let t = Instant::now();
    let mut input = File::open(from)?;
    let mut out = File::create(to)?;
    let mut buf = vec![0u8; CHUNK];
    let mut sha = Sha256::new();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    std::hint::black_box(sha.finalize());
    Ok(t.elapsed().as_secs_f64())
}

/// The server's CPU seconds between two samples, if both were read.
fn cpu_between(from: &Option<ProcSample>, to: &Option<ProcSample>) -> Option<f64> {
    Some((to.as_ref()?.cpu_secs - from.as_ref()?.cpu_secs).max(0.0))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server's RSS read every few milliseconds on a thread of its own
/// (a reading on the runtime would wait behind the transfer it measures).
struct RssTrace {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RssFigures>>,
    every: Duration,
    /// Whether the kernel's high-water mark was reset at the start.
    hwm: bool,
}

#[derive(Default)]
struct RssFigures {
    baseline_kib: Option<u64>,
    /// The highest reading.
    peak_kib: Option<u64>,
    /// The kernel's high-water mark since the baseline, when it could be reset.
    hwm_kib: Option<u64>,
    last_kib: Option<u64>,
    samples: u64,
    every_ms: u64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

impl RssTrace {
    /// Starts sampling `pid` (nothing without one); the first reading,
    /// taken before this returns, is the baseline.
    fn start(pid: Option<u32>, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let Some(pid) = pid else {
            return Self {
                stop,
                thread: None,
                every,
                hwm: false,
            };
        };
        let hwm = reset_peak_rss(pid);
        let baseline = rss_kib(pid);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut f = RssFigures {
                baseline_kib: baseline,
                peak_kib: baseline,
                last_kib: baseline,
                samples: u64::from(baseline.is_some()),
                every_ms: every.as_millis() as u64,
                ..RssFigures::default()
            };
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if let Some(kib) = rss_kib(pid) {
                    f.samples += 1;
                    f.peak_kib = f.peak_kib.max(Some(kib));
                    f.last_kib = Some(kib);
                }
            }
            f
        });
        Self {
            stop,
            thread: Some(thread),
            every,
            hwm,
        }
    }

    /// Stops sampling, after one last reading.
    fn finish(mut self, pid: Option<u32>) -> RssFigures {
        self.stop.store(true, Ordering::Relaxed);
        let mut f = match self.thread.take() {
            // Joined at once: the thread sleeps at most one interval.
            Some(t) => t.join().unwrap_or_default(),
            None => RssFigures {
                every_ms: self.every.as_millis() as u64,
                ..RssFigures::default()
            },
        };
        if let Some(kib) = pid.and_then(rss_kib) {
            f.samples += 1;
            f.peak_kib = f.peak_kib.max(Some(kib));
            f.last_kib = Some(kib);
        }
        if self.hwm {
            f.hwm_kib = pid.and_then(|p| status_kib(p, "VmHWM"));
        }
        f
    }
}

impl RssFigures {
    /// From the baseline to the higher of the readings' peak and the
    /// kernel's.
    fn increase_kib(&self) -> Option<i64> {
        let peak = self.peak_kib.max(self.hwm_kib)?;
        Some(peak as i64 - self.baseline_kib? as i64)
    }

    fn json(&self) -> Value {
        json!({
            "baseline_kib": self.baseline_kib,
            "peak_kib": self.peak_kib,
            "hwm_kib": self.hwm_kib,
            "increase_kib": self.increase_kib(),
            "after_kib": self.last_kib,
            "samples": self.samples,
            "every_ms": self.every_ms,
        })
    }
}

/// The process with a socket listening on TCP `port`, from `/proc/net/tcp*`
/// and the processes' open files (only those this user may read).
fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening
                && on_port
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_dir
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_deterministic_per_seed_and_not_constant() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let (mut s1, mut s2) = (7, 7);
        fill_from(&mut s1, &mut a);
        fill_from(&mut s2, &mut b);
        assert_eq!(a, b);
        assert_ne!(a[..8], a[8..16]);
        let mut s3 = 8;
        fill_from(&mut s3, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(pid_listening_on(port), None);
    }
}
