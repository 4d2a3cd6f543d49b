//! The queries on files, the messages that carry them, and resumable uploads.

use diesel::QueryResult;

use crate::adapters::store::schema::files;
use crate::domain::file::{FileInfo, Upload};

/// A file's row: (id, uploader, name, size, content type, sha256, width,
/// height, thumbnail, created at).
pub type FileRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<i32>,
    Option<i32>,
    Option<String>,
    i64,
);

/// The columns of a [`FileRow`].
pub type FileColumns = (
    files::id,
    files::uploader,
    files::name,
    files::size,
    files::content_type,
    files::sha256,
    files::width,
    files::height,
    files::thumbnail,
    files::created_at,
);

/// An upload's row: (id, user, length, received, name, created at, expires
/// at, file id).
pub type UploadRow = (String, String, i64, i64, String, i64, i64, Option<String>);

/// The queries on files, on either backend's connection.
pub trait FileQueries {
    /// Locks `user`'s row until the transaction ends.
    fn lock_user(&mut self, user: &str) -> QueryResult<()>;
    /// Stores a file's row.
    fn insert_file(&mut self, file: &FileInfo) -> QueryResult<()>;
    /// The rows of the files among `ids`.
    fn file_rows(&mut self, ids: &[String]) -> QueryResult<Vec<FileRow>>;
    /// The sum of the sizes of `user`'s files and of the lengths of their
    /// uploads under way, `except` one.
    fn used_bytes(&mut self, user: &str, except: Option<&str>) -> QueryResult<i64>;
    /// Marks an upload complete with the file it made.
    fn complete_upload(&mut self, id: &str, file: &str) -> QueryResult<()>;
    /// Whether `user` is a member of a conversation where a message carries `file`.
    fn referenced_for(&mut self, file: &str, user: &str) -> QueryResult<bool>;
    /// Up to `limit` files created before `before` that no message carries, oldest first.
    fn unreferenced_files(&mut self, before: i64, limit: i64) -> QueryResult<Vec<FileRow>>;
    /// Deletes the files among `ids` that no message carries; their rows.
    fn delete_unreferenced(&mut self, ids: &[String]) -> QueryResult<Vec<FileRow>>;
    /// Those of `shas` that some file names as its bytes or its thumbnail.
    fn referenced_blobs(&mut self, shas: &[String]) -> QueryResult<Vec<String>>;
    /// Stores an upload's row.
    fn insert_upload(&mut self, upload: &Upload) -> QueryResult<()>;
    /// One upload's row.
    fn upload_row(&mut self, id: &str) -> QueryResult<Option<UploadRow>>;
    /// Moves an upload's received count from `from` to `to`; whether it moved.
    fn advance_upload(&mut self, id: &str, from: i64, to: i64) -> QueryResult<bool>;
    /// Deletes an upload's row; whether there was one.
    fn delete_upload(&mut self, id: &str) -> QueryResult<bool>;
    /// Up to `limit` uploads that expired before `now`.
    fn expired_uploads(&mut self, now: i64, limit: i64) -> QueryResult<Vec<UploadRow>>;
}

/// Implements [`FileQueries`] for a backend's connection (see the module
/// documentation of `queries` for why a macro).
macro_rules! file_queries {
    ($conn:ty) => {
        const _: () = {
            use diesel::dsl::{exists, not};
            use diesel::prelude::*;
            use diesel::sql_types::{BigInt, Nullable};
            use $crate::adapters::store::queries::{
                FileColumns, FileQueries, FileRow, Sql, UploadRow,
            };
            use $crate::adapters::store::schema::{files, members, message_files, uploads, users};
            use $crate::domain::file::{FileInfo, Upload};

            /// Sizes and dimensions as the columns hold them.
            fn column(n: u64) -> i64 {
                i64::try_from(n).unwrap_or(i64::MAX)
            }

            fn dimension(n: Option<u32>) -> Option<i32> {
                n.and_then(|n| i32::try_from(n).ok())
            }

            impl FileQueries for $conn {
                fn lock_user(&mut self, user: &str) -> QueryResult<()> {
                    // An update that changes nothing takes the row lock on
                    // PostgreSQL, with one statement for both backends.
                    diesel::update(users::table.find(user))
                        .set(users::generation.eq(users::generation))
                        .execute(self)
                        .map(drop)
                }

                fn insert_file(&mut self, f: &FileInfo) -> QueryResult<()> {
                    diesel::insert_into(files::table)
                        .values((
                            files::id.eq(f.id.as_str()),
                            files::uploader.eq(f.uploader.as_str()),
                            files::name.eq(&f.name),
                            files::size.eq(column(f.size)),
                            files::content_type.eq(&f.content_type),
                            files::sha256.eq(&f.sha256),
                            files::width.eq(dimension(f.width)),
                            files::height.eq(dimension(f.height)),
                            files::thumbnail.eq(f.thumbnail.as_deref()),
                            files::created_at.eq(f.created_at.millis()),
                        ))
                        .execute(self)
                        .map(drop)
                }

                fn file_rows(&mut self, ids: &[String]) -> QueryResult<Vec<FileRow>> {
                    let mut rows = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(<$conn as Sql>::IDS_PER_QUERY) {
                        rows.extend(
                            files::table
                                .filter(files::id.eq_any(chunk))
                                .select(FileColumns::default())
                                .load::<FileRow>(self)?,
                        );
                    }
                    Ok(rows)
                }

                fn used_bytes(&mut self, user: &str, except: Option<&str>) -> QueryResult<i64> {
                    // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
                    let stored: Option<i64> = files::table
                        .filter(files::uploader.eq(user))
                        .select(diesel::dsl::sql::<Nullable<BigInt>>(
                            "CAST(SUM(size) AS BIGINT)",
                        ))
                        .first(self)?;
                    let reserved: Option<i64> = uploads::table
                        .filter(uploads::user_id.eq(user))
                        .filter(uploads::file_id.is_null())
                        .filter(uploads::id.ne(except.unwrap_or_default()))
                        .select(diesel::dsl::sql::<Nullable<BigInt>>(
                            "CAST(SUM(length) AS BIGINT)",
                        ))
                        .first(self)?;
                    Ok(stored.unwrap_or(0).saturating_add(reserved.unwrap_or(0)))
                }

                fn complete_upload(&mut self, id: &str, file: &str) -> QueryResult<()> {
                    diesel::update(uploads::table.find(id))
                        .set(uploads::file_id.eq(file))
                        .execute(self)
                        .map(drop)
                }

                fn referenced_for(&mut self, file: &str, user: &str) -> QueryResult<bool> {
                    diesel::select(exists(
                        message_files::table
                            .inner_join(
                                members::table.on(members::conversation_id
                                    .eq(message_files::conversation_id)
                                    .and(members::user_id.eq(user))),
                            )
                            .filter(message_files::file_id.eq(file)),
                    ))
                    .get_result(self)
                }

                fn unreferenced_files(
                    &mut self,
                    before: i64,
                    limit: i64,
                ) -> QueryResult<Vec<FileRow>> {
                    files::table
                        .filter(files::created_at.lt(before))
                        .filter(not(exists(
                            message_files::table.filter(message_files::file_id.eq(files::id)),
                        )))
                        .order(files::created_at)
                        .limit(limit)
                        .select(FileColumns::default())
                        .load(self)
                }

                fn delete_unreferenced(&mut self, ids: &[String]) -> QueryResult<Vec<FileRow>> {
                    let mut gone = Vec::new();
                    for chunk in ids.chunks(<$conn as Sql>::IDS_PER_QUERY) {
                        let doomed: Vec<FileRow> = files::table
                            .filter(files::id.eq_any(chunk))
                            .filter(not(exists(
                                message_files::table.filter(message_files::file_id.eq(files::id)),
                            )))
                            .select(FileColumns::default())
                            .load(self)?;
                        let doomed_ids: Vec<&str> = doomed.iter().map(|r| r.0.as_str()).collect();
                        diesel::delete(files::table.filter(files::id.eq_any(&doomed_ids)))
                            .execute(self)?;
                        gone.extend(doomed);
                    }
                    Ok(gone)
                }

                fn referenced_blobs(&mut self, shas: &[String]) -> QueryResult<Vec<String>> {
                    let mut kept = Vec::new();
                    for chunk in shas.chunks(<$conn as Sql>::IDS_PER_QUERY) {
                        kept.extend(
                            files::table
                                .filter(files::sha256.eq_any(chunk))
                                .select(files::sha256)
                                .distinct()
                                .load::<String>(self)?,
                        );
                        kept.extend(
                            files::table
                                .filter(files::thumbnail.eq_any(chunk))
                                .select(files::thumbnail.assume_not_null())
                                .distinct()
                                .load::<String>(self)?,
                        );
                    }
                    kept.sort_unstable();
                    kept.dedup();
                    Ok(kept)
                }

                fn insert_upload(&mut self, u: &Upload) -> QueryResult<()> {
                    diesel::insert_into(uploads::table)
                        .values((
                            uploads::id.eq(u.id.as_str()),
                            uploads::user_id.eq(u.user.as_str()),
                            uploads::length.eq(column(u.length)),
                            uploads::received.eq(column(u.offset)),
                            uploads::name.eq(&u.name),
                            uploads::created_at.eq(u.created_at.millis()),
                            uploads::expires_at.eq(u.expires_at.millis()),
                        ))
                        .execute(self)
                        .map(drop)
                }

                fn upload_row(&mut self, id: &str) -> QueryResult<Option<UploadRow>> {
                    uploads::table.find(id).first::<UploadRow>(self).optional()
                }

                fn advance_upload(&mut self, id: &str, from: i64, to: i64) -> QueryResult<bool> {
                    diesel::update(
                        uploads::table
                            .filter(uploads::id.eq(id))
                            .filter(uploads::received.eq(from)),
                    )
                    .set(uploads::received.eq(to))
                    .execute(self)
                    .map(|n| n == 1)
                }

                fn delete_upload(&mut self, id: &str) -> QueryResult<bool> {
                    diesel::delete(uploads::table.find(id))
                        .execute(self)
                        .map(|n| n == 1)
                }

                fn expired_uploads(&mut self, now: i64, limit: i64) -> QueryResult<Vec<UploadRow>> {
                    uploads::table
                        .filter(uploads::expires_at.lt(now))
                        .order(uploads::expires_at)
                        .limit(limit)
                        .load(self)
                }
            }
        };
    };
}
pub(crate) use file_queries;
