//! Real connections from other uids: the `dt-peer` helper, started with
//! the groups, gid and uid a test names, makes one request and prints the
//! answer. The daemon sees that process's credentials (SO_PEERCRED,
//! SO_PEERGROUPS), exactly as it would see any other client's.

use crate::client::{Request, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Who the helper runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// uid `uid`, primary group `uid`, and `extra` groups.
    pub fn user(uid: u32, extra: &[u32]) -> Identity {
        let mut groups = vec![uid];
        groups.extend_from_slice(extra);
        Identity {
            uid,
            gid: uid,
            groups,
        }
    }
}

/// What the helper prints: the answer, or why there was none.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerOutput {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: String,
    pub error: Option<String>,
}

/// What the helper prints in `--hold` mode.
#[derive(Debug, Serialize, Deserialize)]
pub struct HoldOutput {
    pub opened: usize,
}

/// Connections a hostile helper holds open until this is dropped.
pub struct Held {
    pub opened: usize,
    child: tokio::process::Child,
}

impl Held {
    /// Closes every connection (the helper exits when its stdin closes).
    pub async fn release(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}

/// An answer the helper got, with the helper's pid (the pid the daemon
/// saw).
#[derive(Debug)]
pub struct PeerAnswer {
    pub pid: u32,
    pub response: Response,
}

/// The helper binary, copied where any uid may run it.
pub struct Peer {
    binary: PathBuf,
}

impl Peer {
    /// `built` is `env!("CARGO_BIN_EXE_dt-peer")` of the test; the copy
    /// goes into `dir` (mode 0755 directories), because the build
    /// directory may not be open to other uids.
    pub fn new(built: &str, dir: &Path) -> Peer {
        let binary = dir.join("dt-peer");
        std::fs::copy(built, &binary)
            .unwrap_or_else(|e| panic!("copying {built} to {}: {e}", binary.display()));
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 dt-peer");
        Peer { binary }
    }

    /// Makes `request` on `socket` as `who`; panics when it gets no answer.
    pub async fn request(&self, who: &Identity, socket: &Path, request: &Request) -> PeerAnswer {
        let (pid, printed) = self.run(who, socket, request).await;
        let Some(status) = printed.status else {
            panic!(
                "dt-peer as {who:?}: {} {} got no answer: {}",
                request.method,
                request.path,
                printed.error.unwrap_or_default()
            );
        };
        PeerAnswer {
            pid,
            response: Response {
                method: request.method.clone(),
                path: format!("{} (as uid {})", request.path, who.uid),
                status,
                content_type: printed.content_type,
                body: Bytes::from(printed.body),
            },
        }
    }

    /// Makes `request` as `who` and expects no answer (the connection is
    /// refused); returns why.
    pub async fn request_error(&self, who: &Identity, socket: &Path, request: &Request) -> String {
        let (_, printed) = self.run(who, socket, request).await;
        match (printed.status, printed.error) {
            (None, Some(error)) => error,
            (status, _) => panic!(
                "dt-peer as {who:?}: {} {} was answered ({status:?}: {}) but should not have been",
                request.method, request.path, printed.body
            ),
        }
    }

    /// Makes `request` `times` times as `who` (one connection each);
    /// the last answer.
    pub async fn request_repeated(
        &self,
        who: &Identity,
        socket: &Path,
        request: &Request,
        times: usize,
    ) -> PeerAnswer {
        let mut command = self.command(who, socket, request);
        command.env("DT_PEER_REPEAT", times.to_string());
        let (pid, printed) = Self::output(who, command).await;
        let Some(status) = printed.status else {
            panic!("dt-peer as {who:?}: no answer: {:?}", printed.error);
        };
        PeerAnswer {
            pid,
            response: Response {
                method: request.method.clone(),
                path: format!("{} (as uid {})", request.path, who.uid),
                status,
                content_type: printed.content_type,
                body: Bytes::from(printed.body),
            },
        }
    }

    /// A hostile client as `who`: `count` connections, each with a head
    /// never finished (`slow`) or pipelined requests never read
    /// (`pipeline`), held until [`Held::release`] or drop.
    pub async fn hold(&self, who: &Identity, socket: &Path, count: usize, mode: &str) -> Held {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--hold")
            .arg(socket)
            .arg(count.to_string())
            .arg(mode)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        as_identity(&mut command, who);
        let mut child = spawn_retrying(&mut command, who).await;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let line = lines
            .next_line()
            .await
            .expect("reading dt-peer --hold")
            .unwrap_or_else(|| panic!("dt-peer --hold as {who:?} printed nothing"));
        let output: HoldOutput = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("dt-peer --hold printed {line:?}: {e}"));
        Held {
            opened: output.opened,
            child,
        }
    }

    fn command(&self, who: &Identity, socket: &Path, request: &Request) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg(socket)
            .arg(&request.method)
            .arg(&request.path)
            .arg(request.content_type.as_deref().unwrap_or("-"))
            .arg(String::from_utf8_lossy(&request.body).into_owned())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        as_identity(&mut command, who);
        command
    }

    async fn run(&self, who: &Identity, socket: &Path, request: &Request) -> (u32, PeerOutput) {
        let command = self.command(who, socket, request);
        Self::output(who, command).await
    }

    async fn output(who: &Identity, mut command: tokio::process::Command) -> (u32, PeerOutput) {
        let child = spawn_retrying(&mut command, who).await;
        let pid = child.id().expect("a pid before waiting");
        let output = child
            .wait_with_output()
            .await
            .unwrap_or_else(|e| panic!("waiting for dt-peer: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let printed: PeerOutput = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "dt-peer as {who:?} printed no answer ({e}), {}: stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (pid, printed)
    }
}

/// Makes `command` run as `who`.
fn as_identity(command: &mut tokio::process::Command, who: &Identity) {
    let groups: Vec<libc::gid_t> = who.groups.clone();
    let (uid, gid) = (who.uid, who.gid);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls on data prepared before the fork
    // (no allocation). Groups, then gid, then uid: after setuid the
    // process could no longer change its groups.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns, retrying ETXTBSY (see below).
async fn spawn_retrying(
    command: &mut tokio::process::Command,
    who: &Identity,
) -> tokio::process::Child {
    // ETXTBSY: another test's fork, between its fork and exec, may
    // still hold a copy of the write fd this binary was copied through
    // (a known race of copy-then-exec in multi-threaded programs); it
    // passes as soon as that child execs.
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("starting dt-peer as {who:?}: {e}"),
        }
    }
}
