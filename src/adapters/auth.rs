//! The `Authenticator` adapter: argon2id password hashes and HS256 JWTs.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::domain::device::RefreshHash;
use crate::domain::error::PortError;
use crate::domain::ports::{Authenticator, InvalidToken, IssuedToken, TokenClaims};
use crate::domain::user::PasswordHash;
use crate::domain::{DeviceId, Password, Timestamp, User, UserId};

/// Cost of argon2id; the defaults are the argon2 crate's (OWASP's) choice.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// argon2id + jsonwebtoken.
pub struct JwtAuthenticator {
    argon2: Argon2<'static>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
    dummy_hash: String,
    // Each hash holds `memory_kib` of RAM for tens of milliseconds; capping
    // how many run at once keeps a burst of logins from exhausting memory
    // and the blocking pool.
    hashing: Arc<Semaphore>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The device session: a token without one (from before device
    /// sessions) is refused.
    sid: String,
    /// The user's generation when it was issued.
    #[serde(rename = "gen")]
    generation: u64,
}

/// Bytes of randomness in a refresh token: 256 bits.
const REFRESH_BYTES: usize = 32;

impl JwtAuthenticator {
    /// Builds the authenticator.
    ///
    /// # Errors
    /// When the hash cost is outside what argon2 accepts.
    pub fn new(secret: &[u8], ttl_secs: u64, cost: HashCost) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(b"confab-dummy-password", &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        Ok(Self {
            argon2,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2_000),
            dummy_hash,
            hashing: Arc::new(Semaphore::new(permits)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, PortError> {
        let _permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PortError(e.into()))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || work(argon2))
            .await
            .map_err(|e| PortError(e.into()))
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn hash_password(&self, password: &Password) -> Result<PasswordHash, PortError> {
        let clear = password.expose().to_owned();
        self.blocking(move |argon2| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(clear.as_bytes(), &salt)
                .map(|h| PasswordHash(h.to_string()))
                .map_err(|e| PortError(anyhow::anyhow!("argon2: {e}")))
        })
        .await?
    }

    async fn verify_password(
        &self,
        password: &str,
        hash: Option<PasswordHash>,
    ) -> Result<bool, PortError> {
        let known = hash.is_some();
        let stored = hash.map_or_else(|| self.dummy_hash.clone(), |h| h.0);
        let clear = password.to_owned();
        let matches = self
            .blocking(move |argon2| {
                let parsed = argon2::PasswordHash::new(&stored)
                    .map_err(|e| PortError(anyhow::anyhow!("stored hash unreadable: {e}")))?;
                Ok::<_, PortError>(argon2.verify_password(clear.as_bytes(), &parsed).is_ok())
            })
            .await??;
        Ok(known && matches)
    }

    fn issue_token(
        &self,
        user: &User,
        device: &DeviceId,
        generation: u64,
        now: Timestamp,
    ) -> Result<IssuedToken, PortError> {
        let iat = now.secs();
        let exp = iat.saturating_add(self.ttl_secs);
        let claims = Claims {
            sub: user.id.as_str().to_owned(),
            name: user.username.as_str().to_owned(),
            iat,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: device.as_str().to_owned(),
            generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| PortError(e.into()))?;
        Ok(IssuedToken {
            token,
            expires_at: Timestamp::from_millis(exp.saturating_mul(1000)),
        })
    }

    fn verify_token(&self, token: &str, now: Timestamp) -> Result<TokenClaims, InvalidToken> {
        // The library checks `exp` against the system clock; checking again
        // against the core's clock keeps one notion of "now".
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| InvalidToken)?;
        if data.claims.exp <= now.secs() {
            return Err(InvalidToken);
        }
        Ok(TokenClaims {
            user_id: UserId::new(data.claims.sub),
            device: DeviceId::new(data.claims.sid),
            generation: data.claims.generation,
            expires_at: Timestamp::from_millis(data.claims.exp.saturating_mul(1000)),
        })
    }

    fn new_refresh_token(&self) -> (String, RefreshHash) {
        use base64::Engine as _;
        use rand::RngCore;
        let mut raw = [0u8; REFRESH_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let hash = self.refresh_hash(&token);
        (token, hash)
    }

    // A plain hash, not a slow one: the token is 256 random bits, which no
    // amount of guessing recovers from its hash, and every refresh looks
    // it up by this value.
    fn refresh_hash(&self, token: &str) -> RefreshHash {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(token.as_bytes());
        RefreshHash(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Reads the JWT secret kept at `path`, or makes a random one and keeps it
/// there (mode 0600) so that tokens survive a restart. Returns the secret
/// and whether it was just made.
///
/// # Errors
/// When the file cannot be read or written.
pub fn load_or_create_secret(path: &std::path::Path) -> anyhow::Result<(Vec<u8>, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use anyhow::Context;
    use rand::RngCore;

    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            super::private::restrict(path)
                .with_context(|| format!("cannot make {} private", path.display()))?;
            return Ok((s.trim().as_bytes().to_vec(), false));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        super::private::create_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok((secret.into_bytes(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Username;

    fn cheap() -> HashCost {
        HashCost {
            memory_kib: 64,
            iterations: 1,
        }
    }

    fn auth(secret: &[u8]) -> JwtAuthenticator {
        JwtAuthenticator::new(secret, 3600, cheap()).unwrap()
    }

    fn ann() -> User {
        User {
            id: UserId::new("u-ann"),
            username: Username::parse("ann").unwrap(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let a = auth(b"k");
        let pw = Password::parse("correct horse").unwrap();
        let hash = a.hash_password(&pw).await.unwrap();
        assert!(hash.0.starts_with("$argon2id$"), "argon2id: {}", hash.0);
        assert!(
            a.verify_password("correct horse", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!a.verify_password("wrong horse!", Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let a = auth(b"k");
        assert!(
            !a.verify_password("confab-dummy-password", None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt_secret");
        let (first, made) = load_or_create_secret(&path).unwrap();
        assert!(made);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, made) = load_or_create_secret(&path).unwrap();
        assert!(!made);
        assert_eq!(first, again);
        // One an earlier version left readable is closed when read.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create_secret(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let a = auth(b"k");
        let t = a
            .issue_token(&ann(), &DeviceId::new("d1"), 3, now())
            .unwrap();
        let claims = a.verify_token(&t.token, now()).unwrap();
        assert_eq!(claims.user_id, UserId::new("u-ann"));
        assert_eq!(claims.device, DeviceId::new("d1"));
        assert_eq!(claims.generation, 3);
        assert_eq!(claims.expires_at, t.expires_at);
    }

    #[test]
    fn a_token_without_a_device_session_is_refused() {
        let a = auth(b"k");
        let iat = now().secs();
        let old = serde_json::json!({
            "sub": "u-ann", "name": "ann", "iat": iat, "exp": iat + 60, "jti": "j"
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &old,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(a.verify_token(&token, now()), Err(InvalidToken));
    }

    #[test]
    fn refresh_tokens_are_256_random_bits_kept_as_their_sha256() {
        let a = auth(b"k");
        let (one, hash) = a.new_refresh_token();
        let (two, _) = a.new_refresh_token();
        assert_eq!(one.len(), 43, "{one}");
        assert_ne!(one, two);
        assert_eq!(hash, a.refresh_hash(&one));
        assert_eq!(hash.0.len(), 64);
        assert!(!hash.0.contains(&one));
        // SHA-256 of "abc", the FIPS 180-2 example.
        assert_eq!(
            a.refresh_hash("abc").0,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let t = auth(b"one")
            .issue_token(&ann(), &DeviceId::new("d1"), 3, now())
            .unwrap();
        assert_eq!(
            auth(b"two").verify_token(&t.token, now()),
            Err(InvalidToken)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let a = auth(b"k");
        let t = a
            .issue_token(&ann(), &DeviceId::new("d1"), 3, now())
            .unwrap();
        let later = Timestamp::from_millis(t.expires_at.millis() + 1);
        assert_eq!(a.verify_token(&t.token, later), Err(InvalidToken));
    }

    #[test]
    fn a_tampered_or_unsigned_token_is_refused() {
        let a = auth(b"k");
        let t = a
            .issue_token(&ann(), &DeviceId::new("d1"), 3, now())
            .unwrap()
            .token;
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        // alg: none, same claims, no signature
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0".into();
        assert_eq!(
            a.verify_token(&format!("{}.{}.", parts[0], parts[1]), now()),
            Err(InvalidToken)
        );
        let mut flipped = t.clone().into_bytes();
        let i = flipped.len() - 3;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            a.verify_token(&String::from_utf8(flipped).unwrap(), now()),
            Err(InvalidToken)
        );
        assert_eq!(a.verify_token("garbage", now()), Err(InvalidToken));
    }
}
