//! Files no other local user may read: the data folder (0700), and in it
//! the database, its WAL and shared-memory files and the JWT secret (0600).
//! Every message and password hash is in them.

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Creates `dir`, and any folder missing above it, for its owner alone
/// (0700). A folder that exists is left as it is, since an operator may
/// have opened it on purpose (a backup group), but a warning says when
/// others may enter it.
///
/// # Errors
/// When a folder cannot be created or looked at.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & OTHERS != 0 {
        tracing::warn!(
            "the folder {} has mode {:o}: other users may read the data in it (chmod 700 it)",
            dir.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Makes the file at `path` readable and writable by its owner alone
/// (0600) when others had any access to it; nothing when it does not exist.
/// These are confab's own files, so a looser mode (a file made by an
/// earlier version) is closed, and the log says so.
///
/// # Errors
/// When the file cannot be looked at or its mode changed.
pub fn restrict(path: &Path) -> io::Result<()> {
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & OTHERS != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
        tracing::info!(
            "{} had mode {:o}, now 600: only confab's user may read it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_folder_and_its_missing_parents_are_the_owners_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!((mode(&tmp.path().join("a")), mode(&dir)), (0o700, 0o700));
        // An existing folder is kept as the operator set it.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o750)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);
    }

    #[test]
    fn a_file_others_may_read_is_closed_to_them_and_a_missing_one_is_no_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        restrict(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        restrict(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, Permissions::from_mode(0o400)).unwrap();
        restrict(&file).unwrap();
        assert_eq!(mode(&file), 0o400, "already private: left alone");
    }
}
