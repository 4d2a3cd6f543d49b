//! Accounts: registering, signing in, checking tokens, finding users.

use super::{Authenticated, ChatError, ChatService, SignedIn, USERS_PAGE, page_limit};
use crate::domain::blocking;
use crate::domain::ids::UserId;
use crate::domain::ports::CreateUserError;
use crate::domain::user::{Password, User, Username};

const INVALID_CREDENTIALS: &str = "invalid username or password";

impl ChatService {
    /// Registers a new user and signs them in.
    ///
    /// # Errors
    /// `BadRequest` naming the broken rule, `Conflict` for a taken name.
    pub async fn register(&self, username: &str, password: &str) -> Result<SignedIn, ChatError> {
        let username = Username::parse(username).map_err(ChatError::bad_request)?;
        let password = Password::parse(password).map_err(ChatError::bad_request)?;
        const TAKEN: &str = "username is taken";
        // Cheap check first, so a taken name costs no password hash; the
        // store's unique constraint still settles races.
        if self.ports.users.credentials(&username).await?.is_some() {
            return Err(ChatError::Conflict(TAKEN));
        }
        let hash = self.ports.auth.hash_password(&password).await?;
        let user = match self
            .ports
            .users
            .create_user(&username, &hash, self.now())
            .await
        {
            Ok(user) => user,
            Err(CreateUserError::Duplicate) => return Err(ChatError::Conflict(TAKEN)),
            Err(CreateUserError::Unknown(e)) => return Err(e.into()),
        };
        self.sign_in(user)
    }

    /// Checks a username and password. Unknown users and wrong passwords get
    /// the same answer after about the same time.
    ///
    /// # Errors
    /// `Unauthorized` for any credentials that do not match a user.
    pub async fn login(&self, username: &str, password: &str) -> Result<SignedIn, ChatError> {
        let found = match Username::parse(username) {
            Ok(name) => self.ports.users.credentials(&name).await?,
            Err(_) => None,
        };
        let (user, hash) = found.unzip();
        // Verified even when the user is unknown, so that both misses take
        // about as long.
        let matches = self.ports.auth.verify_password(password, hash).await?;
        match user {
            Some(user) if matches => self.sign_in(user),
            _ => Err(ChatError::Unauthorized(INVALID_CREDENTIALS)),
        }
    }

    fn sign_in(&self, user: User) -> Result<SignedIn, ChatError> {
        let token = self.ports.auth.issue_token(&user, self.now())?;
        Ok(SignedIn { user, token })
    }

    /// Checks a bearer token and that its user still exists.
    ///
    /// # Errors
    /// `Unauthorized` for a missing, bad or expired token, or a deleted user.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Authenticated, ChatError> {
        const BAD_TOKEN: &str = "missing, invalid or expired token";
        let token = token.ok_or(ChatError::Unauthorized(BAD_TOKEN))?;
        let claims = self
            .ports
            .auth
            .verify_token(token, self.now())
            .map_err(|_| ChatError::Unauthorized(BAD_TOKEN))?;
        let user = self
            .ports
            .users
            .user(&claims.user_id)
            .await?
            .ok_or(ChatError::Unauthorized(BAD_TOKEN))?;
        Ok(Authenticated {
            user,
            expires_at: claims.expires_at,
        })
    }

    /// Users whose name starts with `prefix`, each with whether they are
    /// online as `viewer` may see it (never, for a user who blocks them).
    ///
    /// # Errors
    /// `BadRequest` for a limit of 0.
    pub async fn find_users(
        &self,
        viewer: &UserId,
        prefix: &str,
        limit: Option<u64>,
    ) -> Result<Vec<(User, bool)>, ChatError> {
        let limit = page_limit(limit, USERS_PAGE.0 as usize, USERS_PAGE.1 as usize)? as u32;
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
