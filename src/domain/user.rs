//! Users: validated names and passwords.

use super::ids::UserId;

/// The rules a username must follow, said once for every error message.
pub const USERNAME_RULE: &str = "username must be 3 to 32 characters of A-Z a-z 0-9 _ . -";
/// The rule a password must follow.
pub const PASSWORD_RULE: &str = "password must be 8 to 1024 bytes";

/// A username that follows the contract: 3 to 32 of `A-Z a-z 0-9 _ . -`.
// Shared, like ids: a user is cloned into each of its sessions, the
// presence book and the store's cache, and a connected user's copies should
// not each be an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(std::sync::Arc<str>);

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{USERNAME_RULE}")]
pub struct InvalidUsername;

impl Username {
    /// Validates `raw` as a username, keeping its case as typed.
    ///
    /// # Errors
    /// [`InvalidUsername`] when it is too short, too long or has another character.
    pub fn parse(raw: &str) -> Result<Self, InvalidUsername> {
        let ok_len = (3..=32).contains(&raw.len());
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok_len && ok_chars {
            Ok(Self(raw.into()))
        } else {
            Err(InvalidUsername)
        }
    }

    /// The name as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form under which names are unique (`Alice` == `alice`).
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A password in clear, only ever held long enough to hash or verify it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{PASSWORD_RULE}")]
pub struct InvalidPassword;

impl Password {
    /// Validates `raw`: 8 to 1024 bytes of UTF-8.
    ///
    /// # Errors
    /// [`InvalidPassword`] when it is shorter or longer.
    pub fn parse(raw: &str) -> Result<Self, InvalidPassword> {
        if (8..=1024).contains(&raw.len()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPassword)
        }
    }

    /// The clear text, for the password hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    // Never print a password, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A password hash in the PHC string format, as the authenticator made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

/// A registered user as every other user may see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The user's name, as registered.
    pub username: Username,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_of_3_to_32_allowed_characters_is_accepted() {
        for name in ["abc", "Al.ice_-9", &"x".repeat(32)] {
            assert_eq!(Username::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn a_name_shorter_than_3_characters_is_rejected() {
        assert_eq!(Username::parse("ab"), Err(InvalidUsername));
        assert_eq!(Username::parse(""), Err(InvalidUsername));
    }

    #[test]
    fn a_name_longer_than_32_characters_is_rejected() {
        assert_eq!(Username::parse(&"x".repeat(33)), Err(InvalidUsername));
    }

    #[test]
    fn a_name_with_a_space_or_a_non_ascii_letter_is_rejected() {
        for name in ["al ice", "alïce", "al@ce", "ali\u{0}e"] {
            assert_eq!(Username::parse(name), Err(InvalidUsername), "{name}");
        }
    }

    #[test]
    fn names_are_unique_without_regard_to_case() {
        let a = Username::parse("Alice").unwrap();
        let b = Username::parse("aLICE").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.as_str(), "Alice");
    }

    #[test]
    fn a_password_of_8_to_1024_bytes_is_accepted() {
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"p".repeat(1024)).is_ok());
    }

    #[test]
    fn a_password_outside_8_to_1024_bytes_is_rejected() {
        assert_eq!(Password::parse("1234567"), Err(InvalidPassword));
        assert_eq!(Password::parse(&"p".repeat(1025)), Err(InvalidPassword));
        // four 2-byte characters are 8 bytes: the rule counts bytes
        assert!(Password::parse("éééé").is_ok());
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
