//! The `DeviceStore` port on either diesel backend: device sessions and
//! their refresh tokens, in the same database as the users they belong to.

use async_trait::async_trait;

use super::engine::{DieselStore, Engine, Tx};
use super::queries::{DeviceQueries, TokenRow};
use crate::domain::device::{CreatedDevice, Device, NewDevice, Rotate, Rotation, TokenState};
use crate::domain::error::PortError;
use crate::domain::ports::DeviceStore;
use crate::domain::user::{PasswordHash, Username};
use crate::domain::{DeviceId, Timestamp, User, UserId};

/// A token row as the core sees it, at `now`.
fn token_state(row: TokenRow, now: i64) -> anyhow::Result<TokenState> {
    let (id, name, generation, deleted_at, ended_at, refresh_expires_at, last_used_at) = row;
    Ok(TokenState {
        user: User {
            id: UserId::new(id),
            username: Username::parse(&name)
                .map_err(|e| anyhow::anyhow!("stored username: {e}"))?,
        },
        generation: u64::try_from(generation).unwrap_or(0),
        live: deleted_at.is_none() && ended_at.is_none() && refresh_expires_at > now,
        last_used_at: Timestamp::from_millis(last_used_at),
    })
}

#[async_trait]
impl<E: Engine> DeviceStore for DieselStore<E> {
    async fn create_device(
        &self,
        device: NewDevice,
        max: usize,
    ) -> Result<CreatedDevice, PortError> {
        let id = DeviceId::new(uuid::Uuid::new_v4().to_string());
        let row = id.as_str().to_owned();
        let user = Self::text(device.user.as_str());
        let mut device = device;
        device.info.address = device.info.address.map(E::text);
        let (generation, ended) = self
            .engine()
            .write(move |tx| {
                let conn = tx.conn();
                let now = device.now.millis();
                // Gone from every list for longer than a refresh token
                // lives: nothing can present its tokens any more.
                let ttl = device.refresh_expires_at.millis() - now;
                conn.prune_devices(&user, now.saturating_sub(ttl))?;
                let live = conn.live_devices(&user, now)?;
                let over = (live.len() + 1).saturating_sub(max.max(1));
                let ended: Vec<String> = live.into_iter().take(over).collect();
                if !ended.is_empty() {
                    conn.end_devices(&user, Some(&ended), None, now)?;
                }
                conn.insert_device(&row, &device)?;
                let generation = conn.generation(&user)?;
                Ok::<_, PortError>((generation, ended))
            })
            .await?;
        Ok(CreatedDevice {
            id,
            generation: u64::try_from(generation).unwrap_or(0),
            ended: ended.into_iter().map(DeviceId::new).collect(),
        })
    }

    async fn token_state(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<Option<TokenState>, PortError> {
        let (user, device) = (Self::text(user.as_str()), Self::text(device.as_str()));
        self.read(move |conn| {
            conn.token_row(&device)?
                // Another user's session is none of this token's.
                .filter(|row| row.0 == user)
                .map(|row| token_state(row, now.millis()))
                .transpose()
        })
        .await
    }

    async fn rotate_refresh(&self, rotate: Rotate) -> Result<Rotation, PortError> {
        let address = rotate.address.clone().map(E::text);
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                let now = rotate.now.millis();
                let Some((device, spent_at)) = conn.refresh_token(&rotate.presented.0)? else {
                    return Ok(Rotation::Invalid);
                };
                let Some(row) = conn.token_row(&device)? else {
                    return Ok(Rotation::Invalid);
                };
                let user = row.0.clone();
                let state = token_state(row, now)?;
                if !state.live {
                    return Ok(Rotation::Invalid);
                }
                if let Some(spent_at) = spent_at {
                    if now - spent_at <= rotate.grace_ms {
                        return Ok(Rotation::Raced);
                    }
                    conn.end_devices(&user, Some(std::slice::from_ref(&device)), None, now)?;
                    return Ok(Rotation::Reused {
                        user: UserId::new(user),
                        device: DeviceId::new(device),
                    });
                }
                if !conn.spend_refresh(&rotate.presented.0, now)? {
                    return Ok(Rotation::Raced);
                }
                conn.renew_device(
                    &device,
                    &rotate.next.0,
                    now,
                    rotate.next_expires_at.millis(),
                    address.as_deref(),
                )?;
                Ok::<_, PortError>(Rotation::Rotated {
                    state,
                    device: DeviceId::new(device),
                })
            })
            .await
    }

    async fn devices(&self, user: &UserId, now: Timestamp) -> Result<Vec<Device>, PortError> {
        let user = Self::text(user.as_str());
        self.read(move |conn| conn.devices_of(&user, now.millis()))
            .await
    }

    async fn touch_device(
        &self,
        device: &DeviceId,
        now: Timestamp,
        address: Option<String>,
    ) -> Result<(), PortError> {
        let device = Self::text(device.as_str());
        let address = address.map(E::text);
        self.engine()
            .write_one(move |conn| {
                Ok::<_, PortError>(conn.touch_device(&device, now.millis(), address.as_deref())?)
            })
            .await
    }

    async fn end_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<bool, PortError> {
        let (user, device) = (Self::text(user.as_str()), Self::text(device.as_str()));
        self.engine()
            .write_one(move |conn| {
                let ended = conn.end_devices(&user, Some(&[device]), None, now.millis())?;
                Ok::<_, PortError>(ended == 1)
            })
            .await
    }

    async fn end_devices(
        &self,
        user: &UserId,
        keep: Option<DeviceId>,
        bump_generation: bool,
        now: Timestamp,
    ) -> Result<(), PortError> {
        let user = Self::text(user.as_str());
        let keep = keep.map(|k| Self::text(k.as_str()));
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                conn.end_devices(&user, None, keep.as_deref(), now.millis())?;
                if bump_generation {
                    conn.bump_generation(&user)?;
                }
                Ok::<_, PortError>(())
            })
            .await
    }

    async fn ended_among(
        &self,
        devices: &[DeviceId],
        now: Timestamp,
    ) -> Result<Vec<DeviceId>, PortError> {
        let ids: Vec<String> = devices.iter().map(|d| Self::text(d.as_str())).collect();
        let ended = self
            .read(move |conn| Ok(conn.ended_among(&ids, now.millis())?))
            .await?;
        Ok(ended.into_iter().map(DeviceId::new).collect())
    }

    async fn password_hash(&self, user: &UserId) -> Result<Option<PasswordHash>, PortError> {
        let user = Self::text(user.as_str());
        let hash = self
            .read(move |conn| Ok(conn.live_password_hash(&user)?))
            .await?;
        Ok(hash.map(PasswordHash))
    }

    async fn set_password(
        &self,
        user: &UserId,
        hash: PasswordHash,
        keep: DeviceId,
        now: Timestamp,
    ) -> Result<(), PortError> {
        let user = Self::text(user.as_str());
        let keep = Self::text(keep.as_str());
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                conn.set_password_hash(&user, &hash.0)?;
                conn.end_devices(&user, None, Some(&keep), now.millis())?;
                Ok::<_, PortError>(())
            })
            .await
    }

    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<(), PortError> {
        let id = Self::text(user.as_str());
        self.engine()
            .write(move |tx| {
                let conn = tx.conn();
                conn.mark_deleted(&id, now.millis())?;
                conn.end_devices(&id, None, None, now.millis())?;
                Ok::<_, PortError>(())
            })
            .await?;
        // Found no more as a recipient or an invitee on this node.
        self.users()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user.as_str());
        Ok(())
    }
}
