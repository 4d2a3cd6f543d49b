//! Files between the HTTP adapter and the blob store: an upload's body
//! streamed to a staging file (hashed and counted as it arrives, never held
//! in memory), its type sniffed, its thumbnail made, its bytes handed to
//! the blob store, its row committed through the core; and a stored file's
//! bytes streamed back. The core decides who may do each (docs/files.md).
//!
//! - `sign`: the signed links that serve a file without a token;
//! - `sweep`: the garbage collection of files no message carries, blobs
//!   no file names, and uploads abandoned or interrupted by a crash.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::Semaphore;
use tracing::debug;

use super::blob::{BlobError, BlobStore, ByteStream};
use super::media::{self, Sniffed};
use crate::domain::error::FileError;
use crate::domain::file::{FileInfo, Upload};
use crate::domain::service::UseCases;
use crate::domain::{FileId, UploadId, UserId};

pub mod sign;
pub mod sweep;

pub use sign::{LINK_TTL_SECS, Link, Signer, Variant};

/// How long an upload's body may send nothing before it is taken as gone.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// The blob key of the bytes whose SHA-256 is `sha` (lowercase hex).
pub fn blob_key(sha: &str) -> String {
    format!("blobs/{}/{sha}", &sha[..2])
}

/// The settings of file handling.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Where staging files are written (local, on the blob store's disk
    /// when it has one, so that a move is a rename).
    pub staging: PathBuf,
    /// What signed links start with: empty for this origin.
    pub base_url: String,
    /// Largest file, in bytes.
    pub max_file_bytes: u64,
    /// Most thumbnails made at once.
    pub thumbnail_workers: usize,
    /// Uploads (simple or resumable) a user may start a minute.
    pub uploads_per_minute: u32,
    /// How long a resumable upload may take before it is dropped.
    pub upload_ttl: Duration,
}

/// Files: staging, making, serving.
pub struct Files {
    /// Where the bytes are kept.
    pub blobs: Arc<dyn BlobStore>,
    /// Signs and checks links.
    pub signer: Signer,
    /// The settings.
    pub settings: FileSettings,
    /// Uploads each user may start, a minute.
    pub uploads: governor::DefaultKeyedRateLimiter<UserId>,
    thumbnails: Semaphore,
}

/// An upload's bytes in a staging file, not yet stored. Removed when
/// dropped unless handed to the blob store.
pub struct Staged {
    path: Option<PathBuf>,
    /// How many bytes arrived.
    pub size: u64,
    /// Their SHA-256, lowercase hex.
    pub sha256: String,
    /// Their SHA-1, when asked for (tus checksums).
    pub sha1: Option<[u8; 20]>,
    /// Whether the body ended before all the bytes it announced arrived
    /// (the connection dropped or stalled, or it ended short).
    pub truncated: bool,
    /// Whether the body failed or stalled rather than ending: what arrived
    /// may be less than the client sent.
    pub interrupted: bool,
}

impl Staged {
    /// The staging file.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("a staged file until taken")
    }

    /// Hands the file over (to the blob store, which moves it).
    fn take(&mut self) -> PathBuf {
        self.path.take().expect("a staged file until taken")
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_later(path);
        }
    }
}

/// Removes a file off the async workers (or here, outside a runtime).
fn remove_later(path: PathBuf) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || {
                let _ = std::fs::remove_file(path);
            });
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why a body could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// More bytes than announced.
    #[error("the body is longer than its declared length")]
    TooLong,
    /// The staging file could not be written.
    #[error("cannot write a staging file: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a file could not be made from staged bytes.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// The core refused it (quota) or failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The staging file could not be read.
    #[error("cannot read a staging file: {0}")]
    Io(#[from] std::io::Error),
}

impl Files {
    /// Files over `blobs`, staging under `settings.staging` (created here).
    ///
    /// # Errors
    /// When the staging folder cannot be made.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        signer: Signer,
        settings: FileSettings,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.staging)?;
        let per_minute =
            std::num::NonZeroU32::new(settings.uploads_per_minute.max(1)).expect("at least one");
        Ok(Self {
            blobs,
            signer,
            uploads: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
            thumbnails: Semaphore::new(settings.thumbnail_workers.max(1)),
            settings,
        })
    }

    /// Streams `body` into a new staging file, hashing it as it goes. At
    /// most `expected` bytes are taken (more is [`StageError::TooLong`]);
    /// a body that ends early, fails or stalls for [`BODY_IDLE`] leaves
    /// what arrived, marked truncated.
    ///
    /// # Errors
    /// [`StageError`].
    pub async fn stage<B>(&self, body: B, expected: u64, sha1: bool) -> Result<Staged, StageError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        use http_body_util::BodyExt;
        let path = self
            .settings
            .staging
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&path).await?;
        let mut staged = Staged {
            path: Some(path),
            size: 0,
            sha256: String::new(),
            sha1: None,
            truncated: false,
            interrupted: false,
        };
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let mut sha = Sha256::new();
        let mut sha1_hash = sha1.then(sha1::Sha1::new);
        let mut body = body;
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                // A dropped connection or a stall: keep what arrived.
                Ok(Some(Err(_))) | Err(_) => {
                    staged.interrupted = true;
                    break;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if staged.size + data.len() as u64 > expected {
                return Err(StageError::TooLong);
            }
            sha.update(&data);
            if let Some(h) = sha1_hash.as_mut() {
                h.update(&data);
            }
            out.write_all(&data).await?;
            staged.size += data.len() as u64;
        }
        out.flush().await?;
        staged.truncated = staged.interrupted || staged.size < expected;
        staged.sha256 = hex(&sha.finalize());
        staged.sha1 = sha1_hash.map(|h| h.finalize().into());
        Ok(staged)
    }

    /// Makes a file of complete staged bytes: sniffs their type, makes the
    /// thumbnail of an image, puts both in the blob store and commits the
    /// row through the core, which checks the quota again. A failure leaves
    /// at most unreferenced blobs, which the sweep removes.
    ///
    /// # Errors
    /// [`MakeError`]: over the quota, or a store failed.
    pub async fn make(
        &self,
        service: &dyn UseCases,
        user: &UserId,
        mut staged: Staged,
        name: &str,
        upload: Option<&UploadId>,
    ) -> Result<FileInfo, MakeError> {
        let head = read_head(staged.path()).await?;
        let sniffed = media::sniff(&head);
        let thumbnail = if sniffed.image {
            self.thumbnail(staged.path(), sniffed).await
        } else {
            None
        };
        let (width, height, thumb_sha) = match thumbnail {
            Some((w, h, sha)) => (Some(w), Some(h), sha),
            None => (None, None, None),
        };
        let key = blob_key(&staged.sha256);
        let path = staged.take();
        self.blobs.put_file(&key, &path).await?;
        let file = FileInfo {
            id: FileId::new(uuid::Uuid::now_v7().to_string()),
            uploader: user.clone(),
            name: media::sanitize_name(name),
            size: staged.size,
            content_type: sniffed.content_type.to_owned(),
            sha256: staged.sha256.clone(),
            width,
            height,
            thumbnail: thumb_sha,
            created_at: service.now(),
        };
        Ok(match upload {
            Some(upload) => service.store_uploaded_file(file, upload).await?,
            None => service.store_file(file).await?,
        })
    }

    /// Moves staged bytes into the blob store under `key`.
    ///
    /// # Errors
    /// The blob store's.
    pub async fn put_staged(&self, key: &str, staged: &mut Staged) -> Result<(), BlobError> {
        let path = staged.take();
        self.blobs.put_file(key, &path).await
    }

    /// Joins the chunks of a finished resumable upload into one staged
    /// file, hashed as it is written.
    ///
    /// # Errors
    /// A chunk missing (a crash between moving the offset and storing the
    /// chunk) or the blob store failing.
    pub async fn assemble(&self, upload: &Upload) -> Result<Staged, MakeError> {
        use futures::TryStreamExt;
        let mut parts = self.blobs.list(&format!("parts/{}/", upload.id)).await?;
        parts.sort_by(|a, b| a.key.cmp(&b.key));
        let path = self
            .settings
            .staging
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let mut staged = Staged {
            path: Some(path.clone()),
            size: 0,
            sha256: String::new(),
            sha1: None,
            truncated: false,
            interrupted: false,
        };
        let mut out = BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(&path).await?);
        let mut sha = Sha256::new();
        for part in parts {
            let starts = part
                .key
                .rsplit('/')
                .next()
                .and_then(|o| o.parse::<u64>().ok());
            if starts != Some(staged.size) {
                break;
            }
            let mut chunks = self.blobs.get(&part.key, None).await?;
            while let Some(chunk) = chunks.try_next().await? {
                sha.update(&chunk);
                out.write_all(&chunk).await?;
                staged.size += chunk.len() as u64;
            }
        }
        out.flush().await?;
        if staged.size != upload.length {
            return Err(MakeError::Io(std::io::Error::other(format!(
                "upload {} has {} of its {} bytes stored",
                upload.id, staged.size, upload.length
            ))));
        }
        staged.sha256 = hex(&sha.finalize());
        Ok(staged)
    }

    /// Deletes the chunks of a resumable upload whose file is made; what
    /// this misses (a crash), the sweep finds.
    pub async fn drop_parts(&self, upload: &UploadId) {
        let Ok(parts) = self.blobs.list(&format!("parts/{upload}/")).await else {
            return;
        };
        for part in parts {
            if let Err(e) = self.blobs.delete(&part.key).await {
                debug!(error = %e, "a chunk stays for the sweep");
            }
        }
    }

    /// The image's dimensions and its stored thumbnail's SHA-256, made on
    /// the blocking pool, at most `thumbnail_workers` at a time. `None` for
    /// an image that cannot be decoded within the limits (a decompression
    /// bomb among them): the file is kept, without a preview.
    async fn thumbnail(&self, path: &Path, sniffed: Sniffed) -> Option<(u32, u32, Option<String>)> {
        let _turn = self.thumbnails.acquire().await.ok()?;
        let source = path.to_owned();
        let made =
            tokio::task::spawn_blocking(move || media::thumbnail(&source, sniffed.content_type))
                .await
                .ok()?;
        let thumb = match made {
            Ok(thumb) => thumb,
            Err(e) => {
                debug!(error = %e, "no thumbnail");
                return None;
            }
        };
        let sha = hex(&Sha256::digest(&thumb.bytes));
        let staging = self
            .settings
            .staging
            .join(format!("{}.thumb", uuid::Uuid::new_v4()));
        let stored = async {
            tokio::fs::write(&staging, &thumb.bytes).await?;
            self.blobs
                .put_file(&blob_key(&sha), &staging)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
        .await;
        match stored {
            Ok(()) => Some((thumb.width, thumb.height, Some(sha))),
            Err(e) => {
                debug!(error = %e, "thumbnail not stored");
                remove_later(staging);
                Some((thumb.width, thumb.height, None))
            }
        }
    }

    /// The bytes of a file (or its thumbnail), all or `range`.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when the file has no such variant.
    pub async fn read(
        &self,
        file: &FileInfo,
        variant: Variant,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BlobError> {
        let sha = match variant {
            Variant::Original => &file.sha256,
            Variant::Thumbnail => file.thumbnail.as_ref().ok_or(BlobError::NotFound)?,
        };
        self.blobs.get(&blob_key(sha), range).await
    }

    /// A signed link for `user` to a file, with where it stops working
    /// (Unix seconds).
    pub fn link(
        &self,
        file: &FileId,
        variant: Variant,
        user: &UserId,
        service: &dyn UseCases,
    ) -> (String, i64) {
        let (path, expires) = self.signer.sign(file, variant, user, service.now());
        (format!("{}{path}", self.settings.base_url), expires)
    }
}

/// The first bytes of a file, for sniffing.
async fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(8192);
    tokio::fs::File::open(path)
        .await?
        .take(8192)
        .read_to_end(&mut head)
        .await?;
    Ok(head)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
