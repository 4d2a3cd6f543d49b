//! The database `database_url` names, and how its URL is shown in logs
//! and errors without its password.

use std::path::PathBuf;

/// Where confab keeps its data, as `database_url` says.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its libpq connection URL.
    Postgres(String),
}

impl Database {
    /// `text` with every password of the URL replaced by `***`, for errors
    /// that may quote parts of it.
    pub fn scrub(&self, text: &str) -> String {
        match self {
            Self::Sqlite(_) => text.to_owned(),
            Self::Postgres(url) => masked(url)
                .1
                .into_iter()
                .fold(text.to_owned(), |text, secret| text.replace(secret, "***")),
        }
    }
}

impl std::fmt::Display for Database {
    /// For logs: a PostgreSQL URL is shown with its password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite at {}", path.display()),
            Self::Postgres(url) => write!(f, "PostgreSQL at {}", masked(url).0),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `url` with the password of its user part, and of any `password` query
/// parameter, replaced by `***`; and the passwords it held.
fn masked(url: &str) -> (String, Vec<&str>) {
    let mut secrets = Vec::new();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, secret)) => {
                secrets.push(secret);
                format!("{name}:***@{host}")
            }
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, secret)) if key.eq_ignore_ascii_case("password") => {
                        secrets.push(secret);
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    secrets.retain(|s| !s.is_empty());
    (format!("{scheme}://{authority}{tail}"), secrets)
}
