//! The `BlobStore` contract: every case runs against `DiskBlobs` on a temp
//! folder and `S3Blobs` on a SeaweedFS bucket (skipped without `weed`).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::disk::DiskBlobs;
use super::{BlobError, BlobStore};

/// A store and a staging folder to hand it files from.
struct Harness {
    store: Arc<dyn BlobStore>,
    staging: PathBuf,
    staged: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn disk() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskBlobs::new(dir.path().join("files")).unwrap();
        // As the server lays it out: staging inside the store's root.
        let staging = dir.path().join("files/staging");
        std::fs::create_dir_all(&staging).unwrap();
        Self::new(Arc::new(store), staging, dir)
    }

    async fn s3() -> Option<Self> {
        let url = super::seaweed::bucket().await?;
        let store = super::s3::S3Blobs::from_url(url.strip_prefix("s3://").expect("an s3 URL"))
            .expect("an S3 store on weed");
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().to_owned();
        Some(Self::new(Arc::new(store), staging, dir))
    }

    fn new(store: Arc<dyn BlobStore>, staging: PathBuf, dir: tempfile::TempDir) -> Self {
        Self {
            store,
            staging,
            staged: AtomicU32::new(0),
            _dir: dir,
        }
    }

    /// A new staged file holding `bytes`.
    fn stage(&self, bytes: &[u8]) -> PathBuf {
        let n = self.staged.fetch_add(1, Ordering::Relaxed);
        let path = self.staging.join(format!("upload-{n}"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Stages `bytes` and puts them under `key`; the staged file must be gone.
    async fn put(&self, key: &str, bytes: &[u8]) {
        let staged = self.stage(bytes);
        self.store.put_file(key, &staged).await.unwrap();
        assert!(!staged.exists(), "{} left after put", staged.display());
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<Vec<u8>, BlobError> {
        let mut stream = self.store.get(key, range).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        Ok(bytes)
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self.store.list(prefix).await.unwrap();
        listed.into_iter().map(|b| b.key).collect()
    }
}

/// Deterministic bytes that no two offsets of a part boundary share.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn content_key(bytes: &[u8]) -> String {
    let sha = format!("{:x}", Sha256::digest(bytes));
    format!("blobs/{}/{sha}", &sha[..2])
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod disk {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Harness::disk()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(harness) = super::Harness::s3().await else { return };
                    super::$case(&harness).await;
                }
            )*
        }
    };
}

contract!(
    put_then_get_whole_and_ranges,
    putting_an_existing_key_keeps_it_and_refreshes_its_time,
    an_absent_key_is_not_found,
    delete_is_idempotent,
    list_by_prefix,
    a_large_file_streams_in_and_out_whole,
    keys_outside_the_namespace_are_refused,
);

async fn put_then_get_whole_and_ranges(h: &Harness) {
    let bytes = pattern(1000, 1);
    let key = content_key(&bytes);
    h.put(&key, &bytes).await;

    assert_eq!(h.read(&key, None).await.unwrap(), bytes);
    for range in [0..1, 500..600, 999..1000, 0..1000] {
        let (start, end) = (range.start as usize, range.end as usize);
        assert_eq!(
            h.read(&key, Some(range.clone())).await.unwrap(),
            bytes[start..end],
            "{range:?}"
        );
    }
    assert!(h.read(&key, Some(10..10)).await.unwrap().is_empty());
    for outside in [999..1001, 1000..1001, 2000..3000] {
        assert!(
            matches!(
                h.read(&key, Some(outside.clone())).await,
                Err(BlobError::Other(_))
            ),
            "{outside:?}"
        );
    }

    let meta = h.store.head(&key).await.unwrap().expect("put, so present");
    assert_eq!((meta.key.as_str(), meta.size), (key.as_str(), 1000));
}

async fn putting_an_existing_key_keeps_it_and_refreshes_its_time(h: &Harness) {
    let bytes = pattern(300, 2);
    let key = content_key(&bytes);
    h.put(&key, &bytes).await;
    let first = h.store.head(&key).await.unwrap().unwrap().modified;

    // S3 keeps whole seconds: let the clock pass into the next one.
    let since = first.duration_since(UNIX_EPOCH).unwrap();
    let next = UNIX_EPOCH + Duration::from_secs(since.as_secs() + 1);
    while let Ok(wait) = next.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait + Duration::from_millis(10)).await;
    }

    h.put(&key, &bytes).await;
    let again = h.store.head(&key).await.unwrap().unwrap();
    assert!(
        again.modified > first,
        "modified {:?} not after {first:?}",
        again.modified
    );
    assert_eq!(again.size, 300);
    assert_eq!(h.read(&key, None).await.unwrap(), bytes);
    assert_eq!(h.keys("blobs/").await, [key]);
}

async fn an_absent_key_is_not_found(h: &Harness) {
    let key = content_key(b"never stored");
    assert!(matches!(h.read(&key, None).await, Err(BlobError::NotFound)));
    assert!(matches!(
        h.read(&key, Some(0..1)).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        h.read(&key, Some(0..0)).await,
        Err(BlobError::NotFound)
    ));
    assert_eq!(h.store.head(&key).await.unwrap(), None);
}

async fn delete_is_idempotent(h: &Harness) {
    let bytes = pattern(10, 3);
    let key = content_key(&bytes);
    h.put(&key, &bytes).await;
    h.store.delete(&key).await.unwrap();
    assert_eq!(h.store.head(&key).await.unwrap(), None);
    assert!(matches!(h.read(&key, None).await, Err(BlobError::NotFound)));
    h.store.delete(&key).await.unwrap();
    h.store.delete(&content_key(b"never stored")).await.unwrap();
    assert!(h.keys("").await.is_empty());
}

async fn list_by_prefix(h: &Harness) {
    let (a, b) = (pattern(11, 4), pattern(22, 5));
    let (key_a, key_b) = (content_key(&a), content_key(&b));
    h.put(&key_a, &a).await;
    h.put(&key_b, &b).await;
    for (key, len) in [
        ("parts/u1/00000000000000000000", 3),
        ("parts/u1/00000000000000000003", 4),
        ("parts/u2/00000000000000000000", 5),
    ] {
        h.put(key, &pattern(len, len as u64)).await;
    }

    let mut blobs = vec![key_a.clone(), key_b.clone()];
    blobs.sort();
    assert_eq!(h.keys("blobs/").await, blobs);
    let listed = h.store.list("blobs/").await.unwrap();
    for meta in listed {
        let size = if meta.key == key_a { 11 } else { 22 };
        assert_eq!(meta.size, size, "{}", meta.key);
    }
    assert_eq!(
        h.keys("parts/u1/").await,
        [
            "parts/u1/00000000000000000000",
            "parts/u1/00000000000000000003"
        ]
    );
    assert_eq!(h.keys("parts/").await.len(), 3);
    // A prefix may end inside a segment.
    assert_eq!(h.keys(&key_a[..8]).await, [key_a.as_str()]);
    assert_eq!(h.keys("parts/u").await.len(), 3);
    assert_eq!(h.keys("").await.len(), 5);
    assert!(h.keys("nothing/").await.is_empty());
    assert!(h.keys("blobs/zz/").await.is_empty());
}

async fn a_large_file_streams_in_and_out_whole(h: &Harness) {
    // Over two S3 parts, and an odd size so that the last one is short.
    let bytes = pattern(20 * 1024 * 1024 + 12345, 6);
    let key = content_key(&bytes);
    h.put(&key, &bytes).await;
    assert_eq!(
        h.store.head(&key).await.unwrap().unwrap().size,
        bytes.len() as u64
    );

    let mut stream = h.store.get(&key, None).await.unwrap();
    let (mut hash, mut read, mut chunks) = (Sha256::new(), 0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len();
        chunks += 1;
        hash.update(&chunk);
    }
    assert_eq!(read, bytes.len());
    let sha = format!("{:x}", hash.finalize());
    assert_eq!(format!("blobs/{}/{sha}", &sha[..2]), key);
    assert!(chunks > 1, "20 MiB came in one chunk: not streamed");

    // Across the first part boundary.
    let part = 8 * 1024 * 1024;
    let range = (part - 10) as u64..(part + 10) as u64;
    assert_eq!(
        h.read(&key, Some(range)).await.unwrap(),
        bytes[part - 10..part + 10]
    );
}

async fn keys_outside_the_namespace_are_refused(h: &Harness) {
    for key in [
        "blobs/../../etc/passwd",
        "/blobs/ab/cd",
        "blobs/a b",
        "blobs/ü",
    ] {
        let staged = h.stage(b"x");
        assert!(
            matches!(
                h.store.put_file(key, &staged).await,
                Err(BlobError::Other(_))
            ),
            "{key:?}"
        );
        assert!(!staged.exists(), "staged file left after a refused put");
        assert!(matches!(h.read(key, None).await, Err(BlobError::Other(_))));
        assert!(matches!(h.store.head(key).await, Err(BlobError::Other(_))));
        assert!(matches!(
            h.store.delete(key).await,
            Err(BlobError::Other(_))
        ));
    }
    assert!(matches!(
        h.store.list("../").await,
        Err(BlobError::Other(_))
    ));
    assert!(h.keys("").await.is_empty());
}
