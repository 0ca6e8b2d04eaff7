//! A real corrald from the release build, run the way an operator runs
//! it: a configuration file, a local source folder of packages, its own
//! socket, state and cgroup base, all in a temporary directory under
//! /var/tmp (plugins run as unprivileged uids, and some systems mount /tmp
//! where those cannot reach).

use crate::env::Env;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct DaemonDir {
    pub dir: tempfile::TempDir,
    pub cgroup_base: String,
    /// The socket's mode ("0600": the benchmark's own uid only).
    pub socket_mode: String,
    /// Groups (gids as text) whose members may call.
    pub caller_groups: Vec<String>,
}

impl DaemonDir {
    pub fn create(tag: &str) -> Result<DaemonDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("corral-bench-{tag}-"))
            .tempdir_in("/var/tmp")
            .context("creating a directory under /var/tmp")?;
        // The plugins' uids must reach their packages in the store below.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir(dir.path().join("plugins"))?;
        Ok(DaemonDir {
            dir,
            cgroup_base: crate::corral::cgroup_base(tag),
            socket_mode: "0600".into(),
            caller_groups: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("corral.sock")
    }

    /// Adds the packaged hello under `name` (its manifest renamed; the
    /// binary hard-linked when the filesystem allows, else copied).
    pub fn add_hello(&self, env: &Env, name: &str) -> Result<()> {
        let src = env.hello_package();
        let dest = self.path().join("plugins").join(name);
        std::fs::create_dir_all(dest.join("bin"))?;
        let manifest = std::fs::read_to_string(src.join("plugin.toml"))?;
        let renamed = manifest.replacen("name = \"hello\"", &format!("name = \"{name}\""), 1);
        if name != "hello" && renamed == manifest {
            bail!("cannot rename hello: its plugin.toml has no `name = \"hello\"` line");
        }
        std::fs::write(dest.join("plugin.toml"), renamed)?;
        let bin = dest.join("bin/hello");
        if std::fs::hard_link(env.hello_binary(), &bin).is_err() {
            std::fs::copy(env.hello_binary(), &bin)?;
        }
        for p in [dest.clone(), dest.join("bin")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }

    fn write_config(&self) -> Result<PathBuf> {
        let d = self.path().display();
        let text = format!(
            r#"# corrald configuration of one benchmark run.
socket = "{d}/corral.sock"
socket_mode = "{mode}"
socket_group = "root"
state_dir = "{d}/state"
policy = "{d}/policy.toml"
policy_dir = "{d}/policy.d"
admin_groups = []
caller_groups = [{callers}]
cgroup_base = "{base}"
shutdown_grace = "10s"

[[sources]]
path = "{d}/plugins"
watch = false
"#,
            base = self.cgroup_base,
            mode = self.socket_mode,
            callers = self
                .caller_groups
                .iter()
                .map(|g| format!("{g:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let path = self.path().join("corrald.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

pub struct Daemon {
    pub process: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub cgroup_base: String,
    pub started: Instant,
}

impl Daemon {
    /// Starts corrald on `dir`'s configuration.
    pub fn start(env: &Env, dir: &DaemonDir) -> Result<Daemon> {
        let config = dir.write_config()?;
        let log = dir.path().join("corrald.log");
        let log_file = std::fs::File::create(&log)?;
        let started = Instant::now();
        let process = Command::new(env.corrald())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("CORRAL_SANDBOX", &env.trampoline)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", env.corrald().display()))?;
        Ok(Daemon {
            process,
            socket: dir.socket(),
            log,
            cgroup_base: dir.cgroup_base.clone(),
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Waits until the API answers `/v1/health` (corrald serves only after
    /// every enabled plugin is loaded); returns the time since start and
    /// the health document.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(Duration, serde_json::Value)> {
        let deadline = self.started + limit;
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!(
                    "corrald exited with {status} before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            match http(&self.socket, "GET", "/v1/health", "", limit) {
                Ok(r) if r.status == 200 => {
                    let elapsed = self.started.elapsed();
                    let health: serde_json::Value =
                        serde_json::from_slice(&r.body).context("health is not JSON")?;
                    return Ok((elapsed, health));
                }
                Ok(r) => bail!(
                    "GET /v1/health answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    return Err(e.context(format!(
                        "corrald did not answer within {limit:?}; its log:\n{}",
                        self.log_tail()
                    )));
                }
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// (VmRSS, RssAnon) of the daemon, bytes.
    pub fn rss(&self) -> (f64, f64) {
        let pid = self.pid().to_string();
        (
            crate::bare::rss_bytes(&pid).unwrap_or(0) as f64,
            crate::memory::rss_anon(&pid).unwrap_or(0) as f64,
        )
    }

    /// Memory charged to each plugin cgroup under the daemon's base
    /// (cgroup v1 memory hierarchy or v2), and the base's own total.
    pub fn cgroup_memory(&self) -> (Vec<f64>, Option<f64>) {
        let (base, file) = if Path::new("/sys/fs/cgroup/memory").is_dir() {
            (
                PathBuf::from("/sys/fs/cgroup/memory").join(&self.cgroup_base),
                "memory.usage_in_bytes",
            )
        } else {
            (
                PathBuf::from("/sys/fs/cgroup").join(&self.cgroup_base),
                "memory.current",
            )
        };
        let read = |p: PathBuf| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|v| v as f64)
        };
        let leaves = std::fs::read_dir(&base)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .filter_map(|e| read(e.path().join(file)))
                    .collect()
            })
            .unwrap_or_default();
        (leaves, read(base.join(file)))
    }

    /// SIGTERM, then waits for the exit; returns how long the stop took.
    pub fn stop(mut self, limit: Duration) -> Result<Duration> {
        let t = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = self.process.try_wait()? {
                if !status.success() {
                    bail!(
                        "corrald stopped with {status}; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(t.elapsed());
            }
            if t.elapsed() > limit {
                let _ = self.process.kill();
                let _ = self.process.wait();
                bail!("corrald did not stop within {limit:?} of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon not stopped through `stop` (an error on the way) must
        // not outlive the run: SIGTERM lets it clean its cgroups.
        if let Ok(None) = self.process.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Ok(None) = self.process.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.process.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.process.wait();
        }
    }
}

/// An answer of [`http`].
pub struct Response {
    pub status: u16,
    /// Bytes of the status line and headers, final CRLF CRLF included.
    pub head_bytes: usize,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection (closed after it), with
/// blocking I/O.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: corral\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the response")?;
    Ok(Response {
        status,
        head_bytes: split + 4,
        body: response[split + 4..].to_vec(),
    })
}
