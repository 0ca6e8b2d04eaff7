//! One loaded plugin: its instances (a small pool of children), kept
//! running with restart backoff and crash-loop quarantine, and the calls
//! routed to them.

use crate::child::exit::DeathCause;
use crate::child::{CallOutput, Child, ChildSpec};
use crate::restart::{Decision, RestartTracker};
use crate::runtime::Runtime;
use corral_protocol::api::{Event, PluginState};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::policy::SandboxPolicy;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Counters for one plugin, read by the API and metrics.
#[derive(Debug, Default)]
pub struct HostCounters {
    pub calls_ok: AtomicU64,
    pub calls_failed: AtomicU64,
    pub restarts: AtomicU64,
    pub deaths: AtomicU64,
}

/// The last death of any instance, for `GET /v1/plugins/{name}`.
#[derive(Debug, Clone)]
pub struct LastDeath {
    pub instance: u32,
    pub error: CorralError,
    pub at: std::time::SystemTime,
}

struct Slot {
    index: u32,
    child: watch::Sender<Option<Child>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

pub struct PluginHost {
    rt: Arc<Runtime>,
    name: String,
    policy: Arc<SandboxPolicy>,
    config: Vec<u8>,
    slots: Vec<Arc<Slot>>,
    state: watch::Sender<PluginState>,
    restart: Mutex<RestartTracker>,
    stopping: AtomicBool,
    next: AtomicUsize,
    pub counters: HostCounters,
    last_death: Mutex<Option<LastDeath>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("name", &self.name)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl PluginHost {
    /// Starts every instance; fails (leaving nothing running) if any of
    /// the first starts fails, with that start's typed error.
    pub async fn start(
        rt: Arc<Runtime>,
        policy: Arc<SandboxPolicy>,
        config: Vec<u8>,
    ) -> Result<Arc<PluginHost>, CorralError> {
        let name = policy.plugin.clone();
        let slots: Vec<Arc<Slot>> = (0..policy.instances.max(1))
            .map(|index| {
                Arc::new(Slot {
                    index,
                    child: watch::channel(None).0,
                    task: Mutex::new(None),
                })
            })
            .collect();
        let host = Arc::new(PluginHost {
            rt: rt.clone(),
            name: name.clone(),
            restart: Mutex::new(RestartTracker::new(policy.restart)),
            policy,
            config,
            slots,
            state: watch::channel(PluginState::Starting).0,
            stopping: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            counters: HostCounters::default(),
            last_death: Mutex::new(None),
        });
        let starts = host.slots.iter().map(|slot| host.start_child(slot.index));
        let results = futures::future::join_all(starts).await;
        let mut first_error = None;
        for (slot, result) in host.slots.iter().zip(results) {
            match result {
                Ok(child) => {
                    slot.child.send_replace(Some(child));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(error) = first_error {
            host.stop(Duration::ZERO).await;
            return Err(error);
        }
        for slot in &host.slots {
            let task = tokio::spawn(supervise(host.clone(), slot.clone()));
            *slot.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        host.state.send_replace(PluginState::Ready);
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &Arc<SandboxPolicy> {
        &self.policy
    }

    pub fn state(&self) -> PluginState {
        *self.state.borrow()
    }

    pub fn subscribe_state(&self) -> watch::Receiver<PluginState> {
        self.state.subscribe()
    }

    pub fn last_death(&self) -> Option<LastDeath> {
        self.last_death.lock().ok().and_then(|d| d.clone())
    }

    /// Live children.
    pub fn children(&self) -> Vec<Child> {
        self.slots
            .iter()
            .filter_map(|s| s.child.borrow().clone())
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.children().iter().map(Child::in_flight).sum()
    }

    async fn start_child(&self, instance: u32) -> Result<Child, CorralError> {
        let spec = ChildSpec {
            plugin: self.name.clone(),
            instance,
            policy: self.policy.clone(),
            config: self.config.clone(),
        };
        Child::start(&self.rt, spec)
            .await
            .map_err(|e| e.into_error())
    }

    /// Routes a call to a ready instance, waiting (within the call's
    /// timeout) for one that is restarting. An empty `method` is the
    /// plugin's `default_method`.
    pub async fn call(
        &self,
        method: &str,
        input: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<CallOutput, CorralError> {
        // A call that names no method goes to the manifest's default.
        let method = match (method, self.policy.default_method.as_deref()) {
            ("", Some(default)) => default,
            ("", None) => {
                return Err(CorralError::invalid_input(format!(
                    "name a method: plugin {} has no default_method",
                    self.name
                )));
            }
            (named, _) => named,
        };
        let limit = match timeout {
            Some(t) => t.min(self.policy.timeouts.call),
            None => self.policy.timeouts.call,
        };
        let deadline = tokio::time::Instant::now() + limit;
        let result = match self.pick(deadline).await {
            Ok(child) => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                child
                    .call_within(
                        method,
                        input,
                        remaining.max(Duration::from_millis(1)),
                        limit,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => {
                self.counters.calls_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.calls_failed.fetch_add(1, Ordering::Relaxed);
                self.rt.events.publish(Event::CallFailed {
                    plugin: self.name.clone(),
                    method: method.to_string(),
                    code: e.code().to_string(),
                    message: e.message.clone(),
                });
            }
        }
        result
    }

    async fn pick(&self, deadline: tokio::time::Instant) -> Result<Child, CorralError> {
        loop {
            match self.state() {
                PluginState::Quarantined => return Err(self.quarantined_error()),
                PluginState::Stopping | PluginState::Installed => {
                    return Err(CorralError::new(
                        ErrorKind::NotLoaded {
                            plugin: self.name.clone(),
                        },
                        format!("plugin {} is being unloaded", self.name),
                    ));
                }
                _ => {}
            }
            // Round robin over live children, preferring the least busy of
            // two neighbours so one slow call does not queue the next.
            let n = self.slots.len();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<Child> = None;
            for k in 0..n {
                let slot = &self.slots[(start + k) % n];
                if let Some(child) = slot.child.borrow().as_ref().filter(|c| c.is_alive()) {
                    if best
                        .as_ref()
                        .is_none_or(|b| child.in_flight() < b.in_flight())
                    {
                        best = Some(child.clone());
                    }
                    if k >= 1 {
                        break;
                    }
                }
            }
            if let Some(child) = best {
                return Ok(child);
            }
            // None ready: wait for a restart, the quarantine, or the deadline.
            let mut watchers: Vec<watch::Receiver<Option<Child>>> =
                self.slots.iter().map(|s| s.child.subscribe()).collect();
            let mut state = self.state.subscribe();
            let any_slot =
                futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = any_slot => {}
                _ = state.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let limit_ms = self.policy.timeouts.call.as_millis() as u64;
                    return Err(CorralError::new(
                        ErrorKind::Timeout { limit_ms },
                        format!("no instance of plugin {} became ready in time for the call", self.name),
                    ));
                }
            }
        }
    }

    fn quarantined_error(&self) -> CorralError {
        let failures = self.policy.restart.crash_loop_failures;
        let window_ms = self.policy.restart.crash_loop_window.as_millis() as u64;
        CorralError::new(
            ErrorKind::Quarantined {
                plugin: self.name.clone(),
                failures,
                window_ms,
            },
            format!(
                "plugin {} failed {failures} times within {window_ms} ms and is quarantined; reload or load it to try again",
                self.name
            ),
        )
    }

    /// Stops every instance: Shutdown, `grace` to finish, then kill.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.state.send_replace(PluginState::Stopping);
        for slot in &self.slots {
            if let Some(task) = slot.task.lock().ok().and_then(|mut t| t.take()) {
                task.abort();
            }
        }
        let children: Vec<Child> = self
            .slots
            .iter()
            .filter_map(|s| s.child.send_replace(None))
            .collect();
        let stops = children.iter().map(|c| c.shutdown(grace));
        futures::future::join_all(stops).await;
        self.state.send_replace(PluginState::Installed);
    }

    fn record_death(&self, instance: u32, error: CorralError) {
        if let Ok(mut d) = self.last_death.lock() {
            *d = Some(LastDeath {
                instance,
                error,
                at: std::time::SystemTime::now(),
            });
        }
    }
}

/// Keeps one slot's child running.
async fn supervise(host: Arc<PluginHost>, slot: Arc<Slot>) {
    loop {
        let Some(child) = slot.child.borrow().clone() else {
            return;
        };
        let born = Instant::now();
        let cause = child.wait().await;
        if host.stopping.load(Ordering::SeqCst) {
            return;
        }
        slot.child.send_replace(None);
        host.counters.deaths.fetch_add(1, Ordering::Relaxed);
        let error = cause.error_for_call(u64::MAX, &host.name);
        report_death(&host, slot.index, &cause, &error);
        let mut lived = born.elapsed();
        loop {
            let decision = host
                .restart
                .lock()
                .map(|mut r| r.failure(Instant::now(), lived))
                .unwrap_or(Decision::Restart {
                    delay: Duration::from_secs(1),
                    attempt: 1,
                });
            let (delay, attempt) = match decision {
                Decision::Quarantine { failures, window } => {
                    tracing::error!(plugin = %host.name, failures, window_ms = window.as_millis() as u64, "crash loop; plugin quarantined");
                    host.state.send_replace(PluginState::Quarantined);
                    host.rt.events.publish(Event::Quarantined {
                        plugin: host.name.clone(),
                        failures,
                        window_ms: window.as_millis() as u64,
                    });
                    // Stop the other instances too: the plugin is down.
                    for other in &host.slots {
                        if let Some(c) = other.child.send_replace(None) {
                            c.kill().await;
                        }
                    }
                    return;
                }
                Decision::Restart { delay, attempt } => (delay, attempt),
            };
            if host.children().is_empty() {
                host.state.send_replace(PluginState::Restarting);
            }
            host.rt.events.publish(Event::Restarted {
                plugin: host.name.clone(),
                instance: slot.index,
                attempt,
                delay_ms: delay.as_millis() as u64,
            });
            tracing::info!(plugin = %host.name, instance = slot.index, attempt, delay_ms = delay.as_millis() as u64, "restarting");
            tokio::time::sleep(delay).await;
            if host.stopping.load(Ordering::SeqCst) {
                return;
            }
            match host.start_child(slot.index).await {
                Ok(child) => {
                    host.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    if let Some(o) = &host.rt.observer {
                        o.child_restarted(&host.name);
                    }
                    // Ready before the child is handed out: a caller that
                    // gets the new child must not see the plugin restarting.
                    if host.state() == PluginState::Restarting {
                        host.state.send_replace(PluginState::Ready);
                    }
                    slot.child.send_replace(Some(child));
                    break;
                }
                Err(e) => {
                    tracing::warn!(plugin = %host.name, instance = slot.index, error = %e, "restart failed");
                    if let Some(o) = &host.rt.observer {
                        o.child_died(&host.name, e.code());
                    }
                    host.rt.events.publish(Event::Crashed {
                        plugin: host.name.clone(),
                        instance: slot.index,
                        code: e.code().to_string(),
                        message: e.message.clone(),
                    });
                    host.record_death(slot.index, e);
                    lived = Duration::ZERO;
                }
            }
        }
    }
}

fn report_death(host: &PluginHost, instance: u32, cause: &DeathCause, error: &CorralError) {
    if let Some(o) = &host.rt.observer {
        o.child_died(&host.name, cause.label());
    }
    host.rt.events.publish(Event::Crashed {
        plugin: host.name.clone(),
        instance,
        code: cause.label().to_string(),
        message: error.message.clone(),
    });
    host.record_death(instance, error.clone());
}
