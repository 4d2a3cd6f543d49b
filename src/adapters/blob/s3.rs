//! The blob store on an S3-compatible service (AWS, SeaweedFS, MinIO, ...),
//! through `object_store`. Every node of a cluster sees the same objects.
//! Requests are path style (`endpoint/bucket/key`), which self-hosted
//! services need, and large files go up in parts, read from the staged
//! file as they are sent.

use std::ops::Range;
use std::path::Path;

use anyhow::Context as _;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::{BlobError, BlobMeta, BlobStore, ByteStream, check_key, check_prefix, check_range};

/// The size of an upload's parts; a file no larger goes up in one request.
/// S3 wants parts of at least 5 MiB, and at most 10 000 of them: 8 MiB
/// parts cover files up to 78 GiB.
const PART: usize = 8 * 1024 * 1024;
/// Parts in flight at once: the memory an upload holds is about this many
/// parts plus the one being filled.
const PARTS_IN_FLIGHT: usize = 2;
/// How much of the staged file is read at a time.
const READ: usize = 1024 * 1024;

/// Where the objects are and how to reach them: a `files_url`'s parts.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket, which must exist.
    pub bucket: String,
    /// The service's URL, `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The region to sign for (`us-east-1` unless said).
    pub region: String,
    /// The access key; without one (and its secret) requests go unsigned.
    pub access_key_id: Option<String>,
    /// The access key's secret.
    pub secret_access_key: Option<String>,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
}

// By hand: the secret must not reach a log through `{:?}`.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Reads what follows `s3://` in a `files_url`: `bucket?endpoint=..&region=..
    /// &access_key_id=..&secret_access_key=..&allow_http=true|false`. Values are
    /// percent-decoded, and a `+` stays a `+` (AWS secrets hold them).
    /// `allow_http` defaults to whether the endpoint is `http://`.
    pub fn parse(rest: &str) -> anyhow::Result<Self> {
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty(),
            "files_url: s3:// needs a bucket (s3://bucket?endpoint=...)"
        );
        anyhow::ensure!(
            !bucket.contains(['/', '@', ':']),
            "files_url: s3://bucket takes no path, port or user (the endpoint option says where)"
        );
        let mut config = Self {
            bucket: bucket.to_owned(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        };
        let mut allow_http = None;
        for (name, value) in form_urlencoded::parse(query.replace('+', "%2B").as_bytes()) {
            let value = value.into_owned();
            match &*name {
                "endpoint" => config.endpoint = Some(value.trim_end_matches('/').to_owned()),
                "region" => config.region = value,
                "access_key_id" => config.access_key_id = Some(value),
                "secret_access_key" => config.secret_access_key = Some(value),
                "allow_http" => {
                    allow_http = Some(match &*value {
                        "true" => true,
                        "false" => false,
                        _ => anyhow::bail!("files_url: allow_http must be true or false"),
                    });
                }
                // Only the name: a mistyped secret's value must not be shown.
                other => anyhow::bail!(
                    "files_url: unknown option {other:?} (endpoint, region, \
                     access_key_id, secret_access_key, allow_http)"
                ),
            }
        }
        anyhow::ensure!(
            config.access_key_id.is_some() == config.secret_access_key.is_some(),
            "files_url: access_key_id and secret_access_key go together"
        );
        config.allow_http = allow_http.unwrap_or_else(|| {
            config
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        });
        Ok(config)
    }
}

/// Objects in one bucket of an S3-compatible service.
#[derive(Debug)]
pub struct S3Blobs {
    store: AmazonS3,
    bucket: String,
    endpoint: Option<String>,
}

impl S3Blobs {
    /// A store on the bucket a `files_url`'s tail (after `s3://`) names.
    pub fn from_url(rest: &str) -> anyhow::Result<Self> {
        Self::new(S3Config::parse(rest)?)
    }

    /// A store on `config`'s bucket. Nothing is sent until it is used.
    pub fn new(config: S3Config) -> anyhow::Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            // Path style: SeaweedFS and MinIO do not serve bucket.host names.
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => builder
                .with_access_key_id(id)
                .with_secret_access_key(secret),
            // Without keys object_store would ask the instance metadata
            // service for some; a service that wants none wants no signature.
            _ => builder.with_skip_signature(true),
        };
        let store = builder.build().context("files_url: S3 settings")?;
        Ok(Self {
            store,
            bucket: config.bucket,
            endpoint: config.endpoint,
        })
    }

    /// Sends the staged file, in one request or in parts.
    async fn upload(&self, path: &ObjectPath, staged: &Path) -> Result<(), BlobError> {
        let mut file = tokio::fs::File::open(staged).await.map_err(other)?;
        let size = file.metadata().await.map_err(other)?.len();
        if size <= PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(other)?;
            self.store
                .put(path, PutPayload::from(bytes))
                .await
                .map_err(store_error)?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buffer = vec![0; READ];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) => {
                    // The service would keep the parts sent so far (and bill them).
                    let _ = writer.abort().await;
                    return Err(other(e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(store_error(e));
            }
            writer.write(&buffer[..read]);
        }
        // finish aborts the upload itself when completing it fails.
        writer.finish().await.map_err(store_error)?;
        Ok(())
    }
}

fn other(e: impl std::fmt::Display) -> BlobError {
    BlobError::Other(e.to_string())
}

fn store_error(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e => other(e),
    }
}

/// The object path of `key`, once the key is known to be safe.
fn object_path(key: &str) -> Result<ObjectPath, BlobError> {
    check_key(key)?;
    ObjectPath::parse(key).map_err(other)
}

fn meta(object: object_store::ObjectMeta) -> BlobMeta {
    BlobMeta {
        key: object.location.to_string(),
        size: object.size,
        modified: object.last_modified.into(),
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_file(&self, key: &str, staged: &Path) -> Result<(), BlobError> {
        // An existing key is uploaded again all the same: the same bytes
        // overwrite it and its last-modified time moves on, which is the
        // refresh the sweep needs (copying an object onto itself, the
        // cheaper way, is refused by some services).
        let result = match object_path(key) {
            Ok(path) => self.upload(&path, staged).await,
            Err(e) => Err(e),
        };
        match tokio::fs::remove_file(staged).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && result.is_ok() => Err(other(e)),
            _ => result,
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let path = object_path(key)?;
        if let Some(range) = &range
            && range.start >= range.end
        {
            // HTTP has no empty byte range: answer from the object's size.
            let size = self.store.head(&path).await.map_err(store_error)?.size;
            check_range(key, range, size)?;
            return Ok(futures::stream::empty().boxed());
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(store_error)?;
        if let Some(range) = &range {
            // The service clips a range that runs past the end; disk refuses it.
            check_range(key, range, result.meta.size)?;
        }
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>, BlobError> {
        let path = object_path(key)?;
        match self.store.head(&path).await {
            Ok(object) => Ok(Some(meta(object))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        check_prefix(prefix)?;
        // object_store lists whole path segments: list the deepest folder
        // the prefix names in full, then keep what matches the rest.
        let folder = match prefix.rfind('/') {
            Some(end) => Some(ObjectPath::parse(&prefix[..end]).map_err(other)?),
            None => None,
        };
        let mut found: Vec<BlobMeta> = self
            .store
            .list(folder.as_ref())
            .map_ok(meta)
            .try_filter(|blob| futures::future::ready(blob.key.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(store_error)?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn shared(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3 {} at {endpoint}", self.bucket),
            None => format!("s3 {} at AWS", self.bucket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_every_setting() {
        let config = S3Config::parse(
            "files?endpoint=http%3A%2F%2F127.0.0.1%3A8333/&region=eu-west-1\
             &access_key_id=AK&secret_access_key=a+b/c%2Bd",
        )
        .unwrap();
        assert_eq!(config.bucket, "files");
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(config.access_key_id.as_deref(), Some("AK"));
        assert_eq!(config.secret_access_key.as_deref(), Some("a+b/c+d"));
        assert!(config.allow_http, "an http:// endpoint allows http");
        assert!(!format!("{config:?}").contains("a+b/c+d"));
    }

    #[test]
    fn defaults_are_aws_style() {
        let config = S3Config::parse("files").unwrap();
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.endpoint, None);
        assert!(!config.allow_http);
        let config =
            S3Config::parse("files?endpoint=http://10.0.0.1:8333&allow_http=false").unwrap();
        assert!(!config.allow_http, "said outright, allow_http wins");
        assert!(
            S3Config::parse("files?access_key_id=AK")
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
    }
}
