//! Human forms of the daemon's answers about plugins and itself.

use super::human_bytes;
use super::table::{Align, Table, key_values};
use corral_protocol::api::{
    Health, InstallResponse, PluginDetail, PluginState, PluginSummary, ReloadReport, RemoveResponse,
};
use corral_protocol::policy::SandboxPolicy;
use std::time::Duration;

pub fn state_name(state: PluginState) -> &'static str {
    match state {
        PluginState::Installed => "installed",
        PluginState::Starting => "starting",
        PluginState::Ready => "ready",
        PluginState::Restarting => "restarting",
        PluginState::Quarantined => "quarantined",
        PluginState::Stopping => "stopping",
    }
}

/// `corral ls`.
pub fn plugins_table(plugins: &[PluginSummary]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("VERSION", Align::Left),
        ("STATE", Align::Left),
        ("CHILDREN", Align::Right),
        ("CALLS", Align::Right),
        ("FAILED", Align::Right),
        ("RESTARTS", Align::Right),
        ("MEMORY", Align::Right),
    ]);
    for p in plugins {
        table.row(vec![
            p.name.clone(),
            p.version.clone(),
            state_name(p.state).to_string(),
            format!("{}/{}", p.children, p.instances),
            p.calls_ok.saturating_add(p.calls_failed).to_string(),
            p.calls_failed.to_string(),
            p.restarts.to_string(),
            human_bytes(p.memory_bytes),
        ]);
    }
    table.render()
}

/// One line after `load`, `unload` and `reload`.
pub fn summary_line(p: &PluginSummary) -> String {
    format!(
        "{} {}: {}, {}/{} children{}",
        p.name,
        p.version,
        state_name(p.state),
        p.children,
        p.instances,
        if p.enabled { ", enabled" } else { "" }
    )
}

/// `corral info`: the plugin, its policy in brief, then its children.
pub fn plugin_detail(d: &PluginDetail) -> String {
    let p = &d.summary;
    let dependencies = if d.manifest.dependencies.is_empty() {
        "none".to_string()
    } else {
        d.manifest
            .dependencies
            .iter()
            .map(|(name, req)| format!("{name} {req}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let policy = match (&d.policy, &d.policy_error) {
        (Some(policy), _) => policy_brief(policy),
        (None, Some(error)) => format!("does not compile: {error}"),
        (None, None) => "not compiled".to_string(),
    };
    let mut pairs = vec![("name", p.name.clone()), ("version", p.version.clone())];
    if !p.description.is_empty() {
        pairs.push(("description", p.description.clone()));
    }
    pairs.extend([
        (
            "state",
            format!(
                "{}{}{}",
                state_name(p.state),
                if p.enabled { " (enabled)" } else { "" },
                if d.learning {
                    ", learning (less confined until the run ends)"
                } else {
                    ""
                }
            ),
        ),
        (
            "children",
            format!(
                "{} of {} running, {} calls in flight",
                p.children, p.instances, p.in_flight
            ),
        ),
        (
            "calls",
            format!("{} ok, {} failed", p.calls_ok, p.calls_failed),
        ),
        ("restarts", p.restarts.to_string()),
        ("memory", human_bytes(p.memory_bytes)),
        ("source", d.source.clone()),
        ("digest", d.digest.clone()),
        ("entry", d.manifest.plugin.entry.as_str().to_string()),
        ("dependencies", dependencies),
        ("policy", policy),
        (
            "last error",
            d.last_error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "none".into()),
        ),
    ]);
    let mut out = key_values(&pairs);
    if !d.processes.is_empty() {
        let mut table = Table::new(&[
            ("INSTANCE", Align::Right),
            ("PID", Align::Right),
            ("UID", Align::Right),
            ("IN-FLIGHT", Align::Right),
            ("MEMORY", Align::Right),
            ("PEAK", Align::Right),
            ("PIDS", Align::Right),
            ("CPU", Align::Right),
            ("STARTUP", Align::Right),
        ]);
        for c in &d.processes {
            table.row(vec![
                c.instance.to_string(),
                c.pid.to_string(),
                c.uid.to_string(),
                c.in_flight.to_string(),
                human_bytes(c.memory_bytes),
                human_bytes(c.memory_peak_bytes),
                c.pids.to_string(),
                format!("{:.1} ms", c.cpu_ms),
                format!("{:.1} ms", c.start_ms),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// The limits that matter most, on one line.
fn policy_brief(p: &SandboxPolicy) -> String {
    let r = &p.resources;
    let mut parts = vec![
        format!(
            "memory {}",
            r.memory_max
                .map(human_bytes)
                .unwrap_or_else(|| "unlimited".into())
        ),
        format!(
            "pids {}",
            r.pids_max
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unlimited".into())
        ),
        format!("call timeout {}", human_duration(p.timeouts.call)),
    ];
    match &p.confinement.seccomp {
        Some(sc) => parts.push(format!("{} system calls allowed", sc.allowed.len())),
        None => parts.push("no seccomp".into()),
    }
    if p.confinement.landlock.is_none() {
        parts.push("no landlock".into());
    }
    format!(
        "{} (`corral policy show {}` for all of it)",
        parts.join(", "),
        p.plugin
    )
}

/// `corral health`.
pub fn health(h: &Health) -> String {
    key_values(&[
        ("status", h.status.clone()),
        ("version", h.version.clone()),
        (
            "uptime",
            human_duration(Duration::from_secs(h.uptime_ms / 1000)),
        ),
        ("plugins installed", h.plugins_installed.to_string()),
        ("plugins loaded", h.plugins_loaded.to_string()),
        ("children alive", h.children_alive.to_string()),
        ("cgroup", h.cgroup.clone()),
        (
            "landlock abi",
            if h.landlock_abi == 0 {
                "none".into()
            } else {
                h.landlock_abi.to_string()
            },
        ),
        (
            "missing features",
            if h.features_unavailable.is_empty() {
                "none".into()
            } else {
                h.features_unavailable.join(", ")
            },
        ),
        (
            "cgroup attach",
            match (h.cgroup.as_str(), h.cgroup_favordynmods) {
                ("none", _) => "-".into(),
                ("v2", _) => "none (children are created inside their cgroups)".into(),
                (_, true) => "fast (favordynmods)".into(),
                (_, false) => {
                    "waits for an RCU grace period each start (see README, Fast starts)".into()
                }
            },
        ),
    ])
}

/// `corral install`.
pub fn installed(i: &InstallResponse) -> String {
    let what = if i.unchanged {
        "already installed, unchanged:"
    } else {
        "installed"
    };
    format!(
        "{what} {} {} (state: {})\ndigest: {}",
        i.plugin,
        i.version,
        state_name(i.state),
        i.digest
    )
}

/// `corral rm`.
pub fn removed(r: &RemoveResponse) -> String {
    match &r.purged {
        Some(p) => format!(
            "removed {} and its stored data ({} tables, {} bytes)",
            r.removed,
            p.tables.len(),
            p.bytes
        ),
        None => format!("removed {}", r.removed),
    }
}

/// `corral policy reload`.
pub fn reloaded(r: &ReloadReport) -> String {
    let mut lines = vec!["configuration and policy reloaded".to_string()];
    if r.policy_changed.is_empty() {
        lines.push("no plugin's policy changed".into());
    } else {
        lines.push(format!("policy changed: {}", r.policy_changed.join(", ")));
    }
    for f in &r.unloaded {
        lines.push(format!(
            "unloaded {}: the new policy does not admit it: {}",
            f.plugin, f.error
        ));
    }
    for f in &r.not_swapped {
        lines.push(format!(
            "{} keeps running under the old policy: {}",
            f.plugin, f.error
        ));
    }
    if !r.restart_needed.is_empty() {
        lines.push(format!(
            "changed, effective after a daemon restart: {}",
            r.restart_needed.join(", ")
        ));
    }
    lines.join("\n")
}

pub fn human_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn summary(name: &str) -> PluginSummary {
        PluginSummary {
            name: name.into(),
            version: "0.1.0".into(),
            description: "Greets".into(),
            state: PluginState::Ready,
            enabled: true,
            instances: 2,
            children: 1,
            in_flight: 0,
            calls_ok: 10,
            calls_failed: 2,
            restarts: 1,
            memory_bytes: 3 << 20,
        }
    }

    #[test]
    fn ls_is_an_aligned_table() {
        let mut b = summary("a-much-longer-name");
        b.state = PluginState::Quarantined;
        b.calls_ok = 1000;
        let text = plugins_table(&[summary("hello"), b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                VERSION  STATE        CHILDREN  CALLS  FAILED  RESTARTS   MEMORY"
        );
        assert_eq!(
            lines[1],
            "hello               0.1.0    ready             1/2     12       2         1  3.0 MiB"
        );
        assert_eq!(
            lines[2],
            "a-much-longer-name  0.1.0    quarantined       1/2   1002       2         1  3.0 MiB"
        );
    }

    #[test]
    fn an_empty_list_is_just_the_header() {
        assert_eq!(plugins_table(&[]).lines().count(), 1);
    }

    #[test]
    fn health_is_a_key_value_block() {
        let text = health(&Health {
            status: "ok".into(),
            version: "0.1.0".into(),
            uptime_ms: 3_723_000,
            plugins_installed: 3,
            plugins_loaded: 2,
            children_alive: 4,
            cgroup: "v1".into(),
            landlock_abi: 7,
            features_unavailable: vec!["cgroup_swap".into(), "landlock_net".into()],
            cgroup_favordynmods: false,
        });
        assert!(text.contains("status:             ok\n"), "{text}");
        assert!(text.contains("uptime:             1h 2m 3s\n"), "{text}");
        assert!(text.contains("landlock abi:       7\n"), "{text}");
        assert!(
            text.contains("missing features:   cgroup_swap, landlock_net\n"),
            "{text}"
        );
        assert!(
            text.contains("cgroup attach:      waits for an RCU grace period each start"),
            "{text}"
        );
    }

    #[test]
    fn on_v2_no_start_waits_to_enter_its_cgroup() {
        let text = health(&Health {
            status: "ok".into(),
            version: "0.1.0".into(),
            uptime_ms: 0,
            plugins_installed: 0,
            plugins_loaded: 0,
            children_alive: 0,
            cgroup: "v2".into(),
            landlock_abi: 7,
            features_unavailable: Vec::new(),
            cgroup_favordynmods: false,
        });
        assert!(
            text.contains("cgroup attach:      none (children are created inside their cgroups)\n"),
            "{text}"
        );
    }

    #[test]
    fn summary_lines_name_state_and_children() {
        assert_eq!(
            summary_line(&summary("hello")),
            "hello 0.1.0: ready, 1/2 children, enabled"
        );
    }

    #[test]
    fn installs_say_whether_anything_changed() {
        let mut i = InstallResponse {
            plugin: "hello".into(),
            version: "0.1.0".into(),
            digest: "ab12".into(),
            unchanged: false,
            state: PluginState::Installed,
        };
        assert_eq!(
            installed(&i),
            "installed hello 0.1.0 (state: installed)\ndigest: ab12"
        );
        i.unchanged = true;
        i.state = PluginState::Ready;
        assert_eq!(
            installed(&i),
            "already installed, unchanged: hello 0.1.0 (state: ready)\ndigest: ab12"
        );
    }
}
