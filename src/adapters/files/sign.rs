//! Signed file links: a URL that lets its bearer read one file (or its
//! thumbnail) for a few minutes without a token, so that `<img src>`
//! works, and that names the user it was made for.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{FileId, Timestamp, UserId};

/// What a link serves: the file's bytes or its thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The file as uploaded.
    Original,
    /// The server's thumbnail of an image.
    Thumbnail,
}

impl Variant {
    /// The variant's name in a link's path and signature.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Thumbnail => "thumbnail",
        }
    }
}

/// How long a link is good for.
pub const LINK_TTL_SECS: i64 = 300;

/// Signs and checks links with a key of their own, derived from the
/// server's secret: every node of a cluster checks every node's links.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// A link's parts that the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The file.
    pub file: FileId,
    /// Which bytes of it.
    pub variant: Variant,
    /// Who it was made for.
    pub user: UserId,
    /// When it stops working, in Unix seconds.
    pub expires: i64,
}

impl Signer {
    /// A signer whose key is derived from `secret` (the JWT secret), so
    /// that a leaked link key cannot sign tokens and the other way round.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"confab file links v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, link: &Link) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // Newline-separated: no field may contain one (ids are checked).
        let text = format!(
            "{}\n{}\n{}\n{}",
            link.file,
            link.variant.as_str(),
            link.user,
            link.expires
        );
        mac.update(text.as_bytes());
        mac
    }

    /// The link for `user` to `file`, good for [`LINK_TTL_SECS`] from `now`:
    /// its path and query, to append to the files' base URL.
    pub fn sign(
        &self,
        file: &FileId,
        variant: Variant,
        user: &UserId,
        now: Timestamp,
    ) -> (String, i64) {
        let link = Link {
            file: file.clone(),
            variant,
            user: user.clone(),
            expires: now.millis().div_euclid(1000) + LINK_TTL_SECS,
        };
        let sig = base64url(&self.mac(&link).finalize().into_bytes());
        let path = match variant {
            Variant::Original => format!("/files/{file}"),
            Variant::Thumbnail => format!("/files/{file}/thumbnail"),
        };
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("u", user.as_str())
            .append_pair("e", &link.expires.to_string())
            .append_pair("s", &sig)
            .finish();
        (format!("{path}?{query}"), link.expires)
    }

    /// Whether `sig` signs `link` (in constant time).
    pub fn verify(&self, link: &Link, sig: &str) -> bool {
        use base64::Engine;
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        self.mac(link).verify_slice(&sig).is_ok()
    }
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (Link, String) {
        let (path, query) = url.split_once('?').unwrap();
        let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let rest = path.strip_prefix("/files/").unwrap();
        let (id, variant) = match rest.split_once('/') {
            Some((id, "thumbnail")) => (id, Variant::Thumbnail),
            _ => (rest, Variant::Original),
        };
        (
            Link {
                file: FileId::new(id),
                variant,
                user: UserId::new(q["u"].clone()),
                expires: q["e"].parse().unwrap(),
            },
            q["s"].clone(),
        )
    }

    #[test]
    fn a_link_verifies_and_any_change_to_it_does_not() {
        let signer = Signer::new(b"secret");
        let now = Timestamp::from_millis(1_000_000);
        let (url, expires) = signer.sign(
            &FileId::new("f1"),
            Variant::Original,
            &UserId::new("u1"),
            now,
        );
        assert_eq!(expires, 1000 + LINK_TTL_SECS);
        let (link, sig) = parts(&url);
        assert!(signer.verify(&link, &sig));
        let changed = [
            Link {
                file: FileId::new("f2"),
                ..link.clone()
            },
            Link {
                variant: Variant::Thumbnail,
                ..link.clone()
            },
            Link {
                user: UserId::new("u2"),
                ..link.clone()
            },
            Link {
                expires: link.expires + 1,
                ..link.clone()
            },
        ];
        for other in changed {
            assert!(!signer.verify(&other, &sig), "{other:?}");
        }
        assert!(!Signer::new(b"other secret").verify(&link, &sig));
        assert!(!signer.verify(&link, "not base64!"));
        assert!(!signer.verify(&link, ""));
    }

    #[test]
    fn a_thumbnail_link_has_its_own_path() {
        let signer = Signer::new(b"secret");
        let (url, _) = signer.sign(
            &FileId::new("f1"),
            Variant::Thumbnail,
            &UserId::new("u1"),
            Timestamp::from_millis(0),
        );
        assert!(url.starts_with("/files/f1/thumbnail?"), "{url}");
        let (link, sig) = parts(&url);
        assert!(signer.verify(&link, &sig));
    }
}
