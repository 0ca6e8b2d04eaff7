//! A real `corrald` process: started with a [`Setup`]'s configuration,
//! ready once `GET /v1/health` answers, stopped by signal, and checked
//! for what it leaves behind.

use crate::client::{Client, Connection, Request};
use crate::env::test_env;
use crate::leaks;
use crate::setup::Setup;
use corral_protocol::api::Health;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon gets to become ready (loading every enabled plugin).
pub const READY_WAIT: Duration = Duration::from_secs(120);
/// How long a stopped daemon gets to exit: its shutdown grace (5 s in
/// tests) and the children's stop, with room to spare.
pub const EXIT_WAIT: Duration = Duration::from_secs(30);
/// How long cleanup that happens after an event (a death, a restart) may
/// take before a test calls it missing.
pub const SETTLE_WAIT: Duration = Duration::from_secs(10);

pub struct Daemon {
    child: Option<Child>,
    pub pid: i32,
    pub client: Client,
    pub socket: PathBuf,
    log: PathBuf,
    /// Where this run's lines start in the (shared, appended) log.
    log_offset: u64,
    pub cgroup_base: String,
    pub uid_first: u32,
    pub uid_last: u32,
    /// The wall time from spawn to the first health answer.
    pub ready_after: Option<Duration>,
}

impl Daemon {
    /// Writes the configuration, starts corrald and waits until it serves
    /// and has logged that its startup is complete.
    ///
    /// The log line matters for tests that signal the daemon: corrald
    /// answers on its socket before it installs its signal handlers, and
    /// a signal in between kills it outright (see
    /// `lifecycle::a_signal_right_after_the_first_answer_is_handled`).
    pub async fn start(setup: &Setup) -> Daemon {
        let mut daemon = Daemon::spawn(setup);
        daemon.wait_ready(READY_WAIT).await;
        daemon.wait_log(&["corrald ready"], READY_WAIT).await;
        daemon
    }

    /// Starts corrald without waiting for it.
    pub fn spawn(setup: &Setup) -> Daemon {
        setup.write_config();
        let env = test_env();
        let log_path = setup.log_path();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let log_offset = log.seek(SeekFrom::End(0)).expect("log file offset");
        let _ = writeln!(log, "==== corrald start (daemon {}) ====", setup.id);
        let err = log.try_clone().expect("dup the log fd");
        let mut command = Command::new(env.corrald());
        if let Some(limit) = setup.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; no allocation.
            unsafe {
                command.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--config")
            .arg(setup.config_path())
            .env("CORRAL_SANDBOX", &env.sandbox)
            .env("RUST_LOG", "info")
            .env_remove("CORRAL_CONFIG")
            .env_remove("CORRAL_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env_remove("CORRAL_MASK_FEATURES")
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", env.corrald().display()));
        let pid = i32::try_from(child.id()).expect("pids fit in i32");
        Daemon {
            child: Some(child),
            pid,
            client: Client::new(setup.socket()),
            socket: setup.socket(),
            log: log_path,
            log_offset,
            cgroup_base: setup.cgroup_base.clone(),
            uid_first: setup.uid_first,
            uid_last: setup.uid_last,
            ready_after: None,
        }
    }

    /// Polls `GET /v1/health` until it answers 200; panics with the log
    /// when the daemon exits or does not answer within `within`.
    pub async fn wait_ready(&mut self, within: Duration) -> Health {
        let started = Instant::now();
        let request = Request::get("/v1/health");
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "corrald exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > within {
                panic!(
                    "corrald did not answer /v1/health within {within:?}; its log:\n{}",
                    self.log()
                );
            }
            // Connecting works as soon as the socket is bound; the answer
            // comes once the enabled plugins are loaded.
            if let Ok(mut connection) = Connection::open(&self.socket).await {
                let answer =
                    tokio::time::timeout(Duration::from_secs(1), connection.try_send(&request))
                        .await;
                if let Ok(Ok(response)) = answer {
                    assert_eq!(
                        response.status,
                        200,
                        "/v1/health answered {}: {}",
                        response.status,
                        response.text()
                    );
                    self.ready_after = Some(started.elapsed());
                    return response.parse();
                }
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// This run's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(self.log_offset));
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log holds a line containing every one of `needles`;
    /// returns that line.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} within {within:?}; the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        assert!(self.child.is_some(), "signal to a daemon already reaped");
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        let r = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            r,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("waiting for corrald: {e}"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Waits for the daemon to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                self.child.is_some(),
                "waiting for a daemon that was already reaped"
            );
            assert!(
                Instant::now() < deadline,
                "corrald did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then asserts a clean exit: status 0, the socket removed, no
    /// plugin process left. Cgroups are checked by the tests about
    /// shutdown ([`Daemon::assert_no_cgroups`]), so one cleanup fault
    /// fails those tests rather than every test that stops a daemon.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(EXIT_WAIT).await;
        assert!(
            status.success(),
            "corrald exited with {status} after SIGTERM; its log:\n{}",
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "the socket {} is still there after a clean stop",
            self.socket.display()
        );
        self.assert_no_plugin_processes().await;
    }

    /// SIGKILL, without any chance to clean up.
    pub async fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit(EXIT_WAIT).await;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        status
    }

    /// Polls `check` until it holds; after [`SETTLE_WAIT`] fails with what
    /// it last said and the daemon's log. Deaths and cgroup removals are
    /// asynchronous, so every leak check waits a little.
    async fn settle(&self, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let Err(problem) = check() else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "{problem} after {SETTLE_WAIT:?}; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No live plugin process in the uid range.
    pub async fn assert_no_plugin_processes(&self) {
        self.settle(|| {
            let processes = leaks::live_processes_with_uids(self.uid_first, self.uid_last);
            if processes.is_empty() {
                Ok(())
            } else {
                Err(format!("plugin processes left: {processes:?}"))
            }
        })
        .await;
    }

    /// No cgroup leaf under the base.
    pub async fn assert_no_cgroups(&self) {
        self.settle(|| {
            let leaves = leaks::cgroup_leaves(&self.cgroup_base);
            if leaves.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "cgroups left under {}: {leaves:#?}",
                    self.cgroup_base
                ))
            }
        })
        .await;
    }

    /// While the daemon runs: no plugin runs (no populated leaf) and no
    /// cgroup is left beyond the daemon's idle pool.
    pub async fn assert_only_idle_cgroups(&self) {
        self.settle(|| {
            let populated = leaks::populated_cgroup_leaves(&self.cgroup_base);
            let names = leaks::cgroup_leaf_names(&self.cgroup_base);
            if populated.is_empty() && names.len() <= CGROUP_POOL {
                Ok(())
            } else {
                Err(format!(
                    "under {}: populated {populated:#?}, leaves {names:?} (pool of {CGROUP_POOL})",
                    self.cgroup_base
                ))
            }
        })
        .await;
    }
}

/// Idle cgroups a running corrald keeps ready for its next plugin start.
pub const CGROUP_POOL: usize = 4;

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- last lines of corrald {} ({}) ----",
                self.pid,
                self.log.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
