//! The queries on users and blocks.

use diesel::QueryResult;

use crate::domain::user::PasswordHash;
use crate::domain::{Timestamp, User, UserId};

/// The queries on users and blocks, on either backend's connection.
pub trait UserQueries {
    /// Stores a new user; a name taken in any case is a unique violation.
    fn insert_user(&mut self, user: &User, hash: &PasswordHash, now: Timestamp) -> QueryResult<()>;
    /// The user registered under the case-folded name `key`, with their hash.
    fn credentials(&mut self, key: &str) -> anyhow::Result<Option<(User, PasswordHash)>>;
    /// The user with this id, unless the account was deleted.
    fn user(&mut self, id: &str) -> anyhow::Result<Option<User>>;
    /// The users among `ids` that exist, with when each was last seen.
    fn users_last_seen(&mut self, ids: &[String])
    -> anyhow::Result<Vec<(User, Option<Timestamp>)>>;
    /// Up to `limit` users whose case-folded name starts with `key_prefix`,
    /// ordered by it; deleted accounts are not found.
    fn users_by_prefix(&mut self, key_prefix: &str, limit: u32) -> anyhow::Result<Vec<User>>;
    /// Records when a user was last seen.
    fn set_last_seen(&mut self, id: &str, at: Timestamp) -> QueryResult<()>;
    /// Stores a block; false when there was one.
    fn insert_block(&mut self, blocker: &str, blocked: &str, now: Timestamp) -> QueryResult<bool>;
    /// Removes a block; false when there was none.
    fn delete_block(&mut self, blocker: &str, blocked: &str) -> QueryResult<bool>;
    /// The users `blocker` blocks, the earliest blocked first.
    fn blocked_by(&mut self, blocker: &str) -> anyhow::Result<Vec<User>>;
    /// The users who block `user`.
    fn blockers_of(&mut self, user: &str) -> QueryResult<Vec<UserId>>;
}

/// Implements [`UserQueries`] for a backend's connection (see the module
/// documentation of `queries` for why a macro).
macro_rules! user_queries {
    ($conn:ty) => {
        const _: () = {
            use diesel::prelude::*;
            use $crate::adapters::store::common::user_from_row;
            use $crate::adapters::store::queries::{Sql, UserQueries, prefix_range};
            use $crate::adapters::store::schema::{blocks, users};
            use $crate::domain::user::PasswordHash;
            use $crate::domain::{Timestamp, User, UserId};

            impl UserQueries for $conn {
                fn insert_user(
                    &mut self,
                    user: &User,
                    hash: &PasswordHash,
                    now: Timestamp,
                ) -> QueryResult<()> {
                    diesel::insert_into(users::table)
                        .values((
                            users::id.eq(user.id.as_str()),
                            users::username.eq(user.username.as_str()),
                            users::username_key.eq(user.username.key()),
                            users::password_hash.eq(&hash.0),
                            users::created_at.eq(now.millis()),
                        ))
                        .execute(self)?;
                    Ok(())
                }

                fn credentials(
                    &mut self,
                    key: &str,
                ) -> anyhow::Result<Option<(User, PasswordHash)>> {
                    // A deleted account keeps its name but signs nobody in.
                    let row = users::table
                        .filter(users::username_key.eq(key))
                        .filter(users::deleted_at.is_null())
                        .select((users::id, users::username, users::password_hash))
                        .first::<(String, String, String)>(self)
                        .optional()?;
                    row.map(|(id, name, hash)| Ok((user_from_row((id, name))?, PasswordHash(hash))))
                        .transpose()
                }

                fn user(&mut self, id: &str) -> anyhow::Result<Option<User>> {
                    users::table
                        .find(id)
                        .filter(users::deleted_at.is_null())
                        .select((users::id, users::username))
                        .first::<(String, String)>(self)
                        .optional()?
                        .map(user_from_row)
                        .transpose()
                }

                fn users_last_seen(
                    &mut self,
                    ids: &[String],
                ) -> anyhow::Result<Vec<(User, Option<Timestamp>)>> {
                    let mut out = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(<$conn as Sql>::IDS_PER_QUERY) {
                        let rows = users::table
                            .filter(users::id.eq_any(chunk))
                            .select((users::id, users::username, users::last_seen))
                            .load::<(String, String, Option<i64>)>(self)?;
                        for (id, name, seen) in rows {
                            out.push((
                                user_from_row((id, name))?,
                                seen.map(Timestamp::from_millis),
                            ));
                        }
                    }
                    Ok(out)
                }

                fn users_by_prefix(
                    &mut self,
                    key_prefix: &str,
                    limit: u32,
                ) -> anyhow::Result<Vec<User>> {
                    let (lo, hi) = prefix_range(key_prefix);
                    users::table
                        .filter(users::username_key.ge(lo))
                        .filter(users::username_key.lt(hi))
                        .filter(users::deleted_at.is_null())
                        .order(users::username_key)
                        .limit(i64::from(limit))
                        .select((users::id, users::username))
                        .load::<(String, String)>(self)?
                        .into_iter()
                        .map(user_from_row)
                        .collect()
                }

                fn set_last_seen(&mut self, id: &str, at: Timestamp) -> QueryResult<()> {
                    diesel::update(users::table.find(id))
                        .set(users::last_seen.eq(at.millis()))
                        .execute(self)?;
                    Ok(())
                }

                fn insert_block(
                    &mut self,
                    blocker: &str,
                    blocked: &str,
                    now: Timestamp,
                ) -> QueryResult<bool> {
                    let added = diesel::insert_into(blocks::table)
                        .values((
                            blocks::blocker.eq(blocker),
                            blocks::blocked.eq(blocked),
                            blocks::created_at.eq(now.millis()),
                        ))
                        .on_conflict_do_nothing()
                        .execute(self)?;
                    Ok(added > 0)
                }

                fn delete_block(&mut self, blocker: &str, blocked: &str) -> QueryResult<bool> {
                    let removed =
                        diesel::delete(blocks::table.find((blocker, blocked))).execute(self)?;
                    Ok(removed > 0)
                }

                fn blocked_by(&mut self, blocker: &str) -> anyhow::Result<Vec<User>> {
                    blocks::table
                        .inner_join(users::table.on(users::id.eq(blocks::blocked)))
                        .filter(blocks::blocker.eq(blocker))
                        // Block order even within one millisecond: `created_at` ties.
                        .order(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                            <$conn as Sql>::BLOCK_ORDER,
                        ))
                        .select((users::id, users::username))
                        .load::<(String, String)>(self)?
                        .into_iter()
                        .map(user_from_row)
                        .collect()
                }

                fn blockers_of(&mut self, user: &str) -> QueryResult<Vec<UserId>> {
                    Ok(blocks::table
                        .filter(blocks::blocked.eq(user))
                        .select(blocks::blocker)
                        .load::<String>(self)?
                        .into_iter()
                        .map(UserId::new)
                        .collect())
                }
            }
        };
    };
}
pub(crate) use user_queries;
