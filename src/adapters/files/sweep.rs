//! The garbage collection of files: rows no message carries after their
//! time to live, blobs no row names, the parts of abandoned resumable
//! uploads, and staging files a crash left behind. Every step finds its
//! work in what is stored, not in memory, so a kill -9 at any point leaves
//! nothing the next sweep does not find (docs/files.md, "Garbage").
//!
//! A blob or staging file is only removed once it is older than the grace
//! period: an upload puts its blob (refreshing its time) before it commits
//! the row that names it, and the grace keeps the sweep from taking the
//! blob in between.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::Files;
use crate::domain::ports::{Clock, FileStore};
use crate::domain::{FileId, Timestamp};

/// How many rows one step of a sweep takes at a time.
const BATCH: u32 = 500;

/// When and what the sweep removes.
#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    /// How often it runs.
    pub every: Duration,
    /// How long a file no message carries is kept.
    pub unattached_ttl: Duration,
    /// How old an unreferenced blob or a staging file must be to go.
    pub grace: Duration,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// File rows.
    pub files: usize,
    /// Blobs (bytes and thumbnails).
    pub blobs: usize,
    /// Expired resumable uploads.
    pub uploads: usize,
    /// Parts of uploads that have no row.
    pub parts: usize,
    /// Staging files.
    pub staging: usize,
}

/// Sweeps every `settings.every` until the runtime ends.
pub async fn run(
    files: Arc<Files>,
    store: Arc<dyn FileStore>,
    clock: Arc<dyn Clock>,
    settings: SweepSettings,
) {
    let mut every = tokio::time::interval(settings.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match sweep(&files, &*store, clock.now(), settings).await {
            Ok(swept) if swept != Swept::default() => info!(?swept, "files swept"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "files sweep failed; trying again later"),
        }
    }
}

/// One sweep, at `now`.
///
/// # Errors
/// The first failure of the store or the blob store; what was removed
/// before it stays removed.
pub async fn sweep(
    files: &Files,
    store: &dyn FileStore,
    now: Timestamp,
    settings: SweepSettings,
) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    // Resumable uploads past their expiry: the row first, so that no
    // request can add a part after the parts are listed.
    loop {
        let expired = store.expired_uploads(now, BATCH).await?;
        for upload in &expired {
            if store.delete_upload(&upload.id).await? {
                swept.uploads += 1;
            }
        }
        if expired.len() < BATCH as usize {
            break;
        }
    }
    // Files no message carries, past their time to live.
    let before = Timestamp::from_millis(now.millis() - millis(settings.unattached_ttl));
    loop {
        let stale = store.unreferenced_files(before, BATCH).await?;
        let ids: Vec<FileId> = stale.iter().map(|f| f.id.clone()).collect();
        swept.files += store.delete_files(&ids).await?.len();
        if stale.len() < BATCH as usize {
            break;
        }
    }
    let old = SystemTime::now()
        .checked_sub(settings.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Blobs no file names (the ones just freed among them).
    let candidates: Vec<(String, String)> = files
        .blobs
        .list("blobs/")
        .await?
        .into_iter()
        .filter(|b| b.modified < old)
        .filter_map(|b| {
            let sha = b.key.rsplit('/').next()?.to_owned();
            Some((b.key, sha))
        })
        .collect();
    for chunk in candidates.chunks(BATCH as usize) {
        let shas: Vec<String> = chunk.iter().map(|(_, sha)| sha.clone()).collect();
        let kept: HashSet<String> = store.referenced_blobs(&shas).await?.into_iter().collect();
        for (key, sha) in chunk {
            if kept.contains(sha) {
                continue;
            }
            // Put again since it was listed: an upload of the same bytes
            // is about to name it.
            match files.blobs.head(key).await? {
                Some(meta) if meta.modified < old => {
                    files.blobs.delete(key).await?;
                    swept.blobs += 1;
                }
                _ => {}
            }
        }
    }
    // Parts of resumable uploads whose row is gone (expired, ended, or
    // never committed before a crash).
    let mut parts: BTreeMap<String, Vec<(String, SystemTime)>> = BTreeMap::new();
    for part in files.blobs.list("parts/").await? {
        if let Some(upload) = part.key.split('/').nth(1) {
            parts
                .entry(upload.to_owned())
                .or_default()
                .push((part.key.clone(), part.modified));
        }
    }
    for (upload, keys) in parts {
        let id = crate::domain::UploadId::new(upload);
        if store.upload(&id).await?.is_some() {
            continue;
        }
        for (key, modified) in keys {
            if modified < old {
                files.blobs.delete(&key).await?;
                swept.parts += 1;
            }
        }
    }
    swept.staging = sweep_staging(files, old).await?;
    Ok(swept)
}

/// Removes staging files older than `old`: left by a crash mid-upload.
async fn sweep_staging(files: &Files, old: SystemTime) -> std::io::Result<usize> {
    let dir = files.settings.staging.clone();
    tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            if modified < old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
