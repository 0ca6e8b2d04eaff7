//! Running the `corral` binary as a user would, with a time limit so a
//! hang fails the test instead of the CI job.

use crate::env::test_env;
use crate::leaks::cgroup_leaves;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `corral` command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The cgroup base `corral run` uses.
pub const RUN_CGROUP_BASE: &str = corral_supervisor::run::RUN_CGROUP_BASE;

#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub pid: u32,
    /// The exit code; panics were turned into a failed test before this.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout as one JSON document; panics naming the command otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "`corral {}` printed something that is not JSON ({e}):\nstdout: {}\nstderr: {}",
                self.args.join(" "),
                self.stdout,
                self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &CliOutput {
        assert_eq!(
            self.code,
            code,
            "`corral {}` exited with {} (expected {code})\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Leaf cgroups this `corral run` made and did not remove (its leaves
    /// are named `<plugin>.<instance>.<pid>.<n>`). Removes them, so a
    /// failing test does not litter the machine, and returns them.
    pub fn take_leftover_cgroups(&self) -> Vec<PathBuf> {
        let left = self.leftover_cgroups();
        for dir in &left {
            // The process is gone, so the cgroup is empty and rmdir works.
            let _ = std::fs::remove_dir(dir);
        }
        left
    }

    /// Leaf cgroups this `corral run` made and did not remove.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let marker = format!(".{}.", self.pid);
        cgroup_leaves(RUN_CGROUP_BASE)
            .into_iter()
            .filter(|leaf| {
                leaf.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&marker))
            })
            .collect()
    }
}

/// Runs `corral <args>` with `envs` added to the environment.
pub fn corral(args: &[&str], envs: &[(&str, &str)]) -> CliOutput {
    let env = test_env();
    let mut command = Command::new(env.corral());
    command
        .args(args)
        .env("CORRAL_SANDBOX", &env.sandbox)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_MASK_FEATURES")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting `corral {}`: {e}", args.join(" ")));
    let pid = child.id();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`corral {}` did not finish within {CLI_TIMEOUT:?}",
                    args.join(" ")
                );
            }
            Err(e) => panic!("waiting for `corral {}`: {e}", args.join(" ")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let code = status.code().unwrap_or_else(|| {
        panic!(
            "`corral {}` was killed by a signal ({status})\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        )
    });
    CliOutput {
        args,
        pid,
        code,
        stdout,
        stderr,
    }
}
