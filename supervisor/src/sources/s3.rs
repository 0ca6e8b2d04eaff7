//! The S3 client of one source (aws-sdk-s3): listing, bounded downloads
//! and uploads, and every failure mapped to one `source_error` with a
//! problem an operator can act on (unreachable, access_denied,
//! no_such_bucket, not_found, too_large, interrupted).

use super::config::S3SourceConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use corral_protocol::error::{CorralError, ErrorKind};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;

/// A failure of one source, typed for the API, the log, events and
/// metrics.
pub fn source_error(source: &str, problem: &str, message: impl Into<String>) -> CorralError {
    CorralError::new(
        ErrorKind::SourceError {
            source_name: source.to_string(),
            problem: problem.to_string(),
        },
        format!("source {source}: {}", message.into()),
    )
}

/// The `problem` of a source error, if `e` is one.
pub fn problem_of(e: &CorralError) -> &str {
    match &e.kind {
        ErrorKind::SourceError { problem, .. } => problem,
        _ => e.code(),
    }
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `last_modified` in milliseconds since the epoch (0 when unknown),
    /// for ordering.
    pub modified_ms: i64,
}

/// A downloaded object: its bytes in a temporary file, their sha256.
#[derive(Debug)]
pub struct Downloaded {
    pub file: tempfile::NamedTempFile,
    pub size: u64,
    pub sha256: String,
    pub etag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct S3 {
    client: Client,
    pub source: String,
    pub bucket: String,
}

/// Longest a connection attempt may take; a dead endpoint fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a read may stall mid-response (a server killed mid-fetch).
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Most keys one listing of a source walks.
pub const MAX_LISTED_KEYS: usize = 1_000_000;

/// Where and as whom corrald reaches an S3 store: shared by the package
/// sources and the buckets plugins reach through the host
/// (`services::buckets`).
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub path_style: bool,
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
}

/// A client for `conn`: bounded connect and read times, two attempts.
/// Credentials come from `conn` when both halves are set, else from the
/// standard AWS chain.
pub async fn client(conn: &Connection<'_>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(conn.region.to_string()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
    if let Some(endpoint) = conn.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (conn.access_key_id, conn.secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "corrald.toml",
        ));
    }
    let shared = loader.load().await;
    let s3_config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(conn.path_style)
        .build();
    Client::from_conf(s3_config)
}

/// An object read into memory.
#[derive(Debug)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
}

impl S3 {
    pub async fn new(config: &S3SourceConfig) -> S3 {
        let conn = Connection {
            endpoint: config.endpoint.as_deref(),
            region: &config.region,
            path_style: config.path_style,
            access_key_id: config.access_key_id.as_deref(),
            secret_access_key: config.secret_access_key.as_deref(),
        };
        S3::with_client(client(&conn).await, &config.name, &config.bucket)
    }

    /// One bucket through an existing client (clients are cheap to
    /// clone and share their connections).
    pub fn with_client(client: Client, source: &str, bucket: &str) -> S3 {
        S3 {
            client,
            source: source.to_string(),
            bucket: bucket.to_string(),
        }
    }

    /// Maps an SDK failure to a source error naming what went wrong.
    fn classify<E, R>(&self, what: &str, e: SdkError<E, R>) -> CorralError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let detail = DisplayErrorContext(&e).to_string();
        let (problem, reason) = match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                ("unreachable", "the endpoint is unreachable".to_string())
            }
            SdkError::ResponseError(_) => (
                "interrupted",
                "the connection broke during the response".to_string(),
            ),
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("");
                let status = service.raw().status_code();
                match (code, status) {
                    ("NoSuchBucket", _) => (
                        "no_such_bucket",
                        format!("the bucket {} does not exist", self.bucket),
                    ),
                    ("NoSuchKey" | "NotFound", _) | (_, 404) => {
                        ("not_found", "no such object".to_string())
                    }
                    (
                        "AccessDenied"
                        | "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "InvalidToken"
                        | "ExpiredToken",
                        _,
                    )
                    | (_, 401 | 403) => (
                        "access_denied",
                        "access denied: check the credentials and the bucket policy".to_string(),
                    ),
                    _ => ("other", format!("the store answered {status} {code}")),
                }
            }
            _ => ("other", "the request failed".to_string()),
        };
        source_error(
            &self.source,
            problem,
            format!("{what}: {reason} ({detail})"),
        )
    }

    /// Lists keys under `prefix` (optionally grouped by `delimiter`), one
    /// page: objects, common prefixes and the continuation token.
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<(Vec<ObjectInfo>, Vec<String>, Option<String>), CorralError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(continuation)
            .set_max_keys(max_keys)
            .send()
            .await
            .map_err(|e| self.classify(&format!("listing {}/{prefix}", self.bucket), e))?;
        let objects = out.contents().iter().filter_map(object_info).collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok((objects, prefixes, next))
    }

    /// Every object under `prefix`, at most `max` of them.
    pub async fn list_all(&self, prefix: &str, max: usize) -> Result<Vec<ObjectInfo>, CorralError> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let (objects, _, next) = self.list_page(prefix, None, token, None).await?;
            all.extend(objects);
            if all.len() > max {
                return Err(source_error(
                    &self.source,
                    "too_large",
                    format!("more than {max} objects under {}/{prefix}", self.bucket),
                ));
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Downloads `key` into a temporary file in `dir`, refusing more than
    /// `max` bytes: the declared length is checked before the body is
    /// read, and the bytes are counted while they arrive (a store that
    /// lies about the length cannot make us write more).
    pub async fn download(
        &self,
        key: &str,
        max: u64,
        dir: &std::path::Path,
    ) -> Result<Downloaded, CorralError> {
        let (out, declared) = self.open(key, max).await?;
        let etag = out.e_tag().map(str::to_string);
        let mut file = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(dir)
            .map_err(|e| {
                CorralError::internal(format!("creating a file in {}: {e}", dir.display()))
            })?;
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.broke(key, size, e))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(self.too_large(key, size, max));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| CorralError::internal(format!("writing {key} to disk: {e}")))?;
        }
        self.check_complete(key, size, declared)?;
        file.flush()
            .map_err(|e| CorralError::internal(format!("writing {key} to disk: {e}")))?;
        Ok(Downloaded {
            file,
            size,
            sha256: super::verify::hex(&hasher.finalize()),
            etag,
        })
    }

    /// A small object (a `.sha256` or `.minisig`) read into memory.
    pub async fn get_small(&self, key: &str, max: u64) -> Result<Vec<u8>, CorralError> {
        Ok(self.get_bytes(key, max).await?.bytes)
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<Option<String>, CorralError> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.classify(&format!("uploading {key}"), e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// Reads `key` into memory, refusing more than `max` bytes (the
    /// declared length first, then the bytes as they arrive).
    pub async fn get_bytes(&self, key: &str, max: u64) -> Result<Object, CorralError> {
        let (out, declared) = self.open(key, max).await?;
        let etag = out.e_tag().map(str::to_string);
        let content_type = out.content_type().map(str::to_string);
        let mut body = out.body;
        let mut bytes = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.broke(key, bytes.len() as u64, e))?;
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(self.too_large(key, (bytes.len() + chunk.len()) as u64, max));
            }
            bytes.extend_from_slice(&chunk);
        }
        self.check_complete(key, bytes.len() as u64, declared)?;
        Ok(Object {
            bytes,
            etag,
            content_type,
        })
    }

    /// Starts reading `key`, refusing an object whose declared length is
    /// over `max` before any of its bytes arrive; returns the declared
    /// length (0 when the store gave none).
    async fn open(
        &self,
        key: &str,
        max: u64,
    ) -> Result<(aws_sdk_s3::operation::get_object::GetObjectOutput, u64), CorralError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(&format!("fetching {key}"), e))?;
        let declared = out.content_length().unwrap_or(0).max(0) as u64;
        if declared > max {
            return Err(self.too_large(key, declared, max));
        }
        Ok((out, declared))
    }

    /// The body stopped with an error after `after` bytes.
    fn broke(&self, key: &str, after: u64, e: impl std::error::Error) -> CorralError {
        source_error(
            &self.source,
            "interrupted",
            format!(
                "fetching {key}: the download broke after {after} bytes: {}",
                DisplayErrorContext(&e)
            ),
        )
    }

    /// A body that ended short of its declared length was cut off.
    fn check_complete(&self, key: &str, size: u64, declared: u64) -> Result<(), CorralError> {
        if declared != 0 && size != declared {
            return Err(source_error(
                &self.source,
                "interrupted",
                format!("fetching {key}: got {size} of {declared} bytes"),
            ));
        }
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), CorralError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(&format!("deleting {key}"), e))?;
        Ok(())
    }

    /// One page of keys under `prefix` that sort after `after`; true when
    /// more follow.
    pub async fn list_after(
        &self,
        prefix: &str,
        after: Option<String>,
        max_keys: i32,
    ) -> Result<(Vec<ObjectInfo>, bool), CorralError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(after)
            .max_keys(max_keys)
            .send()
            .await
            .map_err(|e| self.classify(&format!("listing {}/{prefix}", self.bucket), e))?;
        let objects = out.contents().iter().filter_map(object_info).collect();
        Ok((objects, out.is_truncated().unwrap_or(false)))
    }

    fn too_large(&self, key: &str, size: u64, max: u64) -> CorralError {
        source_error(
            &self.source,
            "too_large",
            format!("{key} is {size} bytes or more, over max_object_size ({max} bytes)"),
        )
    }
}

fn object_info(o: &aws_sdk_s3::types::Object) -> Option<ObjectInfo> {
    Some(ObjectInfo {
        key: o.key()?.to_string(),
        size: o.size().unwrap_or(0).max(0) as u64,
        etag: o.e_tag().map(str::to_string),
        last_modified: o.last_modified().map(|t| t.to_string()),
        modified_ms: o
            .last_modified()
            .map(|t| t.secs() * 1000 + i64::from(t.subsec_nanos() / 1_000_000))
            .unwrap_or(0),
    })
}

/// The HTTP status of a raw response, for classifying service errors.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
