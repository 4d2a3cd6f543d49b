//! Device sessions: each login on each device, which the user can list and
//! end, and which ends every token and connection it gave out when it does.

use super::ids::{DeviceId, UserId};
use super::time::Timestamp;
use super::user::User;

/// Longest device name, in characters.
pub const MAX_DEVICE_NAME: usize = 64;

/// A device's name as the user sees it in their list: 1 to
/// [`MAX_DEVICE_NAME`] characters, trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

/// A device name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deviceName must be 1 to {MAX_DEVICE_NAME} characters, without control characters")]
pub struct InvalidDeviceName;

impl DeviceName {
    /// Checks a name a client chose.
    ///
    /// # Errors
    /// [`InvalidDeviceName`] for an empty, too long or control-laden name.
    pub fn parse(raw: &str) -> Result<Self, InvalidDeviceName> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
            return Err(InvalidDeviceName);
        }
        Ok(Self(name.to_owned()))
    }

    /// A name the server made up (from a User-Agent), cut to the rules
    /// rather than refused.
    pub fn lenient(raw: &str) -> Self {
        let name: String = raw
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_DEVICE_NAME)
            .collect();
        Self::parse(&name).unwrap_or_else(|_| Self("Unknown device".to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where and what a login comes from, as the edge saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its name.
    pub name: DeviceName,
    /// The client's address, when known.
    pub address: Option<String>,
}

/// A device session, as its user sees it in their list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its id.
    pub id: DeviceId,
    /// Its name.
    pub name: DeviceName,
    /// When it logged in.
    pub created_at: Timestamp,
    /// When it last logged in, refreshed or connected.
    pub last_used_at: Timestamp,
    /// The address it last came from.
    pub last_address: Option<String>,
}

/// A refresh token as the store keeps it: a hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefreshHash(pub String);

/// A device session to store, with its first refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Whose.
    pub user: UserId,
    /// Its name and address.
    pub info: DeviceInfo,
    /// Now.
    pub now: Timestamp,
    /// The first refresh token.
    pub refresh: RefreshHash,
    /// When that token stops being accepted.
    pub refresh_expires_at: Timestamp,
}

/// A device session just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedDevice {
    /// Its id.
    pub id: DeviceId,
    /// Its user's generation, which its tokens carry.
    pub generation: u64,
    /// The sessions ended to make room for it (the per-user limit).
    pub ended: Vec<DeviceId>,
}

/// What the store knows of a token's device session and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// The user, who exists.
    pub user: User,
    /// The user's generation: tokens of an earlier one are void.
    pub generation: u64,
    /// Whether the device session is live (not ended, not expired) and
    /// the user not deleted.
    pub live: bool,
    /// When the device session was last used, as recorded.
    pub last_used_at: Timestamp,
}

/// A refresh token to rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotate {
    /// The hash of the token presented.
    pub presented: RefreshHash,
    /// The hash of its successor.
    pub next: RefreshHash,
    /// Now.
    pub now: Timestamp,
    /// When the successor stops being accepted.
    pub next_expires_at: Timestamp,
    /// How long after its rotation a token presented again is taken for a
    /// race or a lost answer rather than a theft, in milliseconds.
    pub grace_ms: i64,
    /// Where the request came from.
    pub address: Option<String>,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: its successor is stored and it is spent.
    Rotated {
        /// Whose device session.
        state: TokenState,
        /// Which.
        device: DeviceId,
    },
    /// It was rotated moments ago (within the grace window): a concurrent
    /// or retried refresh. Nothing changed.
    Raced,
    /// It was rotated longer ago than the grace window: someone kept a
    /// spent token. The device session was ended.
    Reused {
        /// Whose.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
    /// Unknown, expired, or of an ended device session.
    Invalid,
}

/// What ended, so that the connections it opened are closed, on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One device session.
    Device {
        /// Whose.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
    /// Every device session of a user, but `keep` when given.
    AllBut {
        /// Whose.
        user: UserId,
        /// The one that stays (the caller's, on a password change).
        keep: Option<DeviceId>,
    },
}

impl Revocation {
    /// Whose sessions it ends.
    pub fn user(&self) -> &UserId {
        match self {
            Self::Device { user, .. } | Self::AllBut { user, .. } => user,
        }
    }

    /// Whether a connection of `user` opened by `device` is ended by it.
    pub fn ends(&self, user: &UserId, device: &DeviceId) -> bool {
        match self {
            Self::Device { user: u, device: d } => u == user && d == device,
            Self::AllBut { user: u, keep } => u == user && keep.as_ref() != Some(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_name_is_trimmed_and_bounded() {
        assert_eq!(DeviceName::parse("  laptop ").unwrap().as_str(), "laptop");
        assert_eq!(DeviceName::parse("   "), Err(InvalidDeviceName));
        assert_eq!(DeviceName::parse(&"x".repeat(65)), Err(InvalidDeviceName));
        assert!(DeviceName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(DeviceName::parse("a\u{7}b"), Err(InvalidDeviceName));
    }

    #[test]
    fn a_made_up_name_is_cut_rather_than_refused() {
        assert_eq!(DeviceName::lenient(&"y".repeat(300)).as_str().len(), 64);
        assert_eq!(DeviceName::lenient("\u{1}\u{2}").as_str(), "Unknown device");
    }

    #[test]
    fn a_revocation_ends_exactly_the_sessions_it_names() {
        let (ann, bob) = (UserId::new("ann"), UserId::new("bob"));
        let (d1, d2) = (DeviceId::new("d1"), DeviceId::new("d2"));
        let one = Revocation::Device {
            user: ann.clone(),
            device: d1.clone(),
        };
        assert!(one.ends(&ann, &d1));
        assert!(!one.ends(&ann, &d2));
        assert!(!one.ends(&bob, &d1));
        let others = Revocation::AllBut {
            user: ann.clone(),
            keep: Some(d1.clone()),
        };
        assert!(!others.ends(&ann, &d1));
        assert!(others.ends(&ann, &d2));
        let all = Revocation::AllBut {
            user: ann.clone(),
            keep: None,
        };
        assert!(all.ends(&ann, &d1) && all.ends(&ann, &d2) && !all.ends(&bob, &d2));
    }
}
