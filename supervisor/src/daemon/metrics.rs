//! Prometheus metrics (`GET /metrics`, text format 0.0.4). Counters are
//! incremented where things happen; gauges (children, memory) are read
//! from the live plugins at scrape time.

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
pub struct DeathLabels {
    pub plugin: String,
    pub cause: String,
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
        }
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

    pub fn denied(&self) {
        self.denied.inc();
    }

    /// Renders the text format, after setting the gauges from `plugins`:
    /// (name, children alive, memory bytes).
    pub fn render(&self, plugins: &[(String, usize, u64)]) -> String {
        self.children.clear();
        self.memory.clear();
        let mut loaded = 0;
        for (name, children, memory) in plugins {
            let label = PluginLabel {
                plugin: name.clone(),
            };
            self.children.get_or_create(&label).set(*children as i64);
            self.memory
                .get_or_create(&label)
                .set(i64::try_from(*memory).unwrap_or(i64::MAX));
            if *children > 0 {
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
        let text = m.render(&[("hello".into(), 2, 4096)]);
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
}
