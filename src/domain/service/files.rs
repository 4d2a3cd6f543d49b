//! Files: admitting uploads under the size rules and quotas, storing their
//! rows, resumable uploads, what a message may carry, and who may read a
//! file: its uploader, and whoever may read a message that carries it.

use super::ChatService;
use crate::domain::error::{FileError, SendError};
use crate::domain::file::{
    Attachment, FileCreated, FileInfo, MAX_ATTACHMENTS, Upload, UploadRefused,
};
use crate::domain::ids::{FileId, UploadId, UserId};

impl ChatService {
    /// Decides whether `user` may upload a file of `size` bytes, before a
    /// byte of it is read.
    ///
    /// # Errors
    /// [`FileError::Refused`]: empty, too large or over the quota.
    pub async fn admit_upload(&self, user: &UserId, size: u64) -> Result<(), FileError> {
        let used = self.ports.files.used_bytes(user).await?;
        Ok(self.limits.files.admit(size, used)?)
    }

    /// Records a file whose bytes are stored. The quota is checked again
    /// with the row's insert: two uploads admitted together cannot both
    /// take the last of it.
    ///
    /// # Errors
    /// [`FileError::Refused`] when the quota would be exceeded.
    pub async fn store_file(&self, file: FileInfo) -> Result<FileInfo, FileError> {
        self.limits.files.admit(file.size, 0)?;
        match self
            .ports
            .files
            .create_file(&file, self.limits.files.quota_bytes)
            .await?
        {
            FileCreated::Created => Ok(file),
            FileCreated::OverQuota => {
                Err(UploadRefused::OverQuota(self.limits.files.quota_bytes).into())
            }
        }
    }

    /// Records the file a resumable upload made, as [`Self::store_file`]
    /// does, and marks the upload complete with it (the upload's own
    /// reservation of quota then becomes the file's).
    ///
    /// # Errors
    /// [`FileError::Refused`] when the quota would be exceeded.
    pub async fn store_uploaded_file(
        &self,
        file: FileInfo,
        upload: &UploadId,
    ) -> Result<FileInfo, FileError> {
        self.limits.files.admit(file.size, 0)?;
        let quota = self.limits.files.quota_bytes;
        match self
            .ports
            .files
            .complete_upload(&file, quota, upload)
            .await?
        {
            FileCreated::Created => Ok(file),
            FileCreated::OverQuota => Err(UploadRefused::OverQuota(quota).into()),
        }
    }

    /// A file `user` may read: theirs, or carried by a message in a
    /// conversation they are a member of (the rule of `getHistory`).
    ///
    /// # Errors
    /// [`FileError::NotFound`] for a file that does not exist and for one
    /// the user may not read alike.
    pub async fn readable_file(&self, user: &UserId, id: &FileId) -> Result<FileInfo, FileError> {
        let file = self
            .ports
            .files
            .file(id)
            .await?
            .ok_or(FileError::NotFound)?;
        if file.uploader == *user || self.ports.files.referenced_for(id, user).await? {
            Ok(file)
        } else {
            Err(FileError::NotFound)
        }
    }

    /// Starts a resumable upload of `length` bytes, admitted as
    /// [`Self::admit_upload`] admits one.
    ///
    /// # Errors
    /// [`FileError::Refused`]: empty, too large or over the quota.
    pub async fn start_upload(&self, upload: Upload) -> Result<Upload, FileError> {
        self.admit_upload(&upload.user, upload.length).await?;
        self.ports.files.create_upload(&upload).await?;
        Ok(upload)
    }

    /// One of `user`'s resumable uploads, unexpired.
    ///
    /// # Errors
    /// [`FileError::NotFound`] for someone else's or none;
    /// [`FileError::UploadExpired`] for one of theirs past its expiry and
    /// not yet swept.
    pub async fn upload_of(&self, user: &UserId, id: &UploadId) -> Result<Upload, FileError> {
        match self.ports.files.upload(id).await? {
            Some(u) if u.user == *user && u.expires_at > self.now() => Ok(u),
            Some(u) if u.user == *user => Err(FileError::UploadExpired),
            _ => Err(FileError::NotFound),
        }
    }

    /// Records that an upload received bytes `from..to`; false when another
    /// request moved it first (the bytes must then be dropped).
    ///
    /// # Errors
    /// Only a failing store.
    pub async fn advance_upload(&self, upload: &Upload, to: u64) -> Result<bool, FileError> {
        Ok(self
            .ports
            .files
            .advance_upload(&upload.id, upload.offset, to)
            .await?)
    }

    /// Forgets a resumable upload (finished or terminated).
    ///
    /// # Errors
    /// Only a failing store.
    pub async fn forget_upload(&self, id: &UploadId) -> Result<bool, FileError> {
        Ok(self.ports.files.delete_upload(id).await?)
    }

    /// The attachments of a message `user` sends: files they uploaded, in
    /// the order named. Up to [`MAX_ATTACHMENTS`], each once; the wire
    /// adapter refuses more before this is asked.
    pub(super) async fn attachments_of(
        &self,
        user: &UserId,
        ids: &[FileId],
    ) -> Result<Vec<Attachment>, SendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        debug_assert!(ids.len() <= MAX_ATTACHMENTS);
        let found = self.ports.files.files(ids).await?;
        ids.iter()
            .map(|id| {
                found
                    .iter()
                    .find(|f| f.id == *id && f.uploader == *user)
                    .map(Attachment::from)
                    .ok_or(SendError::NoSuchFile)
            })
            .collect()
    }
}
