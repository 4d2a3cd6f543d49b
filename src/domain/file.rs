//! Files: what an upload becomes, what a message carries, and the rules
//! on sizes and quotas. The bytes never reach the core; it sees their
//! metadata and decides who may store, attach and read them.

use super::ids::{FileId, UploadId, UserId};
use super::time::Timestamp;

/// Most files one message may carry.
pub const MAX_ATTACHMENTS: usize = 10;

/// A stored file, as its row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's id.
    pub id: FileId,
    /// Who uploaded it: the only user who may attach it.
    pub uploader: UserId,
    /// Its name, sanitized at upload.
    pub name: String,
    /// Its size in bytes, never 0.
    pub size: u64,
    /// Its type, sniffed from its bytes (never the client's word).
    pub content_type: String,
    /// The lowercase hex SHA-256 of its bytes: also its blob's address.
    pub sha256: String,
    /// Width in pixels, for an image that could be decoded.
    pub width: Option<u32>,
    /// Height in pixels, for an image that could be decoded.
    pub height: Option<u32>,
    /// The SHA-256 of its thumbnail, when it has one.
    pub thumbnail: Option<String>,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// A file as a message carries it: the metadata every reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file's id, for `GET /api/v1/files/{id}`.
    pub id: FileId,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sniffed type.
    pub content_type: String,
    /// The hex SHA-256 of its bytes.
    pub sha256: String,
    /// Width in pixels, for an image.
    pub width: Option<u32>,
    /// Height in pixels, for an image.
    pub height: Option<u32>,
    /// Whether a thumbnail can be fetched.
    pub thumbnail: bool,
}

impl From<&FileInfo> for Attachment {
    fn from(f: &FileInfo) -> Self {
        Self {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
            sha256: f.sha256.clone(),
            width: f.width,
            height: f.height,
            thumbnail: f.thumbnail.is_some(),
        }
    }
}

/// What a store did with a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCreated {
    /// Stored.
    Created,
    /// Not stored: the uploader's files would exceed their quota.
    OverQuota,
}

/// The size rules of uploads, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Largest file.
    pub max_file_bytes: u64,
    /// Most bytes of files one user may keep.
    pub quota_bytes: u64,
}

/// Why an upload is refused before its bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefused {
    /// A file of no bytes.
    #[error("the file is empty")]
    Empty,
    /// Larger than [`FileLimits::max_file_bytes`].
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// Would take the uploader past [`FileLimits::quota_bytes`].
    #[error("the file would exceed your storage quota of {0} bytes")]
    OverQuota(u64),
}

impl FileLimits {
    /// Decides whether a file of `size` bytes may be uploaded by a user
    /// who keeps `used` bytes already.
    ///
    /// # Errors
    /// [`UploadRefused`] naming the rule.
    pub fn admit(&self, size: u64, used: u64) -> Result<(), UploadRefused> {
        if size == 0 {
            return Err(UploadRefused::Empty);
        }
        if size > self.max_file_bytes {
            return Err(UploadRefused::TooLarge(self.max_file_bytes));
        }
        if used.saturating_add(size) > self.quota_bytes {
            return Err(UploadRefused::OverQuota(self.quota_bytes));
        }
        Ok(())
    }
}

/// A resumable upload under way: its bytes so far are in the blob store,
/// its progress here, so that any node can take the next chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Its id (the tus URL's last segment).
    pub id: UploadId,
    /// Who started it: the only user who may continue or end it.
    pub user: UserId,
    /// The file's announced size.
    pub length: u64,
    /// How many bytes have been received.
    pub offset: u64,
    /// The file's name, sanitized.
    pub name: String,
    /// When it started.
    pub created_at: Timestamp,
    /// When an unfinished upload is dropped (a finished one forgotten).
    pub expires_at: Timestamp,
    /// The file it made, once complete.
    pub file: Option<FileId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FileLimits = FileLimits {
        max_file_bytes: 100,
        quota_bytes: 250,
    };

    #[test]
    fn admit_refuses_empty_too_large_and_over_quota() {
        assert_eq!(LIMITS.admit(0, 0), Err(UploadRefused::Empty));
        assert_eq!(LIMITS.admit(101, 0), Err(UploadRefused::TooLarge(100)));
        assert_eq!(LIMITS.admit(100, 0), Ok(()));
        assert_eq!(LIMITS.admit(100, 150), Ok(()));
        assert_eq!(LIMITS.admit(100, 151), Err(UploadRefused::OverQuota(250)));
        assert_eq!(
            LIMITS.admit(1, u64::MAX),
            Err(UploadRefused::OverQuota(250))
        );
    }
}
