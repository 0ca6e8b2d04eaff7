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

impl S3 {
    pub async fn new(config: &S3SourceConfig) -> S3 {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "corrald.toml",
            ));
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .build();
        S3 {
            client: Client::from_conf(s3_config),
            source: config.name.clone(),
            bucket: config.bucket.clone(),
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
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
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
            })
            .collect();
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
            let chunk = chunk.map_err(|e| {
                source_error(
                    &self.source,
                    "interrupted",
                    format!(
                        "fetching {key}: the download broke after {size} bytes: {}",
                        DisplayErrorContext(&e)
                    ),
                )
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(self.too_large(key, size, max));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| CorralError::internal(format!("writing {key} to disk: {e}")))?;
        }
        if declared != 0 && size != declared {
            return Err(source_error(
                &self.source,
                "interrupted",
                format!("fetching {key}: got {size} of {declared} bytes"),
            ));
        }
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
        let dir = std::env::temp_dir();
        let d = self.download(key, max, &dir).await?;
        std::fs::read(d.file.path())
            .map_err(|e| CorralError::internal(format!("reading back {key}: {e}")))
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), CorralError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.classify(&format!("uploading {key}"), e))?;
        Ok(())
    }

    fn too_large(&self, key: &str, size: u64, max: u64) -> CorralError {
        source_error(
            &self.source,
            "too_large",
            format!("{key} is {size} bytes or more, over max_object_size ({max} bytes)"),
        )
    }
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
