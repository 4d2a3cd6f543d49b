//! The queries on device sessions and refresh tokens.

use diesel::QueryResult;

use crate::domain::device::{Device, NewDevice};

/// A device session's user, generation and liveness, as one row:
/// (user id, username, generation, deleted at, ended at, refresh expires
/// at, last used at).
pub type TokenRow = (String, String, i64, Option<i64>, Option<i64>, i64, i64);

/// The queries on device sessions, on either backend's connection.
pub trait DeviceQueries {
    /// Stores a device session and its first refresh token.
    fn insert_device(&mut self, id: &str, device: &NewDevice) -> QueryResult<()>;
    /// The ids of the user's live device sessions, least recently used first.
    fn live_devices(&mut self, user: &str, now: i64) -> QueryResult<Vec<String>>;
    /// What a token of `device` needs checked, with the user it belongs to.
    fn token_row(&mut self, device: &str) -> QueryResult<Option<TokenRow>>;
    /// The device session a refresh token hash belongs to, and when the
    /// token was spent, if it was.
    fn refresh_token(&mut self, hash: &str) -> QueryResult<Option<(String, Option<i64>)>>;
    /// Spends a refresh token; false when it was spent already.
    fn spend_refresh(&mut self, hash: &str, now: i64) -> QueryResult<bool>;
    /// Stores a device session's new refresh token, forgets those it spent
    /// longer ago than a token lives, and records its use.
    fn renew_device(
        &mut self,
        device: &str,
        hash: &str,
        now: i64,
        expires_at: i64,
        address: Option<&str>,
    ) -> QueryResult<()>;
    /// Records that a device session was used.
    fn touch_device(&mut self, device: &str, now: i64, address: Option<&str>) -> QueryResult<()>;
    /// The user's live device sessions, most recently used first.
    fn devices_of(&mut self, user: &str, now: i64) -> anyhow::Result<Vec<Device>>;
    /// Ends the live (not ended, not expired) device sessions of `user`
    /// among `ids` (all of them with `None`), but `keep`; how many ended.
    fn end_devices(
        &mut self,
        user: &str,
        ids: Option<&[String]>,
        keep: Option<&str>,
        now: i64,
    ) -> QueryResult<usize>;
    /// The user's generation.
    fn generation(&mut self, user: &str) -> QueryResult<i64>;
    /// Voids every token issued to the user so far.
    fn bump_generation(&mut self, user: &str) -> QueryResult<()>;
    /// Those of `ids` that are not live device sessions.
    fn ended_among(&mut self, ids: &[String], now: i64) -> QueryResult<Vec<String>>;
    /// The password hash of a user who is not deleted.
    fn live_password_hash(&mut self, user: &str) -> QueryResult<Option<String>>;
    /// Replaces a user's password hash.
    fn set_password_hash(&mut self, user: &str, hash: &str) -> QueryResult<()>;
    /// Marks a user deleted, with no usable password.
    fn mark_deleted(&mut self, user: &str, now: i64) -> QueryResult<()>;
    /// Forgets the user's device sessions that ended or expired before
    /// `before`, with their refresh tokens.
    fn prune_devices(&mut self, user: &str, before: i64) -> QueryResult<()>;
}

/// Implements [`DeviceQueries`] for a backend's connection (see the module
/// documentation of `queries` for why a macro).
macro_rules! device_queries {
    ($conn:ty) => {
        const _: () = {
            use diesel::prelude::*;
            use $crate::adapters::store::queries::{DeviceQueries, Sql, TokenRow};
            use $crate::adapters::store::schema::{devices, refresh_tokens, users};
            use $crate::domain::device::{Device, DeviceName, NewDevice};
            use $crate::domain::{DeviceId, Timestamp};

            impl DeviceQueries for $conn {
                fn insert_device(&mut self, id: &str, device: &NewDevice) -> QueryResult<()> {
                    let now = device.now.millis();
                    diesel::insert_into(devices::table)
                        .values((
                            devices::id.eq(id),
                            devices::user_id.eq(device.user.as_str()),
                            devices::name.eq(device.info.name.as_str()),
                            devices::created_at.eq(now),
                            devices::last_used_at.eq(now),
                            devices::last_address.eq(device.info.address.as_deref()),
                            devices::refresh_expires_at.eq(device.refresh_expires_at.millis()),
                        ))
                        .execute(self)?;
                    diesel::insert_into(refresh_tokens::table)
                        .values((
                            refresh_tokens::hash.eq(&device.refresh.0),
                            refresh_tokens::device_id.eq(id),
                        ))
                        .execute(self)?;
                    Ok(())
                }

                fn live_devices(&mut self, user: &str, now: i64) -> QueryResult<Vec<String>> {
                    devices::table
                        .filter(devices::user_id.eq(user))
                        .filter(devices::ended_at.is_null())
                        .filter(devices::refresh_expires_at.gt(now))
                        .order((devices::last_used_at, devices::created_at))
                        .select(devices::id)
                        .load(self)
                }

                fn token_row(&mut self, device: &str) -> QueryResult<Option<TokenRow>> {
                    devices::table
                        .inner_join(users::table)
                        .filter(devices::id.eq(device))
                        .select((
                            users::id,
                            users::username,
                            users::generation,
                            users::deleted_at,
                            devices::ended_at,
                            devices::refresh_expires_at,
                            devices::last_used_at,
                        ))
                        .first(self)
                        .optional()
                }

                fn refresh_token(
                    &mut self,
                    hash: &str,
                ) -> QueryResult<Option<(String, Option<i64>)>> {
                    refresh_tokens::table
                        .find(hash)
                        .select((refresh_tokens::device_id, refresh_tokens::rotated_at))
                        .first(self)
                        .optional()
                }

                fn spend_refresh(&mut self, hash: &str, now: i64) -> QueryResult<bool> {
                    // The condition makes it a compare-and-swap: of two
                    // transactions spending one token, the second finds it
                    // spent (PostgreSQL re-reads the row once the first commits).
                    let spent = diesel::update(
                        refresh_tokens::table
                            .find(hash)
                            .filter(refresh_tokens::rotated_at.is_null()),
                    )
                    .set(refresh_tokens::rotated_at.eq(now))
                    .execute(self)?;
                    Ok(spent == 1)
                }

                fn renew_device(
                    &mut self,
                    device: &str,
                    hash: &str,
                    now: i64,
                    expires_at: i64,
                    address: Option<&str>,
                ) -> QueryResult<()> {
                    diesel::insert_into(refresh_tokens::table)
                        .values((
                            refresh_tokens::hash.eq(hash),
                            refresh_tokens::device_id.eq(device),
                        ))
                        .execute(self)?;
                    // A token spent longer ago than a token lives would be
                    // refused as expired anyway: forgetting it keeps a
                    // session that refreshes for years to a month of rows.
                    let forget_before = now - (expires_at - now);
                    diesel::delete(
                        refresh_tokens::table
                            .filter(refresh_tokens::device_id.eq(device))
                            .filter(refresh_tokens::rotated_at.lt(forget_before)),
                    )
                    .execute(self)?;
                    diesel::update(devices::table.find(device))
                        .set(devices::refresh_expires_at.eq(expires_at))
                        .execute(self)?;
                    self.touch_device(device, now, address)
                }

                fn touch_device(
                    &mut self,
                    device: &str,
                    now: i64,
                    address: Option<&str>,
                ) -> QueryResult<()> {
                    diesel::update(devices::table.find(device))
                        .set(devices::last_used_at.eq(now))
                        .execute(self)?;
                    if address.is_some() {
                        diesel::update(devices::table.find(device))
                            .set(devices::last_address.eq(address))
                            .execute(self)?;
                    }
                    Ok(())
                }

                fn devices_of(&mut self, user: &str, now: i64) -> anyhow::Result<Vec<Device>> {
                    let rows = devices::table
                        .filter(devices::user_id.eq(user))
                        .filter(devices::ended_at.is_null())
                        .filter(devices::refresh_expires_at.gt(now))
                        .order((devices::last_used_at.desc(), devices::created_at.desc()))
                        .select((
                            devices::id,
                            devices::name,
                            devices::created_at,
                            devices::last_used_at,
                            devices::last_address,
                        ))
                        .load::<(String, String, i64, i64, Option<String>)>(self)?;
                    Ok(rows
                        .into_iter()
                        .map(|(id, name, created, used, address)| Device {
                            id: DeviceId::new(id),
                            name: DeviceName::lenient(&name),
                            created_at: Timestamp::from_millis(created),
                            last_used_at: Timestamp::from_millis(used),
                            last_address: address,
                        })
                        .collect())
                }

                fn end_devices(
                    &mut self,
                    user: &str,
                    ids: Option<&[String]>,
                    keep: Option<&str>,
                    now: i64,
                ) -> QueryResult<usize> {
                    let mut query = diesel::update(devices::table)
                        .filter(devices::user_id.eq(user))
                        .filter(devices::ended_at.is_null())
                        .filter(devices::refresh_expires_at.gt(now))
                        .into_boxed();
                    if let Some(ids) = ids {
                        query = query.filter(devices::id.eq_any(ids));
                    }
                    if let Some(keep) = keep {
                        query = query.filter(devices::id.ne(keep));
                    }
                    query.set(devices::ended_at.eq(now)).execute(self)
                }

                fn generation(&mut self, user: &str) -> QueryResult<i64> {
                    users::table
                        .find(user)
                        .select(users::generation)
                        .first(self)
                }

                fn bump_generation(&mut self, user: &str) -> QueryResult<()> {
                    diesel::update(users::table.find(user))
                        .set(users::generation.eq(users::generation + 1))
                        .execute(self)?;
                    Ok(())
                }

                fn ended_among(&mut self, ids: &[String], now: i64) -> QueryResult<Vec<String>> {
                    let mut live = std::collections::HashSet::new();
                    for chunk in ids.chunks(<$conn as Sql>::IDS_PER_QUERY) {
                        live.extend(
                            devices::table
                                .inner_join(users::table)
                                .filter(devices::id.eq_any(chunk))
                                .filter(devices::ended_at.is_null())
                                .filter(devices::refresh_expires_at.gt(now))
                                .filter(users::deleted_at.is_null())
                                .select(devices::id)
                                .load::<String>(self)?,
                        );
                    }
                    Ok(ids
                        .iter()
                        .filter(|id| !live.contains(*id))
                        .cloned()
                        .collect())
                }

                fn live_password_hash(&mut self, user: &str) -> QueryResult<Option<String>> {
                    users::table
                        .find(user)
                        .filter(users::deleted_at.is_null())
                        .select(users::password_hash)
                        .first(self)
                        .optional()
                }

                fn set_password_hash(&mut self, user: &str, hash: &str) -> QueryResult<()> {
                    diesel::update(users::table.find(user))
                        .set(users::password_hash.eq(hash))
                        .execute(self)?;
                    Ok(())
                }

                fn mark_deleted(&mut self, user: &str, now: i64) -> QueryResult<()> {
                    // No argon2 hash is empty: no password matches it.
                    diesel::update(users::table.find(user))
                        .set((
                            users::deleted_at.eq(now),
                            users::password_hash.eq(""),
                            users::generation.eq(users::generation + 1),
                        ))
                        .execute(self)?;
                    Ok(())
                }

                fn prune_devices(&mut self, user: &str, before: i64) -> QueryResult<()> {
                    let gone = devices::table
                        .filter(devices::user_id.eq(user))
                        .filter(
                            devices::ended_at
                                .lt(before)
                                .or(devices::refresh_expires_at.lt(before)),
                        )
                        .select(devices::id)
                        .load::<String>(self)?;
                    if gone.is_empty() {
                        return Ok(());
                    }
                    diesel::delete(
                        refresh_tokens::table.filter(refresh_tokens::device_id.eq_any(&gone)),
                    )
                    .execute(self)?;
                    diesel::delete(devices::table.filter(devices::id.eq_any(&gone)))
                        .execute(self)?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use device_queries;
