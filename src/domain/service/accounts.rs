//! Accounts: registering, signing in, finding users.

use super::{ChatService, SignedIn, USERS_PAGE};
use crate::domain::blocking;
use crate::domain::device::DeviceInfo;
use crate::domain::error::{LoginError, PortError, RegisterError};
use crate::domain::ids::UserId;
use crate::domain::page::PageLimit;
use crate::domain::ports::CreateUserError;
use crate::domain::user::{Password, User, Username};

impl ChatService {
    /// Registers a new user and signs them in.
    ///
    /// # Errors
    /// [`RegisterError::Taken`] for a name taken, whatever its case.
    pub async fn register(
        &self,
        username: Username,
        password: Password,
        device: DeviceInfo,
    ) -> Result<SignedIn, RegisterError> {
        // Cheap check first, so a taken name costs no password hash; the
        // store's unique constraint still settles races.
        if self.ports.users.credentials(&username).await?.is_some() {
            return Err(RegisterError::Taken);
        }
        let hash = self.ports.auth.hash_password(&password).await?;
        let user = match self
            .ports
            .users
            .create_user(&username, &hash, self.now())
            .await
        {
            Ok(user) => user,
            Err(CreateUserError::Duplicate) => return Err(RegisterError::Taken),
            Err(CreateUserError::Unknown(e)) => return Err(e.into()),
        };
        Ok(self.sign_in(user, device).await?)
    }

    /// Checks a username and password. Unknown users and wrong passwords get
    /// the same answer after about the same time.
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] for any that do not match a user.
    // The name is not parsed at the edge: a name that breaks the rules is
    // one that matches no user, not a bad request.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device: DeviceInfo,
    ) -> Result<SignedIn, LoginError> {
        let found = match Username::parse(username) {
            Ok(name) => self.ports.users.credentials(&name).await?,
            Err(_) => None,
        };
        let (user, hash) = found.unzip();
        // Verified even when the user is unknown, so that both misses take
        // about as long.
        let matches = self.ports.auth.verify_password(password, hash).await?;
        match user {
            Some(user) if matches => Ok(self.sign_in(user, device).await?),
            _ => Err(LoginError::InvalidCredentials),
        }
    }

    /// Users whose name starts with `prefix`, each with whether they are
    /// online as `viewer` may see it (never, for a user who blocks them).
    pub async fn find_users(
        &self,
        viewer: &UserId,
        prefix: &str,
        limit: PageLimit,
    ) -> Result<Vec<(User, bool)>, PortError> {
        let limit = limit.within(USERS_PAGE.0, USERS_PAGE.1) as u32;
        let users = self.ports.users.users_by_prefix(prefix, limit).await?;
        let ids: Vec<UserId> = users.iter().map(|u| u.id.clone()).collect();
        let live = self.ports.presence.live(&ids).await?;
        let blockers = self.ports.blocks.blockers_of(viewer).await?;
        Ok(users
            .into_iter()
            .map(|u| {
                let online = blocking::shown_online(&u.id, live.contains_key(&u.id), &blockers);
                (u, online)
            })
            .collect())
    }
}
