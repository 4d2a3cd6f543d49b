//! Users: validated names and passwords.

use super::ids::UserId;

/// The rules a username must follow, said once for every error message.
pub const USERNAME_RULE: &str = "username must be 3 to 32 characters of A-Z a-z 0-9 _ . -";
/// The rule a password's length must follow.
pub const PASSWORD_RULE: &str = "password must be 8 to 1024 bytes";

/// Common passwords, most common first, one a line, in lower case: the
/// list Django ships (`django/contrib/auth/common-passwords.txt.gz` of
/// Django 5.2.20, decompressed and otherwise unchanged; 19,640 passwords
/// drawn from breach corpora by Royce Williams), under Django's BSD
/// license, which `common_passwords.LICENSE` beside it reproduces.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// The common passwords long enough to pass the length rule (8,359 of
/// them), built on the first registration.
static COMMON: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| COMMON_PASSWORDS.lines().filter(|p| p.len() >= 8).collect());

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
pub enum InvalidPassword {
    /// Shorter than 8 bytes or longer than 1024.
    #[error("{PASSWORD_RULE}")]
    Length,
    /// One character repeated (`aaaaaaaa`, eight spaces).
    #[error("password must not be one character repeated")]
    Repeated,
    /// On the list of common passwords, without regard to case.
    #[error("password is too common: it is on a list of passwords known from breaches")]
    Common,
}

impl Password {
    /// Validates `raw`: 8 to 1024 bytes of UTF-8, not one character
    /// repeated, not a common password. No rule on what it is made of
    /// (NIST SP 800-63B: such rules make passwords no harder to guess).
    ///
    /// # Errors
    /// [`InvalidPassword`] naming the first rule it breaks, in that order.
    pub fn parse(raw: &str) -> Result<Self, InvalidPassword> {
        if !(8..=1024).contains(&raw.len()) {
            return Err(InvalidPassword::Length);
        }
        let mut chars = raw.chars();
        let first = chars.next();
        if chars.all(|c| Some(c) == first) {
            return Err(InvalidPassword::Repeated);
        }
        // The list is in lower case, and a guesser tries `Password1` right
        // after `password1`: a capital does not make a listed one safe.
        if COMMON.contains(raw.to_lowercase().as_str()) {
            return Err(InvalidPassword::Common);
        }
        Ok(Self(raw.to_owned()))
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
        assert!(Password::parse("2-fast-4-me").is_ok());
        assert!(Password::parse(&"pq".repeat(512)).is_ok());
    }

    #[test]
    fn a_password_outside_8_to_1024_bytes_is_rejected() {
        assert_eq!(Password::parse("1234567"), Err(InvalidPassword::Length));
        assert_eq!(
            Password::parse(&"pq".repeat(513)),
            Err(InvalidPassword::Length)
        );
        // four 2-byte characters are 8 bytes: the rule counts bytes
        assert!(Password::parse("éèéè").is_ok());
    }

    #[test]
    fn a_password_of_one_repeated_character_is_rejected() {
        for p in ["        ", "aaaaaaaa", "éééé", &"z".repeat(1024)] {
            assert_eq!(Password::parse(p), Err(InvalidPassword::Repeated), "{p:?}");
        }
        assert!(Password::parse("aaaaaaab").is_ok());
    }

    #[test]
    fn a_common_password_is_rejected_whatever_its_case() {
        for p in [
            "password",
            "12345678",
            "password123",
            "PassWord123",
            "iloveyou",
        ] {
            assert_eq!(Password::parse(p), Err(InvalidPassword::Common), "{p}");
        }
        assert!(
            InvalidPassword::Common.to_string().contains("common"),
            "the message says why"
        );
    }

    #[test]
    fn the_common_list_is_the_whole_embedded_file_and_holds_its_last_entry() {
        assert_eq!(COMMON_PASSWORDS.lines().count(), 19_640);
        assert_eq!(COMMON.len(), 8_359);
        let last = COMMON_PASSWORDS.lines().rfind(|p| p.len() >= 8).unwrap();
        assert_eq!(Password::parse(last), Err(InvalidPassword::Common));
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
