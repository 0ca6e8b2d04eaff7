//! The client's calls about package sources (S3 buckets): their status,
//! browsing what they hold, and installing from them. Each is one request
//! of [`Endpoint`]; see `corral_protocol::sources` for the answers.

use crate::client::{Client, ClientError, Endpoint};
use corral_protocol::api::InstallResponse;
use corral_protocol::sources::{
    SourceFiles, SourceInstallRequest, SourceManifest, SourcePlugin, SourcePluginPage, SourceStatus,
};

impl Client {
    /// Every configured source with its polling status.
    pub async fn sources(&self) -> Result<Vec<SourceStatus>, ClientError> {
        self.send(&Endpoint::Sources).await?.json()
    }

    /// Polls `source` now and answers its status afterwards.
    pub async fn source_poll(&self, source: &str) -> Result<SourceStatus, ClientError> {
        self.send(&Endpoint::SourcePoll {
            source: source.into(),
        })
        .await?
        .json()
    }

    /// One page of the plugins `source` holds; pass the page's `next` as
    /// `after` for the following one.
    pub async fn source_plugins(
        &self,
        source: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<SourcePluginPage, ClientError> {
        self.send(&Endpoint::SourcePlugins {
            source: source.into(),
            limit,
            after: after.map(str::to_string),
        })
        .await?
        .json()
    }

    /// A plugin's versions in `source` (size, last modified, etag, sha256);
    /// `source_error` with problem `not_found` when it holds none.
    pub async fn source_plugin(
        &self,
        source: &str,
        name: &str,
    ) -> Result<SourcePlugin, ClientError> {
        self.send(&Endpoint::SourcePlugin {
            source: source.into(),
            name: name.into(),
        })
        .await?
        .json()
    }

    /// Whether `source` holds any version of `name`.
    pub async fn source_has(&self, source: &str, name: &str) -> Result<bool, ClientError> {
        match self.source_plugin(source, name).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api(e))
                if e.kind.http_status() == 404 && e.code() == "source_error" =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The manifest of a version (`latest`, a version or a range).
    pub async fn source_manifest(
        &self,
        source: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<SourceManifest, ClientError> {
        self.send(&Endpoint::SourceManifest {
            source: source.into(),
            name: name.into(),
            version: version.map(str::to_string),
        })
        .await?
        .json()
    }

    /// The files of a version.
    pub async fn source_files(
        &self,
        source: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<SourceFiles, ClientError> {
        self.send(&Endpoint::SourceFiles {
            source: source.into(),
            name: name.into(),
            version: version.map(str::to_string),
        })
        .await?
        .json()
    }

    /// Installs `name` from `source` at `latest`, a version or a range;
    /// the source then follows that until installed again.
    pub async fn source_install(
        &self,
        source: &str,
        name: &str,
        request: SourceInstallRequest,
    ) -> Result<InstallResponse, ClientError> {
        self.send(&Endpoint::SourceInstall {
            source: source.into(),
            name: name.into(),
            request,
        })
        .await?
        .json()
    }
}
