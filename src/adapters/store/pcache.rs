//! SQLite's default page cache behind a wrapper that skips the
//! truncations that cannot drop a page.
//!
//! At the end of every transaction SQLite asks its page cache to drop the
//! pages past the database's end (`xTruncate`). The default cache decides
//! how to look for them from the highest page number it has held since
//! the last truncation: a few hash slots when that number is near the
//! limit, every slot otherwise. A B-tree balance that puts its new pages in
//! ascending order swaps two of them through a page number no database
//! uses (the lock-byte page's: 262,145 with 4 KiB pages), so after any
//! such split the next commit walked the whole hash table of the writer's
//! 32 MiB cache, thousands of pages, to drop nothing. Under the open loop
//! (a commit every millisecond or so, most after a split) that was 9% of
//! the writer thread's samples.
//!
//! The wrapper keeps its own bound: the highest page number fetched, and
//! the numbers above it that a page was moved to and may still hold. A
//! truncation above both cannot drop a page and is skipped; every other
//! call goes to the default cache unchanged.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

#[cfg(test)]
thread_local! {
    /// Truncations this thread's connections skipped.
    static SKIPPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Pages this thread's connections moved above every page fetched.
    static MOVED_UP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// SQLite's own page cache, which the wrapper's methods call.
struct Under(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are plain functions and `pArg` a pointer SQLite
// hands to them; SQLite itself shares them between threads.
unsafe impl Send for Under {}
// SAFETY: as above; the value is never changed once set.
unsafe impl Sync for Under {}

static UNDER: OnceLock<Under> = OnceLock::new();

/// Makes the wrapper SQLite's page cache, over its default one. Takes
/// effect only before SQLite is initialized: returns SQLite's refusal
/// (`SQLITE_MISUSE`) otherwise, and the default cache stays.
pub fn install() -> c_int {
    let mut default = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: the option copies the current methods into the struct given.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    if UNDER.set(Under(default)).is_err() {
        return ffi::SQLITE_MISUSE;
    }
    let methods = ffi::sqlite3_pcache_methods2 {
        iVersion: 1,
        pArg: std::ptr::null_mut(),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: the option copies the methods; each is a function of this
    // module, valid for the process's life.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &methods) }
}

/// Whether SQLite's page caches are the wrapper's.
#[cfg(test)]
pub(super) fn installed() -> bool {
    UNDER.get().is_some()
}

/// The page numbers one cache may hold, as far as the wrapper knows.
#[derive(Debug, Default)]
struct Bounds {
    /// No page was fetched into the cache with a number above this.
    fetched: u32,
    /// Numbers above `fetched` that a page was moved to and may still hold.
    moved: Vec<u32>,
}

/// More pages than this held above `fetched` at once (a balance holds
/// one, for a moment) and they are counted as fetched instead.
const MOVED_MAX: usize = 8;

impl Bounds {
    /// A page numbered `key` may have been added.
    fn fetch(&mut self, key: u32) {
        self.fetched = self.fetched.max(key);
    }

    /// The page numbered `old` is now numbered `new`.
    fn rekey(&mut self, old: u32, new: u32) {
        if let Some(i) = self.moved.iter().position(|&k| k == old) {
            self.moved.swap_remove(i);
        }
        if new <= self.fetched {
            return;
        }
        #[cfg(test)]
        MOVED_UP.set(MOVED_UP.get() + 1);
        if self.moved.len() < MOVED_MAX {
            self.moved.push(new);
        } else {
            self.fetched = self.moved.drain(..).fold(new, u32::max);
        }
    }

    /// Whether a page numbered `limit` or more may be in the cache.
    fn any_from(&self, limit: u32) -> bool {
        limit <= self.fetched || self.moved.iter().any(|&k| k >= limit)
    }

    /// Every page numbered `limit` or more was dropped.
    fn truncated(&mut self, limit: u32) {
        self.fetched = self.fetched.min(limit.saturating_sub(1));
        self.moved.retain(|&k| k < limit);
    }
}

/// One cache: the default cache's, and what the wrapper knows of it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    bounds: Bounds,
}

/// SQLite's default page-cache methods, which the wrapper's call.
fn under() -> &'static ffi::sqlite3_pcache_methods2 {
    // Set before the methods that call this were handed to SQLite.
    &UNDER.get().expect("the default page cache is known").0
}

/// The wrapper's cache behind SQLite's handle on it.
///
/// # Safety
/// `cache` must be one that [`create`] made and [`destroy`] did not free,
/// used by one thread at a time (SQLite uses a cache under its connection).
unsafe fn cache<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: per the contract.
    unsafe { &mut *cache.cast::<Cache>() }
}

unsafe extern "C" fn init(_arg: *mut c_void) -> c_int {
    let d = under();
    // SAFETY: SQLite's default methods, called as SQLite would.
    unsafe { d.xInit.map_or(ffi::SQLITE_OK, |f| f(d.pArg)) }
}

unsafe extern "C" fn shutdown(_arg: *mut c_void) {
    let d = under();
    if let Some(f) = d.xShutdown {
        // SAFETY: as in `init`.
        unsafe { f(d.pArg) }
    }
}

unsafe extern "C" fn create(
    page: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let f = under()
        .xCreate
        .expect("the default page cache creates caches");
    // SAFETY: SQLite's arguments, passed on.
    let inner = unsafe { f(page, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let cache = Cache {
        inner,
        bounds: Bounds::default(),
    };
    Box::into_raw(Box::new(cache)).cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    // SAFETY: SQLite passes a cache `create` made.
    let c = unsafe { cache(p) };
    if let Some(f) = under().xCachesize {
        // SAFETY: the default cache's own handle.
        unsafe { f(c.inner, n) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as in `cachesize`.
    let c = unsafe { cache(p) };
    let f = under()
        .xPagecount
        .expect("the default page cache counts pages");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner) }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as in `cachesize`.
    let c = unsafe { cache(p) };
    if create != 0 {
        c.bounds.fetch(key);
    }
    let f = under()
        .xFetch
        .expect("the default page cache fetches pages");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner, key, create) }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: as in `cachesize`; the page is the default cache's.
    let c = unsafe { cache(p) };
    let f = under().xUnpin.expect("the default page cache unpins pages");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner, page, discard) }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: as in `unpin`.
    let c = unsafe { cache(p) };
    c.bounds.rekey(old, new);
    let f = under()
        .xRekey
        .expect("the default page cache renumbers pages");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner, page, old, new) }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { cache(p) };
    if !c.bounds.any_from(limit) {
        #[cfg(test)]
        SKIPPED.set(SKIPPED.get() + 1);
        return;
    }
    let f = under().xTruncate.expect("the default page cache truncates");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner, limit) };
    c.bounds.truncated(limit);
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `create` made this cache with `Box::into_raw`; SQLite
    // destroys it once and uses it no more.
    let c = unsafe { Box::from_raw(p.cast::<Cache>()) };
    let f = under()
        .xDestroy
        .expect("the default page cache destroys caches");
    // SAFETY: as in `cachesize`.
    unsafe { f(c.inner) }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: as in `cachesize`.
    let c = unsafe { cache(p) };
    if let Some(f) = under().xShrink {
        // SAFETY: as in `cachesize`.
        unsafe { f(c.inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::Text;

    use super::super::gather::tests::rows;

    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = Text)]
        integrity_check: String,
    }

    /// SQLite configured as the store does it, the wrapper installed.
    fn configured() {
        crate::adapters::store::sqlite::configure_sqlite();
        assert!(
            installed(),
            "SQLite was initialized before the store configured it"
        );
    }

    fn insert(conn: &mut SqliteConnection, rows: u32, bytes: u32) {
        conn.batch_execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO t (k) SELECT randomblob({bytes}) FROM n"
        ))
        .unwrap();
    }

    #[test]
    fn commits_after_page_splits_skip_the_truncation_and_the_database_stays_whole() {
        configured();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA cache_size = -32768; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB NOT NULL); CREATE INDEX t_k ON t (k);",
        )
        .unwrap();
        let (skipped, moved) = (SKIPPED.get(), MOVED_UP.get());
        // Random index keys, a commit each few: leaves split all over the index.
        for _ in 0..300 {
            insert(&mut conn, 10, 32);
        }
        assert!(
            MOVED_UP.get() > moved,
            "no balance moved a page through a spare number"
        );
        assert!(
            SKIPPED.get() - skipped >= 300,
            "commits truncated their caches"
        );

        // A transaction that grows the file and is rolled back, then pages
        // allocated again with the same numbers.
        conn.batch_execute("BEGIN").unwrap();
        insert(&mut conn, 2000, 1500);
        conn.batch_execute("ROLLBACK").unwrap();
        insert(&mut conn, 2000, 200);
        let mut other = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        for conn in [&mut conn, &mut other] {
            assert_eq!(rows(conn), 5000);
            let check = diesel::sql_query("PRAGMA integrity_check")
                .get_result::<Check>(conn)
                .unwrap();
            assert_eq!(check.integrity_check, "ok");
        }
    }

    #[test]
    fn pages_fetched_and_moved_bound_what_a_truncation_can_drop() {
        let mut b = Bounds::default();
        assert!(!b.any_from(1), "an empty cache holds nothing");
        for key in 1..=100 {
            b.fetch(key);
        }
        assert!(b.any_from(100) && !b.any_from(101));
        // A balance swapping pages 40 and 90 through the lock-byte page.
        b.rekey(40, 262_145);
        assert!(b.any_from(101) && b.any_from(262_145));
        b.rekey(90, 40);
        b.rekey(262_145, 90);
        assert!(!b.any_from(101), "nothing is left above the pages fetched");
    }

    #[test]
    fn a_truncation_lowers_the_bound_and_forgets_the_pages_it_dropped() {
        let mut b = Bounds::default();
        (1..=50).for_each(|k| b.fetch(k));
        b.rekey(7, 1_000);
        b.truncated(30);
        assert!(b.any_from(29) && !b.any_from(30));
        // A page moved up and discarded there is assumed present until a
        // truncation below it.
        b.rekey(3, 500);
        assert!(b.any_from(400));
        b.truncated(400);
        assert!(!b.any_from(30));
    }

    #[test]
    fn many_pages_held_above_the_fetched_ones_count_as_fetched() {
        let mut b = Bounds::default();
        b.fetch(10);
        for i in 0..=MOVED_MAX as u32 {
            b.rekey(i + 1, 100 + i);
        }
        assert!(b.moved.is_empty());
        assert_eq!(b.fetched, 100 + MOVED_MAX as u32);
        assert!(b.any_from(100 + MOVED_MAX as u32));
        assert!(!b.any_from(101 + MOVED_MAX as u32));
    }

    #[test]
    fn the_wrapped_cache_drops_what_a_truncation_asks_for_and_keeps_the_rest() {
        configured();
        // SAFETY: SQLite initialized, then one cache used by this thread
        // alone, each page fetched before it is unpinned or renumbered.
        unsafe {
            assert_eq!(ffi::sqlite3_initialize(), ffi::SQLITE_OK);
            let p = create(4096, 64, 1);
            assert!(!p.is_null());
            cachesize(p, 1000);
            for key in 1..=100 {
                let page = fetch(p, key, 2);
                assert!(!page.is_null());
                unpin(p, page, 0);
            }
            assert_eq!(pagecount(p), 100);
            // A balance's swap of pages 40 and 90 through a spare number.
            let (a, b) = (fetch(p, 40, 0), fetch(p, 90, 0));
            rekey(p, a, 40, 262_145);
            rekey(p, b, 90, 40);
            rekey(p, a, 262_145, 90);
            unpin(p, a, 0);
            unpin(p, b, 0);
            let skipped = SKIPPED.get();
            truncate(p, 101);
            assert_eq!(SKIPPED.get(), skipped + 1, "nothing to drop: skipped");
            assert_eq!(pagecount(p), 100);
            truncate(p, 61);
            assert_eq!(pagecount(p), 60, "pages 61 to 100 dropped");
            // A page moved past the limit and left there is dropped too.
            let c = fetch(p, 5, 0);
            rekey(p, c, 5, 5_000);
            unpin(p, c, 0);
            truncate(p, 61);
            assert_eq!(pagecount(p), 59);
            assert!(fetch(p, 5_000, 0).is_null());
            destroy(p);
        }
    }
}
