//! Prometheus metrics (`GET /metrics`, text format 0.0.4). Counters are
//! incremented where things happen; gauges (children, memory, plugin
//! state, open connections) are read from the live daemon at scrape time.

use super::log_limit::{LineLabel, LogLimiter};
use crate::runtime::LifecycleObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub plugin: String,
    /// `ok` or the error code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub plugin: String,
    /// One of the known services, or `unknown`.
    pub service: String,
    /// `ok` or the error code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeathLabels {
    pub plugin: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub plugin: String,
    /// installed, starting, ready, restarting, quarantined, ...
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// `<plugin>.<method>` of the hook.
    pub hook: String,
    pub stage: String,
    /// ok, rewrote, rejected, failed or skipped.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// What the scrape reads from the live daemon for one plugin.
#[derive(Debug, Clone)]
pub struct PluginGauges {
    pub name: String,
    pub state: String,
    pub children: usize,
    pub memory: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyscallLabels {
    pub plugin: String,
    pub syscall: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<PluginLabel, Histogram>,
    restarts: Family<PluginLabel, Counter>,
    deaths: Family<DeathLabels, Counter>,
    oom_kills: Family<PluginLabel, Counter>,
    seccomp_violations: Family<PluginLabel, Counter>,
    seccomp_kills: Family<SyscallLabels, Counter>,
    seccomp_denials: Family<SyscallLabels, Counter>,
    children: Family<PluginLabel, Gauge>,
    memory: Family<PluginLabel, Gauge>,
    loaded: Gauge,
    denied: Counter,
    plugin_state: Family<StateLabels, Gauge>,
    hot_reload_failures: Family<PluginLabel, Counter>,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_closed: Family<ReasonLabel, Counter>,
    accept_errors: Counter,
    http_errors: Family<StatusLabel, Counter>,
    hook_runs: Family<HookLabels, Counter>,
    call_retries: Family<PluginLabel, Counter>,
    /// Rate limits for log lines outsiders can cause.
    pub logs: LogLimiter,
    log_records_dropped: Family<PluginLabel, Counter>,
    output_lines_dropped: Family<PluginLabel, Counter>,
    service_requests: Family<ServiceLabels, Counter>,
    /// Learning runs in progress: what their children need is recorded
    /// here (the runtime's observer is this struct).
    pub learners: super::learning::Learners,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let calls = Family::<CallLabels, Counter>::default();
        // 50 µs to ~3.3 min in powers of two.
        let call_seconds = Family::<PluginLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 22))
        });
        let restarts = Family::<PluginLabel, Counter>::default();
        let deaths = Family::<DeathLabels, Counter>::default();
        let oom_kills = Family::<PluginLabel, Counter>::default();
        let seccomp_violations = Family::<PluginLabel, Counter>::default();
        let seccomp_kills = Family::<SyscallLabels, Counter>::default();
        let seccomp_denials = Family::<SyscallLabels, Counter>::default();
        let children = Family::<PluginLabel, Gauge>::default();
        let memory = Family::<PluginLabel, Gauge>::default();
        let loaded = Gauge::default();
        let denied = Counter::default();
        let plugin_state = Family::<StateLabels, Gauge>::default();
        let hot_reload_failures = Family::<PluginLabel, Counter>::default();
        let connections_open = Gauge::default();
        let connections_accepted = Counter::default();
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        let accept_errors = Counter::default();
        let http_errors = Family::<StatusLabel, Counter>::default();
        let hook_runs = Family::<HookLabels, Counter>::default();
        let call_retries = Family::<PluginLabel, Counter>::default();
        let log_lines_dropped = Family::<LineLabel, Counter>::default();
        let log_records_dropped = Family::<PluginLabel, Counter>::default();
        let output_lines_dropped = Family::<PluginLabel, Counter>::default();
        let service_requests = Family::<ServiceLabels, Counter>::default();
        let mut r = Registry::with_prefix("corral");
        r.register(
            "calls",
            "Calls by plugin and outcome (ok or the error code)",
            calls.clone(),
        );
        r.register(
            "call_duration_seconds",
            "Call latency through the API, dispatch to reply",
            call_seconds.clone(),
        );
        r.register(
            "restarts",
            "Children restarted after a failure",
            restarts.clone(),
        );
        r.register(
            "child_deaths",
            "Children that died, by typed cause",
            deaths.clone(),
        );
        r.register(
            "oom_kills",
            "Children killed at their memory limit",
            oom_kills.clone(),
        );
        r.register(
            "seccomp_violations",
            "Children killed for a system call outside their allow-list",
            seccomp_violations.clone(),
        );
        r.register(
            "seccomp_kills",
            "Plugins killed for a refused system call, by the call",
            seccomp_kills.clone(),
        );
        r.register(
            "seccomp_denials",
            "Refused system calls failed with an errno (the plugin went on), by the call",
            seccomp_denials.clone(),
        );
        r.register("children_alive", "Children running", children.clone());
        r.register(
            "plugin_memory_bytes",
            "Memory charged to a plugin's cgroups",
            memory.clone(),
        );
        r.register("plugins_loaded", "Plugins loaded", loaded.clone());
        r.register(
            "api_denied",
            "API requests refused by access control",
            denied.clone(),
        );
        r.register(
            "plugin_state",
            "1 for each plugin's current state (installed, starting, ready, restarting, quarantined, ...)",
            plugin_state.clone(),
        );
        r.register(
            "hot_reload_failures",
            "Changed packages in a watched source that could not be swapped in",
            hot_reload_failures.clone(),
        );
        r.register(
            "connections_open",
            "API connections being served",
            connections_open.clone(),
        );
        r.register(
            "connections_accepted",
            "API connections accepted",
            connections_accepted.clone(),
        );
        r.register(
            "connections_closed",
            "API connections closed, by reason (done, client_closed, header_timeout, request_timeout, write_timeout, uid_limit, full, bad_request, no_credentials, error)",
            connections_closed.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accept() calls on the API socket (EMFILE and the like)",
            accept_errors.clone(),
        );
        r.register(
            "http_errors",
            "API answers with an error status, by status",
            http_errors.clone(),
        );
        r.register(
            "hook_runs",
            "Operator hooks run on calls, by hook, stage and outcome",
            hook_runs.clone(),
        );
        r.register(
            "call_retries",
            "Calls to idempotent methods tried again after a crash or timeout",
            call_retries.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines not written by the rate limit, by kind of line",
            log_lines_dropped.clone(),
        );
        r.register(
            "log_records_dropped",
            "Log frames of plugins dropped over the rate limit",
            log_records_dropped.clone(),
        );
        r.register(
            "output_lines_dropped",
            "stdout and stderr lines of plugins dropped over the rate limit",
            output_lines_dropped.clone(),
        );
        r.register(
            "service_requests",
            "Requests from plugins to host services, by plugin, service and outcome (ok or the error code)",
            service_requests.clone(),
        );
        Metrics {
            registry: Mutex::new(r),
            calls,
            call_seconds,
            restarts,
            deaths,
            oom_kills,
            seccomp_violations,
            seccomp_kills,
            seccomp_denials,
            children,
            memory,
            loaded,
            denied,
            plugin_state,
            hot_reload_failures,
            connections_open,
            connections_accepted,
            connections_closed,
            accept_errors,
            http_errors,
            hook_runs,
            call_retries,
            logs: LogLimiter::new(log_lines_dropped),
            log_records_dropped,
            output_lines_dropped,
            service_requests,
            learners: Default::default(),
        }
    }

    pub fn hook_ran(&self, hook: &str, stage: &str, outcome: &str) {
        self.hook_runs
            .get_or_create(&HookLabels {
                hook: hook.to_string(),
                stage: stage.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn call_retried(&self, plugin: &str) {
        self.call_retries
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    pub fn hot_reload_failed(&self, plugin: &str) {
        self.hot_reload_failures
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    pub fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    /// A served connection ended.
    pub fn connection_ended(&self, reason: &str) {
        self.connections_open.dec();
        self.connection_refused(reason);
    }

    /// A connection closed without being served (`reason`), or the reason
    /// a served one ended.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    pub fn http_error(&self, status: u16) {
        self.http_errors
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn call(&self, plugin: &str, outcome: &str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                plugin: plugin.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Adds metrics kept elsewhere (the sources') to what is scraped.
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.registry.lock() {
            add(&mut r);
        }
    }

    pub fn denied(&self) {
        self.denied.inc();
    }

    /// Renders the text format, after setting the gauges from `plugins`
    /// (every installed plugin).
    /// Brings the drop counters up to the runtime's counts: (plugin, log
    /// records dropped, output lines dropped), which only grow.
    pub fn set_dropped(&self, drops: &[(String, u64, u64)]) {
        for (name, logs, lines) in drops {
            let label = PluginLabel {
                plugin: name.clone(),
            };
            for (family, total) in [
                (&self.log_records_dropped, logs),
                (&self.output_lines_dropped, lines),
            ] {
                let counter = family.get_or_create(&label);
                let seen = counter.get();
                if *total > seen {
                    counter.inc_by(total - seen);
                }
            }
        }
    }

    /// Renders the text format, after setting the gauges from `plugins`:
    /// (name, children alive, memory bytes).
    pub fn render(&self, plugins: &[PluginGauges]) -> String {
        self.children.clear();
        self.memory.clear();
        self.plugin_state.clear();
        let mut loaded = 0;
        for p in plugins {
            self.plugin_state
                .get_or_create(&StateLabels {
                    plugin: p.name.clone(),
                    state: p.state.clone(),
                })
                .set(1);
            if p.state == "installed" {
                continue;
            }
            let label = PluginLabel {
                plugin: p.name.clone(),
            };
            self.children.get_or_create(&label).set(p.children as i64);
            self.memory
                .get_or_create(&label)
                .set(i64::try_from(p.memory).unwrap_or(i64::MAX));
            if p.children > 0 {
                loaded += 1;
            }
        }
        self.loaded.set(loaded);
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

impl LifecycleObserver for Metrics {
    fn service_request(&self, plugin: &str, service: &str, outcome: &str) {
        self.service_requests
            .get_or_create(&ServiceLabels {
                plugin: plugin.to_string(),
                service: service.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn child_died(&self, plugin: &str, cause: &str) {
        let label = PluginLabel {
            plugin: plugin.to_string(),
        };
        self.deaths
            .get_or_create(&DeathLabels {
                plugin: plugin.to_string(),
                cause: cause.to_string(),
            })
            .inc();
        match cause {
            "memory_limit_exceeded" => {
                self.oom_kills.get_or_create(&label).inc();
            }
            "seccomp_violation" => {
                self.seccomp_violations.get_or_create(&label).inc();
            }
            _ => {}
        }
    }

    fn seccomp_refused(&self, plugin: &str, syscall: &str, killed: bool) {
        let family = if killed {
            &self.seccomp_kills
        } else {
            &self.seccomp_denials
        };
        family
            .get_or_create(&SyscallLabels {
                plugin: plugin.to_string(),
                syscall: syscall.to_string(),
            })
            .inc();
    }

    fn learned(&self, plugin: &str, need: crate::learn::Need) {
        self.learners.record(plugin, need);
    }

    fn child_restarted(&self, plugin: &str) {
        self.restarts
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_calls_are_counted_by_system_call() {
        let m = Metrics::new();
        m.seccomp_refused("hostile", "ptrace", true);
        m.seccomp_refused("hostile", "socket", false);
        m.seccomp_refused("hostile", "socket", false);
        let text = m.render(&[]);
        assert!(
            text.contains("corral_seccomp_kills_total{plugin=\"hostile\",syscall=\"ptrace\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corral_seccomp_denials_total{plugin=\"hostile\",syscall=\"socket\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.call("hello", "ok", Duration::from_micros(300));
        m.call("hello", "timeout", Duration::from_secs(2));
        m.child_died("hello", "memory_limit_exceeded");
        m.child_restarted("hello");
        m.http_error(404);
        m.connection_opened();
        m.connection_ended("write_timeout");
        let text = m.render(&[PluginGauges {
            name: "hello".into(),
            state: "ready".into(),
            children: 2,
            memory: 4096,
        }]);
        for line in [
            "corral_calls_total{plugin=\"hello\",outcome=\"ok\"} 1",
            "corral_calls_total{plugin=\"hello\",outcome=\"timeout\"} 1",
            "corral_oom_kills_total{plugin=\"hello\"} 1",
            "corral_child_deaths_total{plugin=\"hello\",cause=\"memory_limit_exceeded\"} 1",
            "corral_restarts_total{plugin=\"hello\"} 1",
            "corral_children_alive{plugin=\"hello\"} 2",
            "corral_plugin_memory_bytes{plugin=\"hello\"} 4096",
            "corral_plugins_loaded 1",
            "corral_call_duration_seconds_count{plugin=\"hello\"} 2",
            "corral_plugin_state{plugin=\"hello\",state=\"ready\"} 1",
            "corral_http_errors_total{status=\"404\"} 1",
            "corral_connections_closed_total{reason=\"write_timeout\"} 1",
            "corral_connections_open 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Gauges of a plugin that is gone disappear.
        let text = m.render(&[]);
        assert!(
            !text.contains("corral_children_alive{plugin=\"hello\"}"),
            "{text}"
        );
    }

    #[test]
    fn dropped_records_are_counters_that_follow_the_runtime() {
        let m = Metrics::new();
        m.set_dropped(&[("hello".into(), 5, 2)]);
        m.set_dropped(&[("hello".into(), 12, 2)]);
        let text = m.render(&[]);
        assert!(
            text.contains("corral_log_records_dropped_total{plugin=\"hello\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("corral_output_lines_dropped_total{plugin=\"hello\"} 2"),
            "{text}"
        );
    }
}
