//! corral's side of the comparisons: the supervisor library used the way
//! `corral run` and corrald use it (a runtime, the built-in policy
//! compiled for the hello package, `Child::start`).

use crate::env::Env;
use anyhow::{Context, Result};
use corral_protocol::policy::SandboxPolicy;
use corral_supervisor::child::ChildSpec;
use corral_supervisor::package::Package;
use corral_supervisor::policy::{Policy, PolicyText};
use corral_supervisor::run;
use corral_supervisor::runtime::Runtime;
use std::path::Path;
use std::sync::Arc;

/// The built-in policy with `text` (operator policy TOML) on top.
pub fn policy(text: &str) -> Result<Policy> {
    let layers = if text.is_empty() {
        Vec::new()
    } else {
        vec![PolicyText {
            name: "benchmark policy".into(),
            text: text.to_string(),
        }]
    };
    Policy::from_layers(&layers).map_err(|e| anyhow::anyhow!("benchmark policy: {e}"))
}

/// The cgroup base directory of this process's runtime `tag`: unique, so
/// nothing another corral on the machine does touches it.
pub fn cgroup_base(tag: &str) -> String {
    format!("corral-bench-{}-{tag}", std::process::id())
}

/// A runtime as `corral run` builds one for `policy`.
pub fn runtime(
    env: &Env,
    policy: &Policy,
    tag: &str,
    trampoline: Option<&Path>,
) -> Result<Arc<Runtime>> {
    let mut options = run::runtime_options(
        policy,
        Some(trampoline.unwrap_or(&env.trampoline).to_path_buf()),
    );
    options.cgroups.base_name = cgroup_base(tag);
    let rt = Runtime::new(options).context("starting the supervisor runtime")?;
    anyhow::ensure!(
        rt.cgroups.is_some(),
        "no usable cgroup hierarchy: the benchmarks measure fully confined plugins, cgroup included"
    );
    Ok(rt)
}

/// The hello package's compiled policy.
pub fn compile_hello(env: &Env, policy: &Policy, rt: &Runtime) -> Result<Arc<SandboxPolicy>> {
    let package = Package::open(&env.hello_package()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = run::compile_package(&package, policy, rt)
        .map_err(|e| anyhow::anyhow!("compiling hello's policy: {e}"))?;
    Ok(Arc::new(compiled))
}

pub fn spec(policy: &Arc<SandboxPolicy>, instance: u32) -> ChildSpec {
    ChildSpec {
        plugin: policy.plugin.clone(),
        instance,
        policy: policy.clone(),
        config: b"{}".to_vec(),
    }
}

/// Removes this process's cgroup base directories (their children are
/// gone by now) from every hierarchy.
pub fn remove_cgroup_bases() {
    let prefix = format!("corral-bench-{}-", std::process::id());
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for controller in controllers.flatten() {
        let Ok(entries) = std::fs::read_dir(controller.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&entry.path());
            }
        }
    }
}

/// cgroup directories are removed leaves first with rmdir (their files
/// are not removable).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("note: cannot remove {}: {e}", dir.display());
    }
}
