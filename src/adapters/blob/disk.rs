//! The blob store on a local folder: object `key` is the file `root/key`.
//! Staged files are renamed in (the staging folder sits under the same
//! root, so on one filesystem), which makes a put atomic: a reader sees the
//! whole object or none.

use std::io::{self, ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobMeta, BlobStore, ByteStream, check_key, check_prefix, check_range};

/// The HTTP adapter's staging folder under the root, never an object.
const STAGING: &str = "staging";
/// How much a read hands on at a time.
const CHUNK: usize = 64 * 1024;

/// Objects as files under one local folder.
#[derive(Debug, Clone)]
pub struct DiskBlobs {
    root: PathBuf,
}

impl DiskBlobs {
    /// A store under `root`, which is created if missing.
    pub fn new(root: PathBuf) -> io::Result<Self> {
        // For its owner alone, wherever files_url puts it: what is under
        // it is every file users shared.
        crate::adapters::private::create_dir(&root)?;
        Ok(Self { root })
    }

    /// The folder objects live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, once the key is known to be safe.
    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        if key.split('/').next() == Some(STAGING) {
            return Err(BlobError::Other(format!(
                "bad key {key:?}: {STAGING}/ is reserved"
            )));
        }
        Ok(self.root.join(key))
    }
}

fn other(e: impl std::fmt::Display) -> BlobError {
    BlobError::Other(e.to_string())
}

fn io_error(e: io::Error) -> BlobError {
    if e.kind() == ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        other(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f).await.map_err(other)?
}

#[async_trait]
impl BlobStore for DiskBlobs {
    async fn put_file(&self, key: &str, staged: &Path) -> Result<(), BlobError> {
        let target = match self.path(key) {
            Ok(target) => target,
            Err(e) => {
                let _ = tokio::fs::remove_file(staged).await;
                return Err(e);
            }
        };
        let root = self.root.clone();
        let staged = staged.to_owned();
        blocking(move || {
            let result = put_blocking(&root, &target, &staged);
            // On success the rename consumed it; on the paths that did not
            // (exists already, or an error) it must not linger in staging.
            match std::fs::remove_file(&staged) {
                Err(e) if e.kind() != ErrorKind::NotFound && result.is_ok() => Err(other(e)),
                _ => result.map_err(other),
            }
        })
        .await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let path = self.path(key)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(io_error)?;
        let size = file.metadata().await.map_err(other)?.len();
        let range = range.unwrap_or(0..size);
        check_range(key, &range, size)?;
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(other)?;
        }
        let reader = file.take(range.end - range.start);
        Ok(ReaderStream::with_capacity(reader, CHUNK).boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(BlobMeta {
                key: key.to_owned(),
                size: meta.len(),
                modified: meta.modified().map_err(other)?,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let root = self.root.clone();
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(other(e)),
            }
            // A finished upload's parts/{id}/ would otherwise stay forever.
            // remove_dir refuses a folder that is not empty, so a put racing
            // into it keeps it (and put_file retries if it lost the folder).
            // The top-level folders (blobs/, parts/) stay.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == root || d.parent() == Some(&root) || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        check_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Walk only the deepest folder the prefix names in full.
            let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
            let mut found = Vec::new();
            let mut stack = vec![(root.join(folder), folder.to_owned())];
            while let Some((dir, rel)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    // Absent (nothing under the prefix) or deleted meanwhile.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(other(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(other)?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    // Copies in flight are dot files; staging is not ours.
                    if name.starts_with('.') || (rel.is_empty() && name == STAGING) {
                        continue;
                    }
                    let key = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    let meta = match entry.metadata() {
                        Ok(meta) => meta,
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(other(e)),
                    };
                    if meta.is_dir() {
                        // A folder can hold matches only if it and the prefix agree so far.
                        if key.starts_with(&prefix) || prefix.starts_with(&format!("{key}/")) {
                            stack.push((entry.path(), key));
                        }
                    } else if meta.is_file() && key.starts_with(&prefix) {
                        found.push(BlobMeta {
                            key,
                            size: meta.len(),
                            modified: meta.modified().map_err(other)?,
                        });
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
    }

    fn shared(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("disk {}", self.root.display())
    }
}

/// `put_file` on the blocking pool. Leaves `staged` for the caller to remove
/// when it did not move it.
fn put_blocking(root: &Path, target: &Path, staged: &Path) -> io::Result<()> {
    match std::fs::File::open(target) {
        // Same key, same bytes: keep the stored file and push back the
        // sweep's grace period, which counts from its modified time.
        Ok(existing) => return existing.set_modified(SystemTime::now()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::File::open(staged)?.sync_all()?;
    let parent = target.parent().expect("a key has a parent: the root");
    // A concurrent delete may remove a folder it just emptied between our
    // create_dir_all and the rename; then the rename finds no folder.
    let mut tries = 0;
    loop {
        tries += 1;
        create_dirs_durably(root, parent)?;
        match std::fs::rename(staged, target) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                copy_durably(staged, target)?;
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound && tries < 3 && staged.exists() => {}
            Err(e) => return Err(e),
        }
    }
    // The rename is durable once the folder holding the new name is.
    std::fs::File::open(parent)?.sync_all()
}

/// Creates `dir` and its missing ancestors, syncing each new entry's parent
/// so the folders survive a crash along with the file put into them.
fn create_dirs_durably(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() && at != root {
        missing.push(at);
        at = match at.parent() {
            Some(parent) => parent,
            None => break,
        };
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Staging on another filesystem than the store: copy into a dot file beside
/// the target, sync it, and rename it into place, so the target is never
/// seen half written. The caller removes the staged file.
fn copy_durably(staged: &Path, target: &Path) -> io::Result<()> {
    let name = target.file_name().expect("a key has a file name");
    let tmp = target.with_file_name(format!(
        ".{}.{}.copy",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        std::fs::copy(staged, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_across_filesystems_lands_whole_and_leaves_no_dot_file() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"across").unwrap();
        let target = dir.path().join("blobs").join("ab");
        std::fs::create_dir_all(&target).unwrap();
        let target = target.join("abcd");
        copy_durably(&staged, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"across");
        let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["abcd"]);
    }

    #[tokio::test]
    async fn staging_is_neither_listed_nor_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskBlobs::new(dir.path().to_owned()).unwrap();
        std::fs::create_dir_all(dir.path().join(STAGING)).unwrap();
        std::fs::write(dir.path().join(STAGING).join("upload"), b"x").unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        assert!(matches!(
            store.head("staging/upload").await,
            Err(BlobError::Other(_))
        ));
    }

    #[tokio::test]
    async fn deleting_the_last_part_removes_its_upload_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskBlobs::new(dir.path().to_owned()).unwrap();
        for key in [
            "parts/u1/00000000000000000000",
            "parts/u2/00000000000000000000",
        ] {
            let staged = dir.path().join("staged");
            std::fs::write(&staged, b"part").unwrap();
            store.put_file(key, &staged).await.unwrap();
        }
        store.delete("parts/u1/00000000000000000000").await.unwrap();
        assert!(!dir.path().join("parts/u1").exists());
        assert!(dir.path().join("parts/u2").is_dir());
        store.delete("parts/u2/00000000000000000000").await.unwrap();
        assert!(dir.path().join("parts").is_dir());
    }
}
