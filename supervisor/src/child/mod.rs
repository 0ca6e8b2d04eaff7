//! One confined child: spawned through the trampoline, placed in its
//! cgroup, handshaken, then serving calls multiplexed by id until it dies
//! or is stopped. Whatever it does, every in-flight call gets a typed
//! answer and nothing is left behind (process, cgroup, uid, fds).
//!
//! Tasks per child: a writer (batches every frame queued since its last
//! write into one `write`), a reader (decodes frames, completes calls), a
//! monitor (owns the pidfd, the cgroup and the uid; turns the death into
//! its typed cause and cleans up), a heartbeat, and two output captures.

pub mod bounds;
pub mod exit;
pub mod output;
pub mod reply;
pub mod requests;
pub mod seccomp_notify;

use crate::events::EventBus;
use crate::runtime::Runtime;
use crate::spawn::SpawnRequest;
use corral_cgroups::{Cgroup, CgroupError, Limits, Resource};
use corral_protocol::api::{Event, Usage};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::frame::{self, AsyncFrameReader, FrameError, HANDSHAKE_MAX_FRAME};
use corral_protocol::message::{
    self, Call, CallResult, HostMessage, Init, InitLimits, LogLevel, PluginMessage,
};
use corral_protocol::policy::{NamespaceSource, Requirement, SandboxPolicy};
use corral_protocol::{Bootstrap, Confinement};
use exit::{DeathCause, Evidence, ExitStatus};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use requests::{ChildLink, Delivered};

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub plugin: String,
    pub instance: u32,
    pub policy: Arc<SandboxPolicy>,
    /// The plugin's settings as JSON, sent in Init.
    pub config: Vec<u8>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Failed(CorralError),
}

impl StartError {
    pub fn into_error(self) -> CorralError {
        match self {
            StartError::Failed(e) => e,
        }
    }
}

fn internal(context: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Failed(CorralError::internal(format!("{context}: {e}")))
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub output: Vec<u8>,
    pub usage: Usage,
}

struct Pending {
    reply: oneshot::Sender<Result<CallOutput, CorralError>>,
    started: Instant,
    /// When the host stops waiting: bounds the requests made for it.
    deadline: Instant,
    cpu_at_start: u64,
    /// Dependency calls between the API's call and this one
    /// ([`crate::services::calls::current_depth`]).
    depth: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct UsageSample {
    cpu_us: u64,
    peak: u64,
}

/// Frames waiting to be written: callers append, the writer takes them all
/// at once, so many calls in flight cost one `write` per batch.
#[derive(Default)]
struct Outbox {
    buf: Mutex<Vec<u8>>,
    ready: Notify,
    closed: AtomicBool,
}

impl Outbox {
    fn push(&self, message: &HostMessage) -> Result<(), FrameError> {
        let mut buf = self
            .buf
            .lock()
            .map_err(|_| FrameError::Encode("outbox poisoned".into()))?;
        let was_empty = buf.is_empty();
        frame::encode_into(message, &mut buf)?;
        drop(buf);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Swaps the queued frames into `into` (emptied first), so the two
    /// buffers are reused instead of allocated per batch.
    fn take_into(&self, into: &mut Vec<u8>) {
        into.clear();
        if let Ok(mut b) = self.buf.lock() {
            std::mem::swap(&mut *b, into);
        }
    }
}

struct Shared {
    plugin: String,
    instance: u32,
    pid: i32,
    uid: u32,
    policy: Arc<SandboxPolicy>,
    outbox: Outbox,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    kill: mpsc::UnboundedSender<DeathCause>,
    stop_requested: AtomicBool,
    death: watch::Receiver<Option<DeathCause>>,
    /// True once the dead child's cgroup is removed and its uid returned.
    cleaned: watch::Receiver<bool>,
    cgroup: Option<Arc<dyn Cgroup>>,
    /// The cgroup's CPU and peak-memory files, held open for per-call
    /// usage; closed by the monitor when the child is gone.
    usage: Mutex<Option<corral_cgroups::UsageProbe>>,
    sample: Mutex<UsageSample>,
    pong: AtomicU64,
    pong_notify: Notify,
    ready_after: Mutex<Duration>,
    events: EventBus,
    /// The rate limit on its `Log` frames ([`bounds`]).
    logs: bounds::LogLimiter,
    /// Pongs queued since the writer last took the outbox ([`bounds`]).
    unwritten_pongs: AtomicU64,
    /// The protocol version agreed at Hello (0 before Init).
    version: AtomicU16,
    /// The frame limit agreed at Hello.
    max_frame: AtomicU32,
    /// Host-service requests and deliveries ([`requests`]).
    requests: requests::RequestState,
    broker: Option<Arc<dyn crate::services::Broker>>,
    observer: Option<Arc<dyn crate::runtime::LifecycleObserver>>,
    /// Unique per child for the runtime's life ([`ChildLink::id`]).
    link_id: u64,
}

impl Shared {
    fn sample_usage(&self) -> UsageSample {
        let probe = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = probe.as_ref().map(|probe| {
            let u = probe.read();
            UsageSample {
                cpu_us: u.cpu_usage_us,
                peak: u.memory_peak,
            }
        });
        let mut last = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = fresh {
            *last = s;
        }
        *last
    }

    fn last_sample(&self) -> UsageSample {
        *self.sample.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_kill(&self, cause: DeathCause) {
        let _ = self.kill.send(cause);
    }

    fn is_dead(&self) -> bool {
        self.death.borrow().is_some()
    }

    /// The deadline of call `id` while it is in flight.
    fn call_deadline(&self, id: u64) -> Option<Instant> {
        if id == 0 {
            return None;
        }
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&id).map(|c| c.deadline))
    }

    /// How deep in a chain of dependency calls call `id` is (0 when an
    /// API client made it, or when it is not in flight).
    fn call_depth(&self, id: u64) -> u32 {
        if id == 0 {
            return 0;
        }
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&id).map(|c| c.depth))
            .unwrap_or(0)
    }

    fn death_error(&self, call_id: u64) -> CorralError {
        match self.death.borrow().as_ref() {
            Some(cause) => cause.error_for_call(call_id, &self.plugin),
            None => CorralError::new(ErrorKind::Internal, "child is stopping"),
        }
    }
}

/// Handle to a running child. Cheap to clone.
#[derive(Clone)]
pub struct Child {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("plugin", &self.shared.plugin)
            .field("instance", &self.shared.instance)
            .field("pid", &self.shared.pid)
            .finish()
    }
}

/// Removes a call's pending entry and cancels it in the child if the
/// caller goes away before the answer (e.g. an HTTP client disconnects).
struct CallGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self
            .shared
            .pending
            .lock()
            .map(|mut p| p.remove(&self.id).is_some())
            .unwrap_or(false);
        if removed {
            let _ = self
                .shared
                .outbox
                .push(&HostMessage::Cancel { id: self.id });
        }
    }
}

impl Child {
    pub fn pid(&self) -> i32 {
        self.shared.pid
    }

    pub fn uid(&self) -> u32 {
        self.shared.uid
    }

    pub fn instance(&self) -> u32 {
        self.shared.instance
    }

    /// Time from spawn to Ready.
    pub fn start_duration(&self) -> Duration {
        *self
            .shared
            .ready_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.shared.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_alive(&self) -> bool {
        !self.shared.is_dead() && !self.shared.stop_requested.load(Ordering::Relaxed)
    }

    /// A weak handle for services that deliver to this child later.
    pub fn link(&self) -> ChildLink {
        ChildLink::new(&self.shared)
    }

    /// The protocol version agreed at Hello.
    pub fn protocol_version(&self) -> u16 {
        self.shared.version.load(Ordering::Relaxed)
    }

    /// Host-service requests handled and refused, deliveries queued and
    /// dropped.
    pub fn request_counts(&self) -> &requests::RequestCounts {
        &self.shared.requests.counts
    }

    /// The cgroup's current figures, if it has one.
    pub fn stats(&self) -> Option<corral_cgroups::Stats> {
        self.shared.cgroup.as_ref().and_then(|c| c.stats().ok())
    }

    /// Calls `method`. `timeout` is the policy's per-call timeout, or a
    /// shorter one the caller asked for.
    pub async fn call(
        &self,
        method: &str,
        input: Vec<u8>,
        timeout: Duration,
    ) -> Result<CallOutput, CorralError> {
        self.call_within(method, input, timeout, timeout).await
    }

    /// Calls `method` with `budget` left of a call whose limit is `limit`
    /// (the caller may have spent some of it waiting for this child); a
    /// timeout reports the limit.
    pub async fn call_within(
        &self,
        method: &str,
        input: Vec<u8>,
        budget: Duration,
        limit: Duration,
    ) -> Result<CallOutput, CorralError> {
        let timeout = budget;
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let shared = &*self.shared;
        if shared.is_dead() {
            return Err(shared.death_error(0));
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let cpu_at_start = shared.last_sample().cpu_us;
        shared
            .pending
            .lock()
            .map_err(|_| CorralError::internal("pending calls poisoned"))?
            .insert(
                id,
                Pending {
                    reply: tx,
                    started: Instant::now(),
                    deadline: Instant::now() + timeout,
                    cpu_at_start,
                    depth: crate::services::calls::current_depth(),
                },
            );
        let mut guard = CallGuard {
            shared,
            id,
            armed: true,
        };
        // Rounded up: a plugin that stops at its deadline must not stop
        // before the host's, or it answers "in time" having given up.
        let timeout_ms = u64::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        shared
            .outbox
            .push(&HostMessage::Call(Call {
                id,
                method: method.to_string(),
                input,
                timeout_ms,
            }))
            .map_err(|e| {
                CorralError::invalid_input(format!("the call does not fit a frame: {e}"))
            })?;

        let dispatched = Instant::now();
        let result = match tokio::time::timeout(timeout, &mut rx).await {
            // A reply that lands as the timer runs out (a plugin that stops
            // at its deadline and answers) did not make it in time either:
            // the budget decides, not which wake-up came first.
            Ok(Ok(_)) if dispatched.elapsed() >= timeout => {
                guard.armed = false;
                return Err(DeathCause::CallTimeout {
                    call_id: id,
                    limit_ms,
                }
                .error_for_call(id, &shared.plugin));
            }
            Ok(answer) => answer,
            Err(_) => {
                // Ask nicely first: a plugin that notices the Cancel within
                // the grace period keeps running.
                let _ = shared.outbox.push(&HostMessage::Cancel { id });
                let grace = shared.policy.timeouts.grace;
                match tokio::time::timeout(grace, &mut rx).await {
                    Ok(_) => {
                        guard.armed = false;
                        return Err(DeathCause::CallTimeout {
                            call_id: id,
                            limit_ms,
                        }
                        .error_for_call(id, &shared.plugin));
                    }
                    Err(_) => {
                        tracing::warn!(plugin = %shared.plugin, instance = shared.instance, call = id, timeout_ms,
                            "call ignored its cancellation; stopping the child");
                        shared.request_kill(DeathCause::CallTimeout {
                            call_id: id,
                            limit_ms,
                        });
                        rx.await
                    }
                }
            }
        };
        guard.armed = false;
        match result {
            Ok(answer) => answer,
            // The monitor drops the sender only after the death is known.
            Err(_) => Err(shared.death_error(id)),
        }
    }

    /// Asks the child to finish and exit within `grace`, then kills it.
    /// Resolves once it is gone and cleaned up.
    pub async fn shutdown(&self, grace: Duration) -> DeathCause {
        let shared = &*self.shared;
        if !shared.stop_requested.swap(true, Ordering::SeqCst) {
            let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
            let _ = shared.outbox.push(&HostMessage::Shutdown { grace_ms });
        }
        let mut death = shared.death.clone();
        let wait = death.wait_for(|d| d.is_some());
        if tokio::time::timeout(grace, wait).await.is_err() {
            shared.request_kill(DeathCause::Stopped);
        }
        self.wait().await
    }

    /// Kills the child now (unload, reload, shutdown past its grace).
    pub async fn kill(&self) -> DeathCause {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        self.shared.request_kill(DeathCause::Stopped);
        self.wait().await
    }

    /// Resolves once the child is dead and cleaned up.
    pub async fn wait(&self) -> DeathCause {
        let mut cleaned = self.shared.cleaned.clone();
        let _ = cleaned.wait_for(|c| *c).await;
        self.shared
            .death
            .borrow()
            .clone()
            .unwrap_or(DeathCause::Stopped)
    }

    /// Starts a child and completes its handshake.
    pub async fn start(rt: &Arc<Runtime>, spec: ChildSpec) -> Result<Child, StartError> {
        let started = Instant::now();
        let policy = spec.policy.clone();
        let lease = rt.uids.lease().ok_or_else(|| {
            StartError::Failed(CorralError::internal(
                "no free uid in the policy's uid_range",
            ))
        })?;
        let uid = lease.uid;

        // The cgroup first, so a failure leaves no process behind.
        // Unique across processes sharing the base (parallel `corral run`s).
        let name = format!(
            "{}.{}.{}.{}",
            spec.plugin,
            spec.instance,
            std::process::id(),
            rt.next_generation()
        );
        let cgroup = rt
            .fresh_cgroup(&name)
            .map_err(|e| internal("creating the cgroup", e))?;
        if let Some(cg) = &cgroup
            && let Err(e) = apply_limits(cg.as_ref(), &policy, &spec.plugin)
        {
            let _ = cg.remove();
            return Err(StartError::Failed(e));
        }
        let cleanup_cgroup = |cg: &Option<Arc<dyn Cgroup>>| {
            if let Some(cg) = cg {
                let _ = cg.remove();
            }
        };

        let (host_end, child_end) = match std::os::unix::net::UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                cleanup_cgroup(&cgroup);
                return Err(internal("creating the channel", e));
            }
        };
        let prepared = prepare_fds(rt, &policy.confinement, child_end);
        let (fds, stdout_r, stderr_r) = match prepared {
            Ok(v) => v,
            Err(e) => {
                cleanup_cgroup(&cgroup);
                return Err(internal("preparing the child's fds", e));
            }
        };
        let mut namespaces = libc::CLONE_NEWPID | libc::CLONE_NEWNS;
        let ns = &policy.confinement.namespaces;
        for (source, flag) in [
            (ns.net, libc::CLONE_NEWNET),
            (ns.ipc, libc::CLONE_NEWIPC),
            (ns.uts, libc::CLONE_NEWUTS),
        ] {
            if source == NamespaceSource::Fresh {
                namespaces |= flag;
            }
        }
        let request = SpawnRequest {
            program: rt.trampoline.clone(),
            argv: vec![
                CString::new(crate::runtime::TRAMPOLINE).unwrap_or_default(),
                CString::new(spec.plugin.clone()).unwrap_or_default(),
            ],
            envp: Vec::new(),
            namespaces,
            fds,
            cgroup: spawn_dir_of(cgroup.as_deref()),
        };
        let spawned = match rt.spawner.spawn(request).await {
            Ok(s) => s,
            Err(e) => {
                cleanup_cgroup(&cgroup);
                return Err(internal("spawning the trampoline", e));
            }
        };
        let pid = spawned.pid;
        let pidfd = spawned.pidfd;
        // From here on the monitor owns the process: any failure below
        // goes through a kill request so the death is reaped and cleaned.
        if let Some(cg) = &cgroup
            && !spawned.in_cgroup
            && let Err(e) = attach_off_runtime(cg, pid).await
        {
            kill_pidfd(&pidfd);
            reap(&pidfd);
            cleanup_cgroup(&cgroup);
            return Err(internal("placing the child in its cgroup", e));
        }

        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let (death_tx, death_rx) = watch::channel(None);
        let (cleaned_tx, cleaned_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            plugin: spec.plugin.clone(),
            instance: spec.instance,
            pid,
            uid,
            policy: policy.clone(),
            outbox: Outbox::default(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            kill: kill_tx,
            stop_requested: AtomicBool::new(false),
            death: death_rx,
            cleaned: cleaned_rx,
            usage: Mutex::new(cgroup.as_ref().map(|c| c.usage_probe())),
            cgroup: cgroup.clone(),
            sample: Mutex::new(UsageSample::default()),
            pong: AtomicU64::new(0),
            pong_notify: Notify::new(),
            ready_after: Mutex::new(Duration::ZERO),
            events: rt.events.clone(),
            logs: bounds::LogLimiter::new(rt.output_limit, rt.drops.of(&spec.plugin)),
            unwritten_pongs: AtomicU64::new(0),
            version: AtomicU16::new(0),
            max_frame: AtomicU32::new(HANDSHAKE_MAX_FRAME),
            requests: requests::RequestState::default(),
            broker: rt.broker.get().cloned(),
            observer: rt.observer.clone(),
            link_id: rt.next_generation(),
        });
        tokio::spawn(monitor(
            shared.clone(),
            pidfd,
            kill_rx,
            death_tx,
            cleaned_tx,
            lease,
        ));
        spawn_capture(rt, &spec, stdout_r, output::Stream::Stdout);
        spawn_capture(rt, &spec, stderr_r, output::Stream::Stderr);

        let handshake = async {
            host_end
                .set_nonblocking(true)
                .map_err(|e| internal("channel", e))?;
            let stream = UnixStream::from_std(host_end).map_err(|e| internal("channel", e))?;
            let (read_half, mut write_half) = stream.into_split();
            let mut confinement = policy.confinement.clone();
            confinement.credentials.uid = uid;
            confinement.credentials.gid = uid;
            let bootstrap = frame::encode(&Bootstrap {
                plugin: spec.plugin.clone(),
                confinement,
            })
            .map_err(|e| internal("encoding the bootstrap", e))?;
            write_half
                .write_all(&bootstrap)
                .await
                .map_err(|e| internal("sending the bootstrap", e))?;
            let handoff = take_seccomp_listener(rt, &shared, &policy, read_half.as_ref()).await?;
            let mut reader = AsyncFrameReader::new(read_half, HANDSHAKE_MAX_FRAME);
            reader.prepend_read(&handoff.frame_bytes);
            let max_frame = handshake(&shared, &mut reader, &mut write_half, &spec).await?;
            reader.set_max_frame(max_frame);
            Ok::<_, StartError>((reader, write_half))
        };
        let deadline = policy.timeouts.start;
        let outcome = tokio::time::timeout(deadline, handshake).await;
        let (reader, writer) = match outcome {
            Ok(Ok(halves)) => halves,
            Ok(Err(e)) => {
                let e = shared_start_failure(&shared, e).await;
                return Err(e);
            }
            Err(_) => {
                shared.stop_requested.store(true, Ordering::SeqCst);
                shared.request_kill(DeathCause::Stopped);
                let _ = Child {
                    shared: shared.clone(),
                }
                .wait()
                .await;
                let limit_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
                return Err(StartError::Failed(CorralError::new(
                    ErrorKind::StartTimeout { limit_ms },
                    format!(
                        "plugin {} did not become ready within {limit_ms} ms",
                        spec.plugin
                    ),
                )));
            }
        };
        *shared.ready_after.lock().unwrap_or_else(|p| p.into_inner()) = started.elapsed();
        shared.sample_usage();
        tokio::spawn(write_loop(shared.clone(), writer));
        tokio::spawn(read_loop(shared.clone(), reader));
        if !policy.timeouts.heartbeat.is_zero() {
            tokio::spawn(heartbeat(shared.clone()));
        }
        let child = Child { shared };
        rt.events.publish(Event::Ready {
            plugin: spec.plugin.clone(),
            instance: spec.instance,
            pid,
            start_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        tracing::debug!(plugin = %spec.plugin, instance = spec.instance, pid, uid, start_us = started.elapsed().as_micros() as u64, "child ready");
        Ok(child)
    }
}

/// With a filter that refers refused calls to the supervisor: takes the
/// listener the trampoline sends first and starts serving it.
async fn take_seccomp_listener(
    rt: &Runtime,
    shared: &Arc<Shared>,
    policy: &SandboxPolicy,
    channel: &UnixStream,
) -> Result<seccomp_notify::Handoff, StartError> {
    let Some(notify) = policy.confinement.seccomp.as_ref().and_then(|s| s.notify) else {
        return Ok(seccomp_notify::Handoff::default());
    };
    let mut handoff = seccomp_notify::receive_listener(channel)
        .await
        .map_err(|e| internal("receiving the seccomp listener", e))?;
    if let Some(listener) = handoff.listener.take() {
        seccomp_notify::watch(
            listener,
            seccomp_notify::Context {
                plugin: shared.plugin.clone(),
                instance: shared.instance,
                action: notify.action,
                events: shared.events.clone(),
                observer: rt.observer.clone(),
                kill: shared.kill.clone(),
                death: shared.death.clone(),
            },
        );
    }
    Ok(handoff)
}

/// A start failed after the process existed: make sure it is dead and
/// cleaned up, and prefer the kernel's verdict (an OOM or seccomp kill
/// during start-up) over the handshake's view of it.
async fn shared_start_failure(shared: &Arc<Shared>, error: StartError) -> StartError {
    shared.stop_requested.store(true, Ordering::SeqCst);
    shared.request_kill(DeathCause::Stopped);
    let cause = Child {
        shared: shared.clone(),
    }
    .wait()
    .await;
    match cause {
        DeathCause::OutOfMemory { .. }
        | DeathCause::Seccomp { .. }
        | DeathCause::PidsLimit { .. } => {
            StartError::Failed(cause.error_for_call(0, &shared.plugin))
        }
        _ => error,
    }
}

fn apply_limits(
    cgroup: &dyn Cgroup,
    policy: &SandboxPolicy,
    plugin: &str,
) -> Result<(), CorralError> {
    let r = &policy.resources;
    let mut limits = Limits {
        memory_max: r.memory_max,
        swap_max: r.swap_max,
        pids_max: r.pids_max,
        cpu_quota_us: r.cpu_quota_us,
        cpu_period_us: r.cpu_period_us,
    };
    for _ in 0..4 {
        match cgroup.apply(&limits) {
            Ok(()) => return Ok(()),
            Err(CgroupError::Unsupported { resource, .. }) => {
                let (requirement, feature) = match resource {
                    Resource::Memory => (r.memory_requirement, "cgroup_memory"),
                    Resource::Swap => (r.swap_requirement, "cgroup_swap"),
                    Resource::Pids => (r.pids_requirement, "cgroup_pids"),
                    Resource::Cpu => (r.cpu_requirement, "cgroup_cpu"),
                };
                if requirement == Some(Requirement::Required) {
                    return Err(CorralError::new(
                        ErrorKind::FeatureUnavailable {
                            feature: feature.into(),
                        },
                        format!("the cgroup hierarchy lacks {feature}, which the policy requires"),
                    ));
                }
                tracing::warn!(
                    plugin,
                    feature,
                    "cgroup lacks {feature}; running without it (best_effort)"
                );
                limits = limits.without(resource);
            }
            Err(e) => {
                return Err(CorralError::internal(format!(
                    "applying cgroup limits: {e}"
                )));
            }
        }
    }
    Err(CorralError::internal(
        "applying cgroup limits did not converge",
    ))
}

/// Moves the child into its cgroup on a blocking thread: the write can
/// wait for an RCU grace period (~12 ms, see `Cgroup::attach`), which must
/// not hold one of the runtime's workers.
async fn attach_off_runtime(cgroup: &Arc<dyn Cgroup>, pid: i32) -> std::io::Result<()> {
    let cgroup = Arc::clone(cgroup);
    tokio::task::spawn_blocking(move || cgroup.attach(pid as u32))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)
}

/// The cgroup's directory, open, for creating the child inside it (v2; see
/// `spawn`). None on v1, or if it cannot be opened: the child is then
/// moved in after the spawn, which reports what is wrong.
fn spawn_dir_of(cgroup: Option<&dyn Cgroup>) -> Option<std::os::fd::OwnedFd> {
    let dir = cgroup?.spawn_dir()?;
    std::fs::File::open(dir).ok().map(Into::into)
}

type PreparedFds = (Vec<(OwnedFd, i32)>, OwnedFd, OwnedFd);

fn prepare_fds(
    rt: &Runtime,
    confinement: &Confinement,
    child_end: std::os::unix::net::UnixStream,
) -> std::io::Result<PreparedFds> {
    let devnull = std::fs::File::open("/dev/null")?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let mut fds: Vec<(OwnedFd, i32)> = vec![
        (OwnedFd::from(devnull), 0),
        (stdout_w, 1),
        (stderr_w, 2),
        (OwnedFd::from(child_end), message::CHANNEL_FD),
    ];
    let ns = &confinement.namespaces;
    for (source, which) in [(ns.net, 0), (ns.ipc, 1), (ns.uts, 2)] {
        if let NamespaceSource::Join { fd } = source {
            let pool = rt.namespaces.as_ref().ok_or_else(|| {
                std::io::Error::other("the policy joins shared namespaces but none were created")
            })?;
            let held = match which {
                0 => &pool.net,
                1 => &pool.ipc,
                _ => &pool.uts,
            };
            fds.push((held.try_clone()?, fd));
        }
    }
    Ok((fds, stdout_r, stderr_r))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new fds, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn spawn_capture(rt: &Runtime, spec: &ChildSpec, fd: OwnedFd, stream: output::Stream) {
    let plugin = spec.plugin.clone();
    let instance = spec.instance;
    let limit = rt.output_limit;
    let drops = rt.drops.of(&spec.plugin);
    match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(receiver) => {
            tokio::spawn(async move {
                output::capture(
                    receiver,
                    stream,
                    limit,
                    Some(&drops.output_lines),
                    |s, line| output::log_line(&plugin, instance, s, line),
                )
                .await
            });
        }
        Err(e) => tracing::warn!(plugin = %spec.plugin, error = %e, "cannot capture plugin output"),
    }
}

async fn handshake(
    shared: &Arc<Shared>,
    reader: &mut AsyncFrameReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
    spec: &ChildSpec,
) -> Result<u32, StartError> {
    let plugin = &spec.plugin;
    let violation = |reason: String| {
        StartError::Failed(CorralError::new(
            ErrorKind::ProtocolViolation {
                reason: reason.clone(),
            },
            format!("plugin {plugin} broke the handshake: {reason}"),
        ))
    };
    let hello = match next_handshake_message(shared, reader, plugin, "Hello").await? {
        PluginMessage::Hello(hello) => hello,
        PluginMessage::SandboxFailure(f) => {
            return Err(StartError::Failed(CorralError::new(
                ErrorKind::SandboxSetupFailed {
                    step: f.step.clone(),
                    errno: f.errno,
                },
                format!(
                    "sandbox step `{}` failed for plugin {plugin}: {}",
                    f.step, f.message
                ),
            )));
        }
        other => {
            return Err(violation(format!(
                "expected Hello, got {}",
                message_name(&other)
            )));
        }
    };
    if hello.magic != message::MAGIC {
        return Err(violation(format!(
            "Hello has magic {:02x?}, expected \"CRRL\"",
            hello.magic
        )));
    }
    if hello.name != *plugin {
        // One binary may serve several packages, so this is not refused;
        // but a mismatch is usually a packaging mistake worth seeing.
        tracing::warn!(plugin = %plugin, hello_name = %hello.name, hello_version = %hello.version,
            "the plugin's Hello names it differently than its manifest");
    }
    let Some(version) = message::negotiate_version(&hello.versions) else {
        return Err(violation(format!(
            "no common protocol version: plugin speaks {:?}, corral speaks {:?}",
            hello.versions,
            message::SUPPORTED_VERSIONS
        )));
    };
    if hello.max_frame < 1024 {
        return Err(violation(format!(
            "Hello offers max_frame {} (below 1024)",
            hello.max_frame
        )));
    }
    let max_frame = shared.policy.max_frame.min(hello.max_frame);
    shared.version.store(version, Ordering::Relaxed);
    shared.max_frame.store(max_frame, Ordering::Relaxed);
    let limits = &shared.policy.resources;
    let init = HostMessage::Init(Init {
        version,
        max_frame,
        config: spec.config.clone(),
        limits: InitLimits {
            memory_bytes: limits.memory_max.unwrap_or(0),
            call_timeout_ms: u64::try_from(shared.policy.timeouts.call.as_millis())
                .unwrap_or(u64::MAX),
            pids: limits.pids_max.unwrap_or(0),
            open_files: shared
                .policy
                .confinement
                .rlimits
                .iter()
                .find(|r| r.resource == corral_protocol::policy::Rlimit::Nofile)
                .map(|r| r.hard)
                .unwrap_or(0),
        },
    });
    let bytes = frame::encode(&init).map_err(|e| internal("encoding Init", e))?;
    writer
        .write_all(&bytes)
        .await
        .map_err(|e| internal("sending Init", e))?;
    match next_handshake_message(shared, reader, plugin, "Ready").await? {
        PluginMessage::Ready => Ok(max_frame),
        other => Err(violation(format!(
            "expected Ready, got {}",
            message_name(&other)
        ))),
    }
}

/// The next handshake message other than a Log (logged as it comes). A
/// closed channel is reported as the death it usually is; an undecodable
/// frame as a protocol violation.
async fn next_handshake_message(
    shared: &Arc<Shared>,
    reader: &mut AsyncFrameReader<OwnedReadHalf>,
    plugin: &str,
    expecting: &str,
) -> Result<PluginMessage, StartError> {
    loop {
        match reader.read::<PluginMessage>().await {
            Ok(Some(PluginMessage::Log(record))) => log_record(shared, &record),
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {
                let cause = Child {
                    shared: shared.clone(),
                }
                .wait()
                .await;
                return Err(StartError::Failed(start_death_error(&cause, plugin)));
            }
            Err(e) if e.is_protocol_violation() => {
                let reason = e.to_string();
                return Err(StartError::Failed(CorralError::new(
                    ErrorKind::ProtocolViolation {
                        reason: reason.clone(),
                    },
                    format!("plugin {plugin} broke the handshake: {reason}"),
                )));
            }
            Err(e) => return Err(internal(&format!("reading {expecting}"), e)),
        }
    }
}

fn start_death_error(cause: &DeathCause, plugin: &str) -> CorralError {
    let mut e = cause.error_for_call(0, plugin);
    e.message = format!("{} before it became ready", e.message);
    e
}

fn message_name(m: &PluginMessage) -> &'static str {
    match m {
        PluginMessage::Hello(_) => "Hello",
        PluginMessage::Ready => "Ready",
        PluginMessage::Reply(_) => "Reply",
        PluginMessage::Log(_) => "Log",
        PluginMessage::Event(_) => "Event",
        PluginMessage::Pong { .. } => "Pong",
        PluginMessage::Ping { .. } => "Ping",
        PluginMessage::SandboxFailure(_) => "SandboxFailure",
        PluginMessage::Request(_) => "Request",
    }
}

/// Says how many `Log` records were dropped over the rate limit.
fn log_dropped(shared: &Shared, n: u64) {
    if n > 0 {
        let line = bounds::dropped_line(n);
        tracing::warn!(plugin = %shared.plugin, instance = shared.instance, source = "corral", dropped = n, "{line}");
    }
}

fn log_record(shared: &Shared, record: &message::LogRecord) {
    let plugin = shared.plugin.as_str();
    let instance = shared.instance;
    let fields: String = record
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v:?}"))
        .collect();
    let msg = &record.message;
    match record.level {
        LogLevel::Error => tracing::error!(plugin, instance, source = "plugin", "{msg}{fields}"),
        LogLevel::Warn => tracing::warn!(plugin, instance, source = "plugin", "{msg}{fields}"),
        LogLevel::Info => tracing::info!(plugin, instance, source = "plugin", "{msg}{fields}"),
        LogLevel::Debug => tracing::debug!(plugin, instance, source = "plugin", "{msg}{fields}"),
        LogLevel::Trace => tracing::trace!(plugin, instance, source = "plugin", "{msg}{fields}"),
    }
}

async fn write_loop(shared: Arc<Shared>, mut writer: OwnedWriteHalf) {
    let mut batch = Vec::new();
    loop {
        // With other calls in flight, let their callers queue their frames
        // first: one write then carries many (with a single call in flight
        // this would only add latency).
        if shared.pending.lock().map(|p| p.len() > 1).unwrap_or(false) {
            tokio::task::yield_now().await;
        }
        shared.outbox.take_into(&mut batch);
        shared.unwritten_pongs.store(0, Ordering::Relaxed);
        shared.requests.taken();
        if batch.is_empty() {
            if shared.outbox.closed.load(Ordering::Relaxed) || shared.is_dead() {
                break;
            }
            let mut death = shared.death.clone();
            tokio::select! {
                _ = shared.outbox.ready.notified() => {}
                _ = death.wait_for(|d| d.is_some()) => break,
            }
            continue;
        }
        if writer.write_all(&batch).await.is_err() {
            // The child closed its end; the reader and monitor report why.
            break;
        }
    }
}

async fn read_loop(shared: Arc<Shared>, mut reader: AsyncFrameReader<OwnedReadHalf>) {
    let mut death = shared.death.clone();
    loop {
        let first = tokio::select! {
            r = reader.read::<PluginMessage>() => r,
            _ = death.wait_for(|d| d.is_some()) => return,
        };
        let mut batch_sample: Option<UsageSample> = None;
        let mut next = first;
        loop {
            match next {
                Ok(Some(message)) => {
                    if let Err(reason) = handle_message(&shared, message, &mut batch_sample) {
                        shared.request_kill(DeathCause::ProtocolViolation { reason });
                        return;
                    }
                }
                Ok(None) => {
                    // The child closed the channel. Normally it is exiting;
                    // one that keeps running without a channel is useless.
                    let exited = tokio::time::timeout(
                        Duration::from_millis(500),
                        death.wait_for(|d| d.is_some()),
                    )
                    .await;
                    if exited.is_err() {
                        shared.request_kill(DeathCause::ProtocolViolation {
                            reason: "closed its channel but kept running".into(),
                        });
                    }
                    return;
                }
                Err(e) if e.is_protocol_violation() => {
                    shared.request_kill(DeathCause::ProtocolViolation {
                        reason: e.to_string(),
                    });
                    return;
                }
                Err(_) => return,
            }
            next = match reader.try_buffered::<PluginMessage>() {
                Ok(Some(m)) => Ok(Some(m)),
                Ok(None) => break,
                Err(e) => Err(e),
            };
        }
    }
}

fn handle_message(
    shared: &Arc<Shared>,
    message: PluginMessage,
    batch_sample: &mut Option<UsageSample>,
) -> Result<(), String> {
    match message {
        PluginMessage::Reply(reply) => {
            let pending = shared
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&reply.id));
            let Some(pending) = pending else {
                // A late reply to a call that was cancelled or timed out.
                return Ok(());
            };
            let sample = *batch_sample.get_or_insert_with(|| shared.sample_usage());
            let usage = Usage {
                wall_ms: pending.started.elapsed().as_secs_f64() * 1000.0,
                cpu_ms: sample.cpu_us.saturating_sub(pending.cpu_at_start) as f64 / 1000.0,
                peak_memory_bytes: sample.peak,
            };
            let result = match reply.result {
                CallResult::Ok(output) => Ok(CallOutput { output, usage }),
                CallResult::Err(e) => Err(reply::error_of(
                    e,
                    shared.policy.resources.memory_max,
                    usage.peak_memory_bytes,
                )),
            };
            let _ = pending.reply.send(result);
            Ok(())
        }
        PluginMessage::Log(record) => {
            match shared.logs.judge(Instant::now()) {
                bounds::LogVerdict::Log { report_first } => {
                    log_dropped(shared, report_first);
                    log_record(shared, &record);
                }
                bounds::LogVerdict::Drop { report } => log_dropped(shared, report),
            }
            Ok(())
        }
        PluginMessage::Event(event) => {
            let payload = serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
            });
            shared.events.publish(Event::Plugin {
                plugin: shared.plugin.clone(),
                topic: event.topic,
                payload,
            });
            Ok(())
        }
        PluginMessage::Pong { nonce } => {
            shared.pong.store(nonce, Ordering::Relaxed);
            shared.pong_notify.notify_waiters();
            Ok(())
        }
        PluginMessage::Ping { nonce } => {
            let queued = shared.unwritten_pongs.fetch_add(1, Ordering::Relaxed);
            if queued >= bounds::MAX_UNWRITTEN_PONGS {
                return Err(format!(
                    "sent more than {} Pings without reading the Pongs",
                    bounds::MAX_UNWRITTEN_PONGS
                ));
            }
            shared
                .outbox
                .push(&HostMessage::Pong { nonce })
                .map_err(|e| e.to_string())
        }
        PluginMessage::Request(request) => requests::request(shared, request),
        other @ (PluginMessage::Hello(_)
        | PluginMessage::Ready
        | PluginMessage::SandboxFailure(_)) => Err(format!(
            "unexpected {} after the handshake",
            message_name(&other)
        )),
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let interval = shared.policy.timeouts.heartbeat;
    let mut nonce = 0u64;
    let mut death = shared.death.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = death.wait_for(|d| d.is_some()) => return,
        }
        // Handlers run inline in most plugins, so a busy child cannot
        // answer; the per-call timeout covers that case.
        if shared.pending.lock().map(|p| !p.is_empty()).unwrap_or(true) {
            continue;
        }
        nonce += 1;
        let notified = shared.pong_notify.notified();
        if shared.outbox.push(&HostMessage::Ping { nonce }).is_err() {
            return;
        }
        let answered = tokio::time::timeout(interval, async {
            let mut notified = std::pin::pin!(notified);
            loop {
                notified.as_mut().await;
                if shared.pong.load(Ordering::Relaxed) >= nonce {
                    return;
                }
                notified.set(shared.pong_notify.notified());
            }
        })
        .await;
        if answered.is_err()
            && !shared.is_dead()
            && shared.pending.lock().map(|p| p.is_empty()).unwrap_or(false)
        {
            let after_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(plugin = %shared.plugin, instance = shared.instance, "no Pong within {after_ms} ms; killing");
            shared.request_kill(DeathCause::Unresponsive { after_ms });
            return;
        }
    }
}

/// Owns the process: waits for its death (or a kill request), classifies
/// it, answers every pending call, and cleans up.
async fn monitor(
    shared: Arc<Shared>,
    pidfd: OwnedFd,
    mut kill_rx: mpsc::UnboundedReceiver<DeathCause>,
    death_tx: watch::Sender<Option<DeathCause>>,
    cleaned_tx: watch::Sender<bool>,
    lease: crate::uids::UidLease,
) {
    let mut supervisor_kill: Option<DeathCause> = None;
    // SAFETY: the OwnedFd stays open and unchanged inside the AsyncFd for
    // its whole lifetime.
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let status = match registered {
        Ok(async_fd) => {
            loop {
                tokio::select! {
                    ready = async_fd.readable() => {
                        if let Ok(mut guard) = ready {
                            guard.retain_ready();
                        }
                        break;
                    }
                    Some(cause) = kill_rx.recv() => {
                        if supervisor_kill.is_none() {
                            supervisor_kill = Some(cause);
                        }
                        kill_pidfd(async_fd.get_ref());
                    }
                }
            }
            reap(async_fd.get_ref())
        }
        Err(e) => {
            tracing::error!(plugin = %shared.plugin, error = %e, "cannot watch the child; killing it");
            // Without a reactor registration, fall back to a blocking wait.
            let (fd, _) = e.into_parts();
            kill_pidfd(&fd);
            tokio::task::spawn_blocking(move || reap(&fd))
                .await
                .unwrap_or(None)
        }
    };
    // Late kill requests still decide the cause (the kill may have raced
    // the death).
    while let Ok(cause) = kill_rx.try_recv() {
        if supervisor_kill.is_none() {
            supervisor_kill = Some(cause);
        }
    }
    if supervisor_kill.is_none()
        && shared.stop_requested.load(Ordering::SeqCst)
        && status == Some(ExitStatus::Exited(0))
    {
        supervisor_kill = Some(DeathCause::Stopped);
    }
    let stats = shared
        .cgroup
        .as_ref()
        .and_then(|c| c.stats().ok())
        .unwrap_or_default();
    let evidence = Evidence {
        status,
        supervisor_kill,
        oom_kills: stats.oom_kills,
        pids_limit_hits: stats.pids_limit_hits,
        memory_limit: shared.policy.resources.memory_max,
        memory_peak: stats.memory_peak,
        pids_limit: shared.policy.resources.pids_max,
    };
    let cause = evidence.classify();
    if cause.is_failure() {
        tracing::warn!(plugin = %shared.plugin, instance = shared.instance, pid = shared.pid,
            cause = cause.label(), status = ?status, "child died");
    } else {
        tracing::debug!(plugin = %shared.plugin, instance = shared.instance, "child stopped");
    }
    // Publish the death before answering calls, so a caller that retries
    // at once sees this child as dead.
    death_tx.send_replace(Some(cause.clone()));
    if let Some(broker) = &shared.broker {
        broker.child_gone(&ChildLink::new(&shared));
    }
    log_dropped(&shared, shared.logs.take_unreported());
    shared.outbox.closed.store(true, Ordering::Relaxed);
    shared.outbox.ready.notify_one();
    let pending: Vec<(u64, Pending)> = shared
        .pending
        .lock()
        .map(|mut p| p.drain().collect())
        .unwrap_or_default();
    for (id, call) in pending {
        let _ = call
            .reply
            .send(Err(cause.error_for_call(id, &shared.plugin)));
    }
    if let Some(cg) = shared.cgroup.clone() {
        let plugin = shared.plugin.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = cg.remove() {
                tracing::warn!(plugin = %plugin, error = %e, "cannot remove the child's cgroup");
            }
        })
        .await;
    }
    drop(lease);
    drop(
        shared
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    cleaned_tx.send_replace(true);
}

fn kill_pidfd(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Reaps the child behind `pidfd`; `None` if it was already reaped.
fn reap(pidfd: &OwnedFd) -> Option<ExitStatus> {
    // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid on our own child's pidfd.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r == 0 {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
    // SAFETY: waitid filled si_code and si_status for a child event.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => Some(ExitStatus::Exited(status)),
        libc::CLD_KILLED | libc::CLD_DUMPED => Some(ExitStatus::Signaled(status)),
        _ => None,
    }
}
