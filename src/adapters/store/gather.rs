//! A SQLite VFS over the default one that gathers consecutive writes to a
//! WAL file and hands them to the system as one write.
//!
//! SQLite writes each WAL frame as two `pwrite`s, its 24-byte header and
//! its page, so a commit of 400 pages made 800 system calls, each of which
//! found and locked the page-cache pages it touched (a frame straddles
//! two): a third of the writer thread's time. Here a run of writes, each
//! starting where the last ended, is kept in memory and written at once.
//!
//! Nothing is lost by waiting: the run is written before SQLite syncs the
//! file (every commit syncs the WAL before it is published to other
//! connections under `synchronous = FULL`, the only mode confab uses),
//! before any read of the bytes it holds, before the file's size is asked
//! or changed, and before it is closed. A write that does not continue the
//! run, or would take it past [`GATHER_LIMIT`], writes the run out first, so
//! writes reach the file in the order SQLite made them. Files other than
//! WALs are the default VFS's own, untouched.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::Once;

use libsqlite3_sys as ffi;

/// The VFS's name.
const NAME: &CStr = c"confab-gather";

/// The most a run holds before it is written out: under 128 KiB, since the
/// default VFS writes at most 128 KiB - 1 bytes a call (it masks the length
/// it is given to 17 bits).
const GATHER_LIMIT: usize = 120 * 1024;

#[cfg(test)]
thread_local! {
    /// Runs this thread wrote out: how many system writes its WALs took.
    static RUNS_WRITTEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Makes this VFS SQLite's default for every connection the process opens
/// from now on; the first call does it, later calls do nothing.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which
        // lives as long as the process; the new VFS is leaked for the same
        // reason, as `sqlite3_vfs_register` requires.
        unsafe {
            let under = ffi::sqlite3_vfs_find(ptr::null());
            if under.is_null() {
                tracing::warn!("SQLite has no default VFS: WAL writes are not gathered");
                return;
            }
            let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                iVersion: 2,
                szOsFile: (WAL_FILE_SIZE + (*under).szOsFile as usize) as c_int,
                mxPathname: (*under).mxPathname,
                pNext: ptr::null_mut(),
                zName: NAME.as_ptr(),
                pAppData: under.cast(),
                xOpen: Some(open),
                xDelete: Some(delete),
                xAccess: Some(access),
                xFullPathname: Some(full_pathname),
                xDlOpen: (*under).xDlOpen,
                xDlError: (*under).xDlError,
                xDlSym: (*under).xDlSym,
                xDlClose: (*under).xDlClose,
                xRandomness: (*under).xRandomness,
                xSleep: (*under).xSleep,
                xCurrentTime: (*under).xCurrentTime,
                xGetLastError: (*under).xGetLastError,
                xCurrentTimeInt64: (*under).xCurrentTimeInt64,
                xSetSystemCall: None,
                xGetSystemCall: None,
                xNextSystemCall: None,
            }));
            let rc = ffi::sqlite3_vfs_register(vfs, 1);
            if rc != ffi::SQLITE_OK {
                tracing::warn!(
                    rc,
                    "cannot register the SQLite VFS: WAL writes are not gathered"
                );
            }
        }
    });
}

/// A WAL file opened through this VFS: the run kept in memory, then the
/// default VFS's file, in the space SQLite allocated after this struct.
#[repr(C)]
struct WalFile {
    /// SQLite's view of the file: its methods are [`METHODS`].
    base: ffi::sqlite3_file,
    /// Where in the file `run` goes.
    start: i64,
    /// Writes not yet handed to the system, each starting where the last ended.
    run: Vec<u8>,
}

/// `WalFile`'s size rounded up so that the default VFS's file after it is
/// aligned as any C struct.
const WAL_FILE_SIZE: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

/// The default VFS this one opens files with.
///
/// # Safety
/// `vfs` must be this VFS, as registered by [`install`].
unsafe fn under(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: `install` put the default VFS in `pAppData`.
    unsafe { (*vfs).pAppData.cast() }
}

/// The default VFS's file inside `file`.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: SQLite allocated `szOsFile` bytes, the inner file after ours.
    unsafe { file.cast::<u8>().add(WAL_FILE_SIZE).cast() }
}

/// The default VFS's methods for the inner file.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: the inner file was opened successfully, so its methods are set
    // and static (they belong to the default VFS).
    unsafe { &*(*inner(file)).pMethods }
}

/// Hands the run to the system, if there is one. A run that could not be
/// written is kept, so that the next sync tries again and fails in turn:
/// a commit is never reported durable without it.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened.
unsafe fn write_run(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract, `file` is a live `WalFile`.
    unsafe {
        let wal = &mut *file.cast::<WalFile>();
        if wal.run.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = methods(file).xWrite.expect("the default VFS writes");
        // The run is at most GATHER_LIMIT plus one write: it fits a c_int.
        let rc = write(
            inner(file),
            wal.run.as_ptr().cast(),
            wal.run.len() as c_int,
            wal.start,
        );
        if rc == ffi::SQLITE_OK {
            wal.run.clear();
            #[cfg(test)]
            RUNS_WRITTEN.set(RUNS_WRITTEN.get() + 1);
        }
        rc
    }
}

/// Writes the run out, then does `next` unless that failed.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened.
unsafe fn after_run(file: *mut ffi::sqlite3_file, next: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: per the contract.
    match unsafe { write_run(file) } {
        ffi::SQLITE_OK => next(),
        rc => rc,
    }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives this VFS, a file of `szOsFile` bytes, and valid
    // arguments for the default VFS's xOpen.
    unsafe {
        let under = under(vfs);
        let open = (*under).xOpen.expect("the default VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // The default VFS's file in place, with its own methods.
            return open(under, name, file, flags, out_flags);
        }
        (*inner(file)).pMethods = ptr::null();
        let rc = open(under, name, inner(file), flags, out_flags);
        if rc != ffi::SQLITE_OK || (*inner(file)).pMethods.is_null() {
            // SQLite calls no method of a file whose methods are null.
            (*file).pMethods = ptr::null();
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        ptr::write(
            file.cast::<WalFile>(),
            WalFile {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                start: 0,
                run: Vec::new(),
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: forwarded as given, to the VFS this one wraps.
    unsafe {
        let under = under(vfs);
        ((*under).xDelete.expect("the default VFS deletes"))(under, name, sync_dir)
    }
}

unsafe extern "C" fn access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: forwarded as given, to the VFS this one wraps.
    unsafe {
        let under = under(vfs);
        ((*under).xAccess.expect("the default VFS checks access"))(under, name, flags, out)
    }
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    n_out: c_int,
    out: *mut std::ffi::c_char,
) -> c_int {
    // SAFETY: forwarded as given, to the VFS this one wraps.
    unsafe {
        let under = under(vfs);
        ((*under)
            .xFullPathname
            .expect("the default VFS resolves paths"))(under, name, n_out, out)
    }
}

/// The methods of a WAL file opened through this VFS (version 1: a WAL has
/// no shared memory and is never memory-mapped).
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through this VFS, once; the
    // `WalFile` is dropped here and never used again.
    unsafe {
        let written = write_run(file);
        // Dropped with the file even if it could not be written: SQLite has
        // not been told that anything in it is durable.
        let closed = (methods(file).xClose.expect("the default VFS closes"))(inner(file));
        ptr::drop_in_place(file.cast::<WalFile>());
        if written == ffi::SQLITE_OK {
            closed
        } else {
            written
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite reads a `WalFile` it opened through this VFS.
    unsafe {
        let wal = &*file.cast::<WalFile>();
        let end = wal.start + wal.run.len() as i64;
        let read = || {
            (methods(file).xRead.expect("the default VFS reads"))(inner(file), buf, amount, offset)
        };
        if offset < end && offset + i64::from(amount) > wal.start {
            after_run(file, read)
        } else {
            read()
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite writes `amount` bytes from `buf` to a `WalFile` it
    // opened through this VFS.
    unsafe {
        let len = usize::try_from(amount).unwrap_or(0);
        let wal = &*file.cast::<WalFile>();
        let continues = offset == wal.start + wal.run.len() as i64;
        let run_first = !wal.run.is_empty() && (!continues || wal.run.len() + len > GATHER_LIMIT);
        let add = || {
            if len > GATHER_LIMIT {
                return (methods(file).xWrite.expect("the default VFS writes"))(
                    inner(file),
                    buf,
                    amount,
                    offset,
                );
            }
            let wal = &mut *file.cast::<WalFile>();
            if wal.run.is_empty() {
                wal.start = offset;
            }
            wal.run
                .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
            ffi::SQLITE_OK
        };
        if run_first {
            after_run(file, add)
        } else {
            add()
        }
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite truncates a `WalFile` it opened through this VFS.
    unsafe {
        after_run(file, || {
            (methods(file).xTruncate.expect("the default VFS truncates"))(inner(file), size)
        })
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite syncs a `WalFile` it opened through this VFS.
    unsafe {
        after_run(file, || {
            (methods(file).xSync.expect("the default VFS syncs"))(inner(file), flags)
        })
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite asks the size of a `WalFile` it opened through this VFS.
    unsafe {
        after_run(file, || {
            (methods(file)
                .xFileSize
                .expect("the default VFS sizes files"))(inner(file), size)
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`.
    unsafe { (methods(file).xLock.expect("the default VFS locks"))(inner(file), level) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`.
    unsafe { (methods(file).xUnlock.expect("the default VFS unlocks"))(inner(file), level) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`.
    unsafe {
        (methods(file)
            .xCheckReservedLock
            .expect("the default VFS checks locks"))(inner(file), out)
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`. SQLite sends a
    // WAL no control that looks at its bytes (it asks its size instead).
    unsafe {
        (methods(file)
            .xFileControl
            .expect("the default VFS has file controls"))(inner(file), op, arg)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`.
    unsafe {
        (methods(file)
            .xSectorSize
            .expect("the default VFS has sectors"))(inner(file))
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded to the inner file of a `WalFile`.
    unsafe {
        (methods(file)
            .xDeviceCharacteristics
            .expect("the default VFS describes devices"))(inner(file))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn connect(path: &std::path::Path) -> SqliteConnection {
        crate::adapters::store::sqlite::configure_sqlite();
        install();
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .unwrap();
        conn
    }

    /// The rows of table `t`.
    pub(in crate::adapters::store) fn rows(conn: &mut SqliteConnection) -> i64 {
        diesel::sql_query("SELECT COUNT(*) AS n FROM t")
            .get_result::<Count>(conn)
            .unwrap()
            .n
    }

    #[test]
    fn a_commit_is_in_the_files_when_it_returns_and_its_frames_left_in_few_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut conn = connect(&path);
        conn.batch_execute(
            "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
        )
        .unwrap();
        let before = RUNS_WRITTEN.get();
        // About 500 pages of 4 KiB: 1,000 writes to the WAL without gathering.
        conn.batch_execute(
            "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO t (body) SELECT randomblob(1000) FROM n; COMMIT;",
        )
        .unwrap();
        let runs = RUNS_WRITTEN.get() - before;
        // About 2 MiB of frames in runs of up to 120 KiB.
        assert!((1..=25).contains(&runs), "{runs} writes for one commit");

        // What a crash right now would leave: the files as they are.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&path, copy.path().join("db.sqlite")).unwrap();
        let wal = dir.path().join("db.sqlite-wal");
        std::fs::copy(&wal, copy.path().join("db.sqlite-wal")).unwrap();
        let mut recovered = connect(&copy.path().join("db.sqlite"));
        assert_eq!(rows(&mut recovered), 2000);
        diesel::sql_query("PRAGMA integrity_check")
            .execute(&mut recovered)
            .unwrap();
    }

    #[test]
    fn other_connections_read_every_commit_and_rewrites_in_one_transaction_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut writer = connect(&path);
        // A small cache, so that the transaction spills pages to the WAL
        // and writes some of them again before it commits.
        writer
            .batch_execute(
                "PRAGMA cache_size = 10; CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
            )
            .unwrap();
        let mut reader = connect(&path);
        for round in 1..=5 {
            writer
                .batch_execute(
                    "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
                     INSERT INTO t (body) SELECT randomblob(500) FROM n; \
                     UPDATE t SET body = randomblob(400) WHERE id % 7 = 0; COMMIT;",
                )
                .unwrap();
            assert_eq!(rows(&mut reader), 300 * round);
        }
        diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut writer)
            .unwrap();
        assert_eq!(rows(&mut reader), 1500);
        #[derive(QueryableByName)]
        struct Check {
            #[diesel(sql_type = diesel::sql_types::Text)]
            integrity_check: String,
        }
        let check = diesel::sql_query("PRAGMA integrity_check")
            .get_result::<Check>(&mut reader)
            .unwrap();
        assert_eq!(check.integrity_check, "ok");
    }
}
