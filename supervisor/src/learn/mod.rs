//! Learning mode: run a plugin confined except that what its filter would
//! refuse is recorded and let through, then draft the smallest
//! `[permissions]` and policy rules that would have let it run.
//!
//! Only an operator starts it (`corral learn`, run as root); a manifest or
//! policy file cannot ask for it. The run differs from a normal one in
//! three ways, all set here on the compiled policy:
//!
//! - the seccomp program refers every call it would refuse to the
//!   supervisor, which records it and answers "continue"
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`);
//! - it also refers `open`/`openat`/`openat2`/`creat`, `execve`/`execveat`,
//!   `connect` and `bind`, whose paths and addresses are recorded
//!   ([`record`]);
//! - Landlock lets the plugin read and execute anywhere (writes stay
//!   confined to what it was granted), so a read it needs does not end
//!   the run before the rest is seen. A write outside its grants still
//!   fails, but is recorded first.
//!
//! [`draft`] turns the record into the two fragments, every line with why.

pub mod draft;
pub mod record;

pub use draft::Draft;
pub use record::{LearnLog, Need, OpenAccess, needs_of};

use crate::child::{Child, ChildSpec};
use crate::package::Package;
use crate::run::{compile_package, load_policy, runtime_options};
use crate::runtime::Runtime;
use corral_protocol::error::CorralError;
use corral_protocol::policy::{FsAccess, FsRule, SandboxPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One learning run of a package.
pub struct LearnRequest {
    pub package_dir: PathBuf,
    pub policy_file: Option<PathBuf>,
    pub trampoline: Option<PathBuf>,
    /// Calls to make, in order: method and input.
    pub calls: Vec<(String, Vec<u8>)>,
}

/// What each call answered during the run, for the operator.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub method: String,
    pub result: Result<usize, String>,
}

/// `sandbox` relaxed for learning (see the module docs).
pub fn learning_policy(sandbox: &SandboxPolicy) -> Result<SandboxPolicy, CorralError> {
    let mut learning = sandbox.clone();
    let c = &mut learning.confinement;
    let Some(program) = &c.seccomp else {
        return Err(CorralError::internal(
            "learning needs seccomp, which this policy turns off",
        ));
    };
    c.seccomp = Some(
        crate::policy::seccomp::with_learning(program)
            .map_err(|e| CorralError::internal(format!("learning program: {e}")))?,
    );
    if let Some(landlock) = &mut c.landlock {
        landlock.fs.push(FsRule {
            path: "/".into(),
            access: FsAccess::ReadExec,
        });
    }
    Ok(learning)
}

/// Runs `request`'s calls in one learning sandbox and drafts the grants.
pub async fn learn_once(request: LearnRequest) -> Result<(Draft, Vec<CallOutcome>), CorralError> {
    let policy = load_policy(request.policy_file.as_deref())?;
    let package = Package::open(&request.package_dir)?;
    let log = Arc::new(LearnLog::default());
    let mut options = runtime_options(&policy, request.trampoline);
    options.observer = Some(log.clone());
    let rt = Runtime::new(options).map_err(|e| CorralError::internal(e.to_string()))?;
    let sandbox = compile_package(&package, &policy, &rt)?;
    let learning = Arc::new(learning_policy(&sandbox)?);
    tracing::warn!(
        plugin = package.name(),
        "learning run: refused system calls are let through and recorded"
    );
    let grace = learning.timeouts.grace;
    let call_timeout = learning.timeouts.call;
    let child = Child::start(
        &rt,
        ChildSpec {
            plugin: package.name().to_string(),
            instance: 0,
            policy: learning,
            config: b"{}".to_vec(),
        },
    )
    .await
    .map_err(|e| e.into_error())?;
    let mut outcomes = Vec::new();
    for (method, input) in request.calls {
        let result = child
            .call(&method, input, call_timeout)
            .await
            .map(|out| out.output.len())
            .map_err(|e| format!("{}: {}", e.code(), e.message));
        outcomes.push(CallOutcome { method, result });
    }
    child.shutdown(grace.max(Duration::from_millis(100))).await;
    let (needs, dropped) = log.snapshot();
    Ok((
        draft::build(package.name(), &sandbox, &needs, dropped),
        outcomes,
    ))
}
