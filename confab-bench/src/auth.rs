//! Accounts for the benchmark users: tokens cached between runs (argon2
//! makes registering thousands of users slow), registered when missing,
//! logged in again when expired or rejected.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

/// A user with a token.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub id: String,
    pub token: String,
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    url: String,
    users: BTreeMap<String, Cached>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Cached {
    id: String,
    token: String,
    /// Unix seconds.
    exp: i64,
}

#[derive(Deserialize)]
struct AuthReply {
    user: UserReply,
    token: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
}

#[derive(Deserialize)]
struct UserReply {
    id: String,
}

#[derive(Deserialize)]
struct MeReply {
    user: UserReply,
}

/// How the accounts of a run were obtained.
#[derive(Default)]
pub struct AuthCounts {
    pub cached: AtomicU64,
    pub registered: AtomicU64,
    pub logged_in: AtomicU64,
    pub refreshed: AtomicU64,
}

/// Token cache plus HTTP clients (one per source address).
pub struct Auth {
    base: String,
    password: String,
    clients: Vec<reqwest::Client>,
    cache_path: PathBuf,
    cache: Mutex<CacheFile>,
    hash_sem: Semaphore,
    check_sem: Semaphore,
    /// Cached tokens that expire sooner than this are renewed first.
    min_valid_secs: i64,
    pub counts: AuthCounts,
}

impl Auth {
    pub fn new(
        base: &str,
        password: &str,
        cache_path: &Path,
        sources: &[IpAddr],
        concurrency: usize,
        min_valid_secs: i64,
    ) -> Result<Self> {
        let mut clients = Vec::new();
        let build = |src: Option<IpAddr>| {
            reqwest::Client::builder()
                .no_proxy()
                .local_address(src)
                .timeout(Duration::from_secs(120))
                .build()
        };
        if sources.is_empty() {
            clients.push(build(None)?);
        }
        for &src in sources {
            clients.push(build(Some(src))?);
        }
        let cache = match std::fs::read_to_string(cache_path) {
            Ok(text) => match serde_json::from_str::<CacheFile>(&text) {
                Ok(c) if c.url == base => c,
                _ => CacheFile::default(),
            },
            Err(_) => CacheFile::default(),
        };
        Ok(Self {
            base: base.to_owned(),
            password: password.to_owned(),
            clients,
            cache_path: cache_path.to_owned(),
            cache: Mutex::new(CacheFile {
                url: base.to_owned(),
                users: cache.users,
            }),
            hash_sem: Semaphore::new(concurrency.max(1)),
            check_sem: Semaphore::new(64),
            min_valid_secs,
            counts: AuthCounts::default(),
        })
    }

    fn client(&self, name: &str) -> &reqwest::Client {
        let h = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.clients[h % self.clients.len()]
    }

    /// Accounts for all `names`, in order.
    pub async fn accounts(self: &Arc<Self>, names: &[String]) -> Result<Vec<Account>> {
        let tasks: Vec<_> = names
            .iter()
            .map(|name| {
                let me = self.clone();
                let name = name.clone();
                tokio::spawn(async move { me.account(&name).await })
            })
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for t in tasks {
            out.push(t.await.context("auth task")??);
        }
        self.save()?;
        Ok(out)
    }

    async fn account(&self, name: &str) -> Result<Account> {
        let cached = self.cache.lock().unwrap().users.get(name).cloned();
        if let Some(c) = cached {
            let now = chrono::Utc::now().timestamp();
            if c.exp > now + self.min_valid_secs {
                let _permit = self.check_sem.acquire().await?;
                if self.me(&c.token).await?.as_deref() == Some(c.id.as_str()) {
                    self.counts.cached.fetch_add(1, Ordering::Relaxed);
                    return Ok(Account {
                        name: name.to_owned(),
                        id: c.id,
                        token: c.token,
                    });
                }
            }
            return self.login_or_register(name, true).await;
        }
        self.login_or_register(name, false).await
    }

    /// A new token for a user whose token was rejected.
    pub async fn refresh(&self, name: &str) -> Result<Account> {
        self.counts.refreshed.fetch_add(1, Ordering::Relaxed);
        self.login_or_register(name, true).await
    }

    async fn me(&self, token: &str) -> Result<Option<String>> {
        let res = self
            .client("")
            .get(format!("{}/api/v1/me", self.base))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {}/api/v1/me", self.base))?;
        if res.status().as_u16() != 200 {
            return Ok(None);
        }
        Ok(res.json::<MeReply>().await.ok().map(|m| m.user.id))
    }

    async fn login_or_register(&self, name: &str, login_first: bool) -> Result<Account> {
        let _permit = self.hash_sem.acquire().await?;
        let order: [&str; 2] = if login_first {
            ["login", "register"]
        } else {
            ["register", "login"]
        };
        let mut last = String::new();
        for path in order {
            let (status, body) = self.post(path, name).await?;
            match (path, status) {
                ("register", 201) | ("login", 200) => {
                    let reply: AuthReply = serde_json::from_str(&body)
                        .with_context(|| format!("{path} {name}: unexpected body {body}"))?;
                    let exp = chrono::DateTime::parse_from_rfc3339(&reply.expires_at)
                        .map(|t| t.timestamp())
                        .unwrap_or(i64::MAX);
                    let counter = if path == "register" {
                        &self.counts.registered
                    } else {
                        &self.counts.logged_in
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.cache.lock().unwrap().users.insert(
                        name.to_owned(),
                        Cached {
                            id: reply.user.id.clone(),
                            token: reply.token.clone(),
                            exp,
                        },
                    );
                    return Ok(Account {
                        name: name.to_owned(),
                        id: reply.user.id,
                        token: reply.token,
                    });
                }
                // Taken name: log in. Unknown user: register.
                ("register", 409) | ("login", 401) => last = format!("{path}: {status} {body}"),
                _ => bail!("{path} {name}: HTTP {status} {body}"),
            }
        }
        Err(anyhow!("no account for {name}: {last}"))
    }

    /// POSTs credentials, retrying while rate-limited (429).
    async fn post(&self, path: &str, name: &str) -> Result<(u16, String)> {
        let url = format!("{}/api/v1/{path}", self.base);
        let body = json!({"username": name, "password": self.password});
        let mut wait = Duration::from_millis(100);
        for _ in 0..200 {
            let res = self
                .client(name)
                .post(&url)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            if status != 429 {
                return Ok((status, text));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        bail!("POST {url}: still rate-limited (429) after many tries")
    }

    /// Writes the cache (mode 0600: it holds tokens).
    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string(&*self.cache.lock().unwrap())?;
        let tmp = self
            .cache_path
            .with_extension(format!("tmp{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("write {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
        }
        std::fs::rename(&tmp, &self.cache_path)
            .with_context(|| format!("write {}", self.cache_path.display()))?;
        Ok(())
    }
}

/// The default cache file: under the temp dir, named after the URL.
pub fn default_cache_path(url: &str) -> PathBuf {
    let key: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("confab-bench-tokens-{key}.json"))
}
