//! The blob store port: where the bytes of shared files live.
//!
//! Objects are content addressed: a file's bytes are stored once under
//! `blobs/{sha[0..2]}/{sha}` (lowercase hex SHA-256), so two uploads of the
//! same bytes share one object and a key never names two contents. tus
//! chunks are the exception, `parts/{upload_id}/{offset:020}`, stored only
//! until their upload completes.
//!
//! Bytes reach a store as a local *staging* file (the HTTP adapter writes
//! and hashes the body first), and `put_file` returns only when the object
//! is durable: a database row that names a blob must never outlive a crash
//! that lost the blob.
//!
//! The core never sees bytes: it decides who may read which file and keeps
//! the rows; the HTTP adapter streams between the client and this port.
//! `disk` keeps objects under a local folder (one node); `s3` on any
//! S3-compatible service, which every node of a cluster sees.

pub mod disk;
pub mod s3;

#[cfg(test)]
mod contract;
#[cfg(test)]
mod seaweed;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;

/// The bytes of an object, in chunks as they arrive.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Why a blob store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The key names no object.
    #[error("no such blob")]
    NotFound,
    /// Anything else: a bad key, I/O, the service.
    #[error("blob store: {0}")]
    Other(String),
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its key.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// When it was last written (or its `put_file` refreshed it).
    pub modified: std::time::SystemTime,
}

/// Where the bytes of files are kept.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Moves the local file `staged` into the store under `key`, durable when it returns
    /// (disk: fsync file, rename, fsync dir). If `key` already exists (same content) the staged
    /// file is removed and the existing object's modified time is refreshed (the sweep's grace
    /// counts from it). `staged` no longer exists afterwards, on success or error.
    async fn put_file(&self, key: &str, staged: &Path) -> Result<(), BlobError>;
    /// The bytes of `key`, all or `range` (start..end, end exclusive, within the size).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError>;
    /// Size and modified time, `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>, BlobError>;
    /// Deletes `key`; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Every object whose key starts with `prefix` (may be a few thousand: a Vec is fine).
    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError>;
    /// Whether other nodes see the same objects (S3: yes, disk: no). Cluster mode requires it.
    fn shared(&self) -> bool;
    /// What to show in logs at start ("disk /path", "s3 bucket at endpoint"): no credentials.
    fn describe(&self) -> String;
}

/// Opens the store a `files_url` names: `file:///abs/dir` or a plain path → DiskBlobs;
/// `s3://bucket?endpoint=http://..&region=..&access_key_id=..&secret_access_key=..&allow_http=true`
/// → S3Blobs. Errors name the setting, never echo secrets.
pub fn open(files_url: &str) -> anyhow::Result<Arc<dyn BlobStore>> {
    if let Some(rest) = files_url.strip_prefix("s3://") {
        return Ok(Arc::new(s3::S3Blobs::from_url(rest)?));
    }
    let path = match files_url.strip_prefix("file://") {
        Some(path) => {
            anyhow::ensure!(
                path.starts_with('/'),
                "files_url: a file:// URL needs an absolute path (file:///dir)"
            );
            PathBuf::from(path)
        }
        None => {
            // Only the scheme, which cannot hold a secret, is shown.
            if let Some((scheme, _)) = files_url.split_once("://") {
                anyhow::bail!("files_url: unknown scheme {scheme:?} (file:// or s3://)");
            }
            anyhow::ensure!(!files_url.is_empty(), "files_url: empty");
            PathBuf::from(files_url)
        }
    };
    let store = disk::DiskBlobs::new(path.clone())
        .with_context(|| format!("files_url: cannot create {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Refuses a key that could leave the store's namespace or mean different
/// objects on different stores: `..`, a leading `/`, empty or hidden
/// segments, and any character outside `[A-Za-z0-9/_.-]`.
pub(crate) fn check_key(key: &str) -> Result<(), BlobError> {
    check_path(key, false)
}

/// As [`check_key`], for a list prefix: empty, or ending in `/`, is fine.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BlobError> {
    check_path(prefix, true)
}

fn check_path(key: &str, prefix: bool) -> Result<(), BlobError> {
    let bad = |why: &str| Err(BlobError::Other(format!("bad key {key:?}: {why}")));
    if key.is_empty() {
        return if prefix { Ok(()) } else { bad("empty") };
    }
    if key.starts_with('/') {
        return bad("leading /");
    }
    if key.contains("..") {
        return bad("..");
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-')))
    {
        return bad(&format!("character {c:?}"));
    }
    let mut segments: Vec<&str> = key.split('/').collect();
    if prefix {
        // "blobs/" and "blobs/a" are both prefixes; only the last segment may be empty.
        segments.pop();
    }
    if segments.iter().any(|s| s.is_empty()) {
        return bad("empty segment");
    }
    // Disk keeps its own files (copies in flight) as dot files.
    if segments.iter().any(|s| s.starts_with('.')) {
        return bad("segment starting with .");
    }
    Ok(())
}

/// Checks that `range` lies within an object of `size` bytes.
pub(crate) fn check_range(key: &str, range: &Range<u64>, size: u64) -> Result<(), BlobError> {
    if range.start > range.end || range.end > size {
        return Err(BlobError::Other(format!(
            "range {}..{} outside {key} ({size} bytes)",
            range.start, range.end
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_the_namespace_are_refused() {
        for key in [
            "",
            "/blobs/ab/abc",
            "blobs/../etc/passwd",
            "..",
            "blobs/a..b",
            "blobs//x",
            "blobs/x/",
            "blobs/.hidden",
            "blobs/a b",
            "blobs/ü",
            "blobs\\x",
            "blobs/x?y",
        ] {
            assert!(
                matches!(check_key(key), Err(BlobError::Other(_))),
                "{key:?} accepted"
            );
        }
        for key in [
            "blobs/ab/ab12",
            "parts/0193-ab_c/00000000000000000000",
            "a.b",
        ] {
            assert!(check_key(key).is_ok(), "{key:?} refused");
        }
    }

    #[test]
    fn prefixes_may_be_empty_or_end_in_a_slash() {
        for prefix in ["", "blobs/", "blobs/ab", "parts/x/"] {
            assert!(check_prefix(prefix).is_ok(), "{prefix:?} refused");
        }
        for prefix in ["/", "../", "blobs//", "a b"] {
            assert!(check_prefix(prefix).is_err(), "{prefix:?} accepted");
        }
    }

    #[test]
    fn open_picks_the_store_from_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let store = open(&format!("file://{}", root.display())).unwrap();
        assert_eq!(store.describe(), format!("disk {}", root.display()));
        assert!(!store.shared());
        assert!(root.is_dir());

        let plain = dir.path().join("plain");
        let store = open(plain.to_str().unwrap()).unwrap();
        assert!(!store.shared());
        assert!(plain.is_dir());

        let store = open(
            "s3://confab-files?endpoint=http://127.0.0.1:8333&access_key_id=AKID\
             &secret_access_key=SECRET-XYZ",
        )
        .unwrap();
        assert!(store.shared());
        let shown = store.describe();
        assert!(shown.contains("confab-files") && shown.contains("127.0.0.1:8333"));
        assert!(!shown.contains("SECRET-XYZ") && !shown.contains("AKID"));
    }

    #[test]
    fn open_errors_name_the_setting_and_hide_secrets() {
        for url in [
            "file://relative/dir",
            "ftp://user:SECRET-XYZ@host/x",
            "s3://?secret_access_key=SECRET-XYZ",
            "s3://bucket?secret_access_key=SECRET-XYZ&nonsense=1",
            "s3://bucket/sub?secret_access_key=SECRET-XYZ",
            "s3://bucket?secret_access_key=SECRET-XYZ&allow_http=maybe",
        ] {
            let error = format!("{:#}", open(url).err().expect(url));
            assert!(error.starts_with("files_url"), "{url}: {error}");
            assert!(!error.contains("SECRET-XYZ"), "{url}: {error}");
        }
    }
}
