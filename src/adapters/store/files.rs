//! The `FileStore` port on either diesel backend: files, the messages that
//! carry them, and resumable uploads, in the same database as the messages.

use async_trait::async_trait;

use super::engine::{DieselStore, Engine, Tx};
use super::queries::{FileQueries, FileRow, UploadRow};
use crate::domain::error::PortError;
use crate::domain::file::{FileCreated, FileInfo, Upload};
use crate::domain::ports::FileStore;
use crate::domain::{FileId, Timestamp, UploadId, UserId};

/// A file row as the core sees it.
fn file_from_row(row: FileRow) -> FileInfo {
    let (id, uploader, name, size, content_type, sha256, width, height, thumbnail, created_at) =
        row;
    FileInfo {
        id: FileId::new(id),
        uploader: UserId::new(uploader),
        name,
        size: u64::try_from(size).unwrap_or(0),
        content_type,
        sha256,
        width: width.and_then(|n| u32::try_from(n).ok()),
        height: height.and_then(|n| u32::try_from(n).ok()),
        thumbnail,
        created_at: Timestamp::from_millis(created_at),
    }
}

/// An upload row as the core sees it.
fn upload_from_row(row: UploadRow) -> Upload {
    let (id, user, length, received, name, created_at, expires_at, file) = row;
    Upload {
        id: UploadId::new(id),
        user: UserId::new(user),
        length: u64::try_from(length).unwrap_or(0),
        offset: u64::try_from(received).unwrap_or(0),
        name,
        created_at: Timestamp::from_millis(created_at),
        expires_at: Timestamp::from_millis(expires_at),
        file: file.map(FileId::new),
    }
}

fn ids(ids: &[FileId]) -> Vec<String> {
    ids.iter().map(|id| id.as_str().to_owned()).collect()
}

impl<E: Engine> DieselStore<E> {
    /// Inserts a file's row unless its uploader's files and reservations
    /// (but `upload`'s own) and it would exceed `quota`; completes `upload`
    /// with it in the same transaction.
    async fn insert_within_quota(
        &self,
        file: &FileInfo,
        quota: u64,
        upload: Option<String>,
    ) -> Result<FileCreated, PortError> {
        let mut file = file.clone();
        file.name = Self::text(&file.name);
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                // The sum and the insert in one transaction, after the
                // uploader's row is locked (PostgreSQL; SQLite has one
                // writer): two uploads cannot pass the check together.
                conn.lock_user(file.uploader.as_str())?;
                let used = conn.used_bytes(file.uploader.as_str(), upload.as_deref())?;
                let size = i64::try_from(file.size).unwrap_or(i64::MAX);
                if used.saturating_add(size) > quota {
                    return Ok::<_, PortError>(FileCreated::OverQuota);
                }
                conn.insert_file(&file)?;
                if let Some(upload) = &upload {
                    conn.complete_upload(upload, file.id.as_str())?;
                }
                Ok(FileCreated::Created)
            })
            .await
    }
}

#[async_trait]
impl<E: Engine> FileStore for DieselStore<E> {
    async fn create_file(&self, file: &FileInfo, quota: u64) -> Result<FileCreated, PortError> {
        self.insert_within_quota(file, quota, None).await
    }

    async fn complete_upload(
        &self,
        file: &FileInfo,
        quota: u64,
        upload: &UploadId,
    ) -> Result<FileCreated, PortError> {
        self.insert_within_quota(file, quota, Some(Self::text(upload.as_str())))
            .await
    }

    async fn file(&self, id: &FileId) -> Result<Option<FileInfo>, PortError> {
        Ok(self.files(std::slice::from_ref(id)).await?.pop())
    }

    async fn files(&self, wanted: &[FileId]) -> Result<Vec<FileInfo>, PortError> {
        let wanted = ids(wanted);
        self.read(move |conn| Ok(conn.file_rows(&wanted)?))
            .await
            .map(|rows| rows.into_iter().map(file_from_row).collect())
    }

    async fn used_bytes(&self, user: &UserId) -> Result<u64, PortError> {
        let user = Self::text(user.as_str());
        let used = self
            .read(move |conn| Ok(conn.used_bytes(&user, None)?))
            .await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    async fn referenced_for(&self, file: &FileId, user: &UserId) -> Result<bool, PortError> {
        let (file, user) = (Self::text(file.as_str()), Self::text(user.as_str()));
        self.read(move |conn| Ok(conn.referenced_for(&file, &user)?))
            .await
    }

    async fn unreferenced_files(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<FileInfo>, PortError> {
        self.read(move |conn| Ok(conn.unreferenced_files(before.millis(), i64::from(limit))?))
            .await
            .map(|rows| rows.into_iter().map(file_from_row).collect())
    }

    async fn delete_files(&self, doomed: &[FileId]) -> Result<Vec<FileInfo>, PortError> {
        let doomed = ids(doomed);
        self.engine()
            .write(move |tx| Ok::<_, PortError>(tx.conn().delete_unreferenced(&doomed)?))
            .await
            .map(|rows| rows.into_iter().map(file_from_row).collect())
    }

    async fn referenced_blobs(&self, shas: &[String]) -> Result<Vec<String>, PortError> {
        let shas = shas.to_vec();
        self.read(move |conn| Ok(conn.referenced_blobs(&shas)?))
            .await
    }

    async fn create_upload(&self, upload: &Upload) -> Result<(), PortError> {
        let mut upload = upload.clone();
        upload.name = Self::text(&upload.name);
        self.engine()
            .write_one(move |conn| Ok::<_, PortError>(conn.insert_upload(&upload)?))
            .await
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<Upload>, PortError> {
        let id = Self::text(id.as_str());
        self.read(move |conn| Ok(conn.upload_row(&id)?))
            .await
            .map(|row| row.map(upload_from_row))
    }

    async fn advance_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<bool, PortError> {
        let id = Self::text(id.as_str());
        let (from, to) = (
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        );
        self.engine()
            .write_one(move |conn| Ok::<_, PortError>(conn.advance_upload(&id, from, to)?))
            .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool, PortError> {
        let id = Self::text(id.as_str());
        self.engine()
            .write_one(move |conn| Ok::<_, PortError>(conn.delete_upload(&id)?))
            .await
    }

    async fn expired_uploads(&self, now: Timestamp, limit: u32) -> Result<Vec<Upload>, PortError> {
        self.read(move |conn| Ok(conn.expired_uploads(now.millis(), i64::from(limit))?))
            .await
            .map(|rows| rows.into_iter().map(upload_from_row).collect())
    }
}
