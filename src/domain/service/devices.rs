//! Device sessions: signing in on a device, refreshing its tokens, and
//! ending it, one or all, from wherever the user is.

use super::{Authenticated, Caller, ChatService, SignedIn};
use crate::domain::conversation::ConversationKind;
use crate::domain::device::{Device, DeviceInfo, NewDevice, Revocation, Rotate, Rotation};
use crate::domain::error::{
    AccountError, AuthenticateError, ConversationError, EndDeviceError, PortError, RefreshError,
};
use crate::domain::ids::{ConversationId, DeviceId, SessionId, UserId};
use crate::domain::ports::IssuedToken;
use crate::domain::time::Timestamp;
use crate::domain::user::{Password, User};

/// How long after its last recorded use a device's use is recorded again:
/// often enough for a list that says "last used", rarely enough that
/// requests do not each cost a write.
const TOUCH_EVERY_MS: i64 = 60_000;

impl ChatService {
    /// Opens a device session for `user` and hands out its first tokens.
    /// Beyond the per-user limit, the least recently used sessions end.
    pub(super) async fn sign_in(
        &self,
        user: User,
        info: DeviceInfo,
    ) -> Result<SignedIn, PortError> {
        let now = self.now();
        let (refresh, hash) = self.ports.auth.new_refresh_token();
        let refresh_expires_at = self.refresh_expiry(now);
        let created = self
            .ports
            .devices
            .create_device(
                NewDevice {
                    user: user.id.clone(),
                    info,
                    now,
                    refresh: hash,
                    refresh_expires_at,
                },
                self.limits.max_devices_per_user,
            )
            .await?;
        for old in created.ended {
            self.revoked(Revocation::Device {
                user: user.id.clone(),
                device: old,
            })
            .await;
        }
        let token = self
            .ports
            .auth
            .issue_token(&user, &created.id, created.generation, now)?;
        Ok(SignedIn {
            user,
            token,
            device: created.id,
            refresh: IssuedToken {
                token: refresh,
                expires_at: refresh_expires_at,
            },
        })
    }

    fn refresh_expiry(&self, now: Timestamp) -> Timestamp {
        Timestamp::from_millis(now.millis().saturating_add(self.limits.refresh_ttl_ms))
    }

    /// Spends a refresh token for a new access token and a new refresh
    /// token of the same device session.
    ///
    /// # Errors
    /// [`RefreshError::Invalid`] for a token that is unknown, expired or of
    /// an ended session; [`RefreshError::Raced`] for one spent within the
    /// grace window; [`RefreshError::Reused`] for one spent before it,
    /// whose session has now ended.
    pub async fn refresh(
        &self,
        token: &str,
        address: Option<String>,
    ) -> Result<SignedIn, RefreshError> {
        let now = self.now();
        let (next, next_hash) = self.ports.auth.new_refresh_token();
        let next_expires_at = self.refresh_expiry(now);
        let rotation = self
            .ports
            .devices
            .rotate_refresh(Rotate {
                presented: self.ports.auth.refresh_hash(token),
                next: next_hash,
                now,
                next_expires_at,
                grace_ms: self.limits.refresh_grace_ms,
                address,
            })
            .await?;
        match rotation {
            Rotation::Rotated { state, device } if state.live => {
                let token =
                    self.ports
                        .auth
                        .issue_token(&state.user, &device, state.generation, now)?;
                Ok(SignedIn {
                    user: state.user,
                    token,
                    device,
                    refresh: IssuedToken {
                        token: next,
                        expires_at: next_expires_at,
                    },
                })
            }
            Rotation::Rotated { .. } | Rotation::Invalid => Err(RefreshError::Invalid),
            Rotation::Raced => Err(RefreshError::Raced),
            Rotation::Reused { user, device } => {
                self.revoked(Revocation::Device {
                    user: user.clone(),
                    device: device.clone(),
                })
                .await;
                Err(RefreshError::Reused { user, device })
            }
        }
    }

    /// Checks a bearer token: well signed, unexpired, of a live device
    /// session of a user who still exists, in the user's generation. The
    /// store is asked every time, so an ended session is refused at once
    /// on every node.
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidToken`] for any token that fails.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
    ) -> Result<Authenticated, AuthenticateError> {
        let token = token.ok_or(AuthenticateError::InvalidToken)?;
        let now = self.now();
        let claims = self
            .ports
            .auth
            .verify_token(token, now)
            .map_err(|_| AuthenticateError::InvalidToken)?;
        let state = self
            .ports
            .devices
            .token_state(&claims.user_id, &claims.device, now)
            .await?
            .filter(|s| s.live && s.generation == claims.generation)
            .ok_or(AuthenticateError::InvalidToken)?;
        if now.millis() - state.last_used_at.millis() >= TOUCH_EVERY_MS {
            // Best effort: a list a little out of date beats a refused request.
            let _ = self
                .ports
                .devices
                .touch_device(&claims.device, now, None)
                .await;
        }
        Ok(Authenticated {
            user: state.user,
            device: claims.device,
            expires_at: claims.expires_at,
        })
    }

    /// Checks a fresh access token for a connection of `user` opened by
    /// `device`, and returns when it expires: the connection's new expiry.
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidToken`] for a token that fails
    /// [`Self::authenticate`], or that is of another device session.
    pub async fn reauthenticate(
        &self,
        user: &UserId,
        device: &DeviceId,
        token: &str,
    ) -> Result<Timestamp, AuthenticateError> {
        let auth = self.authenticate(Some(token)).await?;
        if auth.user.id != *user || auth.device != *device {
            return Err(AuthenticateError::InvalidToken);
        }
        Ok(auth.expires_at)
    }

    /// The caller's live device sessions, most recently used first.
    pub async fn devices(&self, user: &UserId) -> Result<Vec<Device>, PortError> {
        self.ports.devices.devices(user, self.now()).await
    }

    /// Ends one of the caller's device sessions (their own included).
    ///
    /// # Errors
    /// [`EndDeviceError::NoSuchDevice`] unless it is one of theirs and live.
    pub async fn end_device(&self, user: &UserId, device: &DeviceId) -> Result<(), EndDeviceError> {
        if !self
            .ports
            .devices
            .end_device(user, device, self.now())
            .await?
        {
            return Err(EndDeviceError::NoSuchDevice);
        }
        self.revoked(Revocation::Device {
            user: user.clone(),
            device: device.clone(),
        })
        .await;
        Ok(())
    }

    /// Ends every device session of the user, the caller's included, and
    /// voids every token issued to them so far.
    pub async fn end_all_devices(&self, user: &UserId) -> Result<(), PortError> {
        self.ports
            .devices
            .end_devices(user, None, true, self.now())
            .await?;
        self.revoked(Revocation::AllBut {
            user: user.clone(),
            keep: None,
        })
        .await;
        Ok(())
    }

    /// Replaces the caller's password, given the current one, and ends
    /// every other device session.
    ///
    /// # Errors
    /// [`AccountError::WrongPassword`] when `current` is not the password.
    pub async fn change_password(
        &self,
        auth: &Authenticated,
        current: &str,
        new: Password,
    ) -> Result<(), AccountError> {
        self.confirm_password(&auth.user.id, current).await?;
        let hash = self.ports.auth.hash_password(&new).await?;
        self.ports
            .devices
            .set_password(&auth.user.id, hash, auth.device.clone(), self.now())
            .await?;
        self.revoked(Revocation::AllBut {
            user: auth.user.id.clone(),
            keep: Some(auth.device.clone()),
        })
        .await;
        Ok(())
    }

    /// Deletes the caller's account, given its password: every session
    /// ends and the user leaves every room (the members see them leave);
    /// the name stays taken, direct conversations stay readable, and the
    /// messages stay as sent.
    ///
    /// # Errors
    /// [`AccountError::WrongPassword`] when `password` is not the password.
    pub async fn delete_account(&self, user: &User, password: &str) -> Result<(), AccountError> {
        self.confirm_password(&user.id, password).await?;
        self.ports.devices.delete_user(&user.id, self.now()).await?;
        self.revoked(Revocation::AllBut {
            user: user.id.clone(),
            keep: None,
        })
        .await;
        let rooms: Vec<ConversationId> = self
            .ports
            .messages
            .conversations_of(&user.id)
            .await?
            .into_iter()
            .filter(|s| matches!(s.conversation.kind, ConversationKind::Room { .. }))
            .map(|s| s.conversation.id)
            .collect();
        // No connection of theirs is left to hear it.
        let gone = Caller {
            user: user.clone(),
            session: SessionId::new("deleted"),
        };
        for room in rooms {
            if let Err(ConversationError::Unknown(e)) = self.leave_room(&gone, &room).await {
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn confirm_password(&self, user: &UserId, password: &str) -> Result<(), AccountError> {
        let hash = self.ports.devices.password_hash(user).await?;
        let known = hash.is_some();
        if self.ports.auth.verify_password(password, hash).await? && known {
            Ok(())
        } else {
            Err(AccountError::WrongPassword)
        }
    }

    /// Tells every node that `what` ended, after the store committed it.
    async fn revoked(&self, what: Revocation) {
        self.ports.revoker.revoked(what).await;
    }
}
