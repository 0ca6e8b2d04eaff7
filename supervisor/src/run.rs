//! `corral run`: one confined call without a daemon. Compiles the
//! package's policy, starts one child, makes the call, shuts the child down
//! and cleans up, reporting any failure with its typed error.

use crate::child::{CallOutput, Child, ChildSpec};
use crate::features::KernelFeatures;
use crate::package::Package;
use crate::policy::{CompileInput, Policy, PolicyError, PolicyText, compile};
use crate::runtime::{Runtime, RuntimeOptions};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::Manifest;
use corral_protocol::policy::SandboxPolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The version plugins' `engine` ranges are matched against.
pub fn engine_version() -> semver::Version {
    semver::Version::parse(env!("CARGO_PKG_VERSION"))
        .unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

pub fn policy_error(e: PolicyError) -> CorralError {
    let message = e.to_string();
    CorralError::new(
        ErrorKind::InvalidPolicy {
            file: e.file,
            key: e.key,
            reason: e.reason,
        },
        message,
    )
}

/// The built-in policy, with `file` applied on top when given.
pub fn load_policy(file: Option<&Path>) -> Result<Policy, CorralError> {
    let layers = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                policy_error(PolicyError {
                    file: path.display().to_string(),
                    key: "(document)".into(),
                    reason: format!("cannot read: {e}"),
                    line: None,
                })
            })?;
            vec![PolicyText {
                name: path.display().to_string(),
                text,
            }]
        }
        None => Vec::new(),
    };
    Policy::from_layers(&layers).map_err(policy_error)
}

/// The cgroup base directory of `corral run` (the daemon's is configured).
pub const RUN_CGROUP_BASE: &str = "corral-run";

/// Runtime options as a policy asks for them.
pub fn runtime_options(policy: &Policy, trampoline: Option<PathBuf>) -> RuntimeOptions {
    RuntimeOptions {
        trampoline,
        uid_range: policy.sandbox.uid_range,
        share_empty_namespaces: policy.sandbox.share_empty_namespaces,
        // Its own base: the daemon removes whatever it finds under its
        // base at start, which must never include a running `corral run`.
        cgroups: corral_cgroups::DetectOptions {
            base_name: RUN_CGROUP_BASE.to_string(),
            ..Default::default()
        },
        output_limit: Default::default(),
        observer: None,
        cgroup_pool: 0,
    }
}

/// Compiles `package` under `policy` for the kernel of `rt`.
pub fn compile_package(
    package: &Package,
    policy: &Policy,
    rt: &Runtime,
) -> Result<SandboxPolicy, CorralError> {
    compile_for(
        &package.manifest,
        &package.manifest_file,
        &package.dir,
        policy,
        &rt.features,
    )
}

/// Compiles the package in `package_dir` (its manifest already read, named
/// `manifest_file` in errors) under `policy` for a kernel with `features`,
/// against this corrald's version, as a client-facing error.
pub fn compile_for(
    manifest: &Manifest,
    manifest_file: &str,
    package_dir: &Path,
    policy: &Policy,
    features: &KernelFeatures,
) -> Result<SandboxPolicy, CorralError> {
    compile(&CompileInput {
        manifest,
        manifest_file,
        package_dir,
        policy,
        features,
        engine: &engine_version(),
    })
    .map_err(|e| e.to_corral_error())
}

pub struct RunRequest {
    pub package_dir: PathBuf,
    pub policy_file: Option<PathBuf>,
    pub trampoline: Option<PathBuf>,
    pub method: String,
    pub input: Vec<u8>,
}

/// Runs one call in a fresh sandbox.
pub async fn run_once(request: RunRequest) -> Result<CallOutput, CorralError> {
    let policy = load_policy(request.policy_file.as_deref())?;
    let package = Package::open(&request.package_dir)?;
    let rt = Runtime::new(runtime_options(&policy, request.trampoline))
        .map_err(|e| CorralError::internal(e.to_string()))?;
    let sandbox = Arc::new(compile_package(&package, &policy, &rt)?);
    for warning in &sandbox.warnings {
        tracing::warn!(plugin = package.name(), "{warning}");
    }
    let grace = sandbox.timeouts.grace;
    let call_timeout = sandbox.timeouts.call;
    let child = Child::start(
        &rt,
        ChildSpec {
            plugin: package.name().to_string(),
            instance: 0,
            policy: sandbox,
            config: b"{}".to_vec(),
        },
    )
    .await
    .map_err(|e| e.into_error())?;
    let result = child
        .call(&request.method, request.input, call_timeout)
        .await;
    child.shutdown(grace.max(Duration::from_millis(100))).await;
    result
}
