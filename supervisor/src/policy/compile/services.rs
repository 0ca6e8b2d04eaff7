//! Host services (PROTOCOL.md section 9): which of them the plugin may
//! use, in its own names, and how those names become real ones. Granted
//! like any permission, from `[grantable]` or `[plugins.<name>] grant`,
//! and refused at load with the permission named; the host then checks
//! each request against what is compiled here, so a plugin can never
//! reach more than its manifest asked for and the operator granted.
//!
//! - `calls`: the manifest's `[dependencies]`, each granted by
//!   `grantable.calls = true` or named in `grant.calls`.
//! - `events`: each topic pattern must be covered by a granted pattern
//!   (`orders.*` covers `orders.created` and `orders.eu.*`).
//! - `tables`: any of its own with `grantable.tables = true`, else named
//!   in `grant.tables`.
//! - `buckets`: named in `grantable.buckets` or `grant.buckets`.
//! - names: tables are prefixed `<plugin>_` unless the operator says
//!   otherwise; topics and buckets are not prefixed; exact maps win.
//! - bounds: `[services]`, with this plugin's `[plugins.<name>.services]`.

use super::permissions::denied_by_policy;
use super::{CompileError, Context, Recorder};
use crate::policy::PermissionName;
use corral_protocol::manifest::ResourceName;
use corral_protocol::services::{NameScope, RequestLimits, ServiceGrants, pattern_covers};
use std::collections::BTreeMap;

pub(super) fn grant(
    cx: &Context<'_>,
    rec: &mut Recorder<'_>,
) -> Result<ServiceGrants, CompileError> {
    let calls = calls(cx, rec)?;
    let publish = topics(cx, rec, Direction::Publish)?;
    let subscribe = topics(cx, rec, Direction::Subscribe)?;
    let tables = tables(cx, rec)?;
    let buckets = buckets(cx, rec)?;
    let names = cx.rules.map(|r| &r.names);
    let topic_names = scope(
        cx,
        rec,
        "topics",
        names.and_then(|n| n.topic_prefix.clone()),
        String::new(),
    );
    let table_names = scope(
        cx,
        rec,
        "tables",
        names.and_then(|n| n.table_prefix.clone()),
        format!("{}_", cx.name),
    );
    let bucket_names = scope(
        cx,
        rec,
        "buckets",
        names.and_then(|n| n.bucket_prefix.clone()),
        String::new(),
    );
    let (storage_quota, requests) = bounds(cx, rec, !tables.is_empty());
    around_calls(cx, rec);
    Ok(ServiceGrants {
        calls,
        publish,
        subscribe,
        tables,
        buckets,
        topic_names,
        table_names,
        bucket_names,
        storage_quota,
        requests,
    })
}

fn refused(cx: &Context<'_>, permission: String, what: &str, grant: String) -> CompileError {
    CompileError::NotGranted {
        permission,
        reason: format!("{what}; {}", cx.how_to_grant(&grant)),
    }
}

/// `plugins.call`: every dependency the manifest lists.
fn calls(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<Vec<String>, CompileError> {
    let granted = cx.rules.map(|r| r.grant.calls.as_slice()).unwrap_or(&[]);
    let mut out = Vec::new();
    for dependency in cx.manifest.dependencies.keys() {
        let dependency = dependency.as_str();
        let permission = format!("plugins.call {dependency}");
        if cx.denied(PermissionName::Calls) {
            return Err(denied_by_policy(cx, permission));
        }
        let source = if granted.iter().any(|g| g == dependency) {
            cx.policy.cite(&cx.rules_key("grant.calls"))
        } else if cx.policy.grantable.calls {
            cx.policy.cite("grantable.calls")
        } else {
            return Err(refused(
                cx,
                permission,
                "grantable.calls is false and the plugin's grant does not name it",
                format!("calls = [\"{dependency}\"]"),
            ));
        };
        rec.cite("services.plugins.call", dependency, source);
        out.push(dependency.to_string());
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Direction {
    Publish,
    Subscribe,
}

/// `events.publish` / `events.subscribe`: each pattern the manifest asks
/// for must be covered by a granted one.
fn topics(
    cx: &Context<'_>,
    rec: &mut Recorder<'_>,
    direction: Direction,
) -> Result<Vec<String>, CompileError> {
    let (word, asked, grantable, granted, perm) = match direction {
        Direction::Publish => (
            "publish",
            &cx.manifest.permissions.events.publish,
            &cx.policy.grantable.events_publish,
            cx.rules.map(|r| r.grant.events_publish.as_slice()),
            PermissionName::EventsPublish,
        ),
        Direction::Subscribe => (
            "subscribe",
            &cx.manifest.permissions.events.subscribe,
            &cx.policy.grantable.events_subscribe,
            cx.rules.map(|r| r.grant.events_subscribe.as_slice()),
            PermissionName::EventsSubscribe,
        ),
    };
    let mut out = Vec::new();
    for pattern in asked {
        let pattern = pattern.as_str();
        let permission = format!("events.{word} {pattern}");
        if cx.denied(perm) {
            return Err(denied_by_policy(cx, permission));
        }
        let via_grant = granted
            .unwrap_or(&[])
            .iter()
            .find(|g| pattern_covers(g.as_str(), pattern));
        let via_grantable = grantable
            .iter()
            .find(|g| pattern_covers(g.as_str(), pattern));
        let source = match (via_grant, via_grantable) {
            (Some(g), _) => format!(
                "{} grants {g}",
                cx.policy
                    .cite(&cx.rules_key(&format!("grant.events_{word}")))
            ),
            (None, Some(g)) => format!(
                "{} grants {g}",
                cx.policy.cite(&format!("grantable.events_{word}"))
            ),
            (None, None) => {
                return Err(refused(
                    cx,
                    permission,
                    &format!(
                        "no pattern in grantable.events_{word} or the plugin's grant covers it"
                    ),
                    format!("events_{word} = [\"{pattern}\"]"),
                ));
            }
        };
        rec.cite(format!("services.events.{word}"), pattern, source);
        out.push(pattern.to_string());
    }
    Ok(out)
}

fn tables(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<Vec<String>, CompileError> {
    let granted = cx.rules.map(|r| r.grant.tables.as_slice()).unwrap_or(&[]);
    let asked = &cx.manifest.permissions.storage.tables;
    let every = cx.policy.grantable.tables;
    resources(cx, rec, Resource::Table, asked, granted, |_| every)
}

fn buckets(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<Vec<String>, CompileError> {
    let granted = cx.rules.map(|r| r.grant.buckets.as_slice()).unwrap_or(&[]);
    let asked = &cx.manifest.permissions.storage.buckets;
    let grantable = &cx.policy.grantable.buckets;
    resources(cx, rec, Resource::Bucket, asked, granted, |b| {
        grantable.iter().any(|g| g.as_str() == b)
    })
}

#[derive(Clone, Copy)]
enum Resource {
    Table,
    Bucket,
}

/// Tables and buckets: each one asked for must be named in the plugin's
/// grant or allowed by `[grantable]` (`grantable_allows`).
fn resources(
    cx: &Context<'_>,
    rec: &mut Recorder<'_>,
    kind: Resource,
    asked: &[ResourceName],
    granted: &[ResourceName],
    grantable_allows: impl Fn(&str) -> bool,
) -> Result<Vec<String>, CompileError> {
    let (permission_word, key, perm, rule, missing) = match kind {
        Resource::Table => (
            "kv.table",
            "tables",
            PermissionName::Tables,
            "services.kv.table",
            "grantable.tables is false and the plugin's grant does not name it",
        ),
        Resource::Bucket => (
            "s3.bucket",
            "buckets",
            PermissionName::Buckets,
            "services.s3.bucket",
            "neither grantable.buckets nor the plugin's grant names it",
        ),
    };
    let mut out = Vec::new();
    for name in asked {
        let name = name.as_str();
        let permission = format!("{permission_word} {name}");
        if cx.denied(perm) {
            return Err(denied_by_policy(cx, permission));
        }
        let source = if granted.iter().any(|g| g.as_str() == name) {
            cx.policy.cite(&cx.rules_key(&format!("grant.{key}")))
        } else if grantable_allows(name) {
            cx.policy.cite(&format!("grantable.{key}"))
        } else {
            return Err(refused(
                cx,
                permission,
                missing,
                format!("{key} = [\"{name}\"]"),
            ));
        };
        rec.cite(rule, name, source);
        out.push(name.to_string());
    }
    Ok(out)
}

/// One kind of name's prefix and exact map, each line cited.
fn scope(
    cx: &Context<'_>,
    rec: &mut Recorder<'_>,
    kind: &str,
    prefix: Option<String>,
    default_prefix: String,
) -> NameScope {
    let singular = kind.trim_end_matches('s');
    let prefix_key = cx.rules_key(&format!("names.{singular}_prefix"));
    let prefix = match prefix {
        Some(p) => {
            rec.cite_policy(
                &format!("services.names.{singular}_prefix"),
                format!("{p:?}"),
                &prefix_key,
            );
            p
        }
        None => {
            if !default_prefix.is_empty() {
                rec.builtin(
                    &format!("services.names.{singular}_prefix"),
                    format!("{default_prefix:?}"),
                    "each plugin's tables are its own unless mapped",
                );
            }
            default_prefix
        }
    };
    let map: BTreeMap<String, String> = cx
        .rules
        .map(|r| match kind {
            "topics" => &r.names.topics,
            "tables" => &r.names.tables,
            _ => &r.names.buckets,
        })
        .map(|m| {
            m.iter()
                .map(|(a, b)| (a.as_str().to_string(), b.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default();
    for (mine, real) in &map {
        rec.cite_policy(
            &format!("services.names.{kind}"),
            format!("{mine} -> {real}"),
            &cx.rules_key(&format!("names.{kind}.{mine}")),
        );
    }
    NameScope { prefix, map }
}

/// The storage quota and request bounds, with this plugin's overrides.
fn bounds(cx: &Context<'_>, rec: &mut Recorder<'_>, has_tables: bool) -> (u64, RequestLimits) {
    let s = &cx.policy.services;
    let o = cx.rules.map(|r| &r.services);
    let pick = |over: Option<u64>, base: u64, field: &str| -> (u64, String) {
        match over {
            Some(v) => (v, cx.rules_key(&format!("services.{field}"))),
            None => (base, format!("services.{field}")),
        }
    };
    let (quota, quota_key) = pick(
        o.and_then(|o| o.storage_quota).map(|b| b.0),
        s.storage_quota.0,
        "storage_quota",
    );
    if has_tables {
        rec.cite_policy(
            "services.storage_quota",
            corral_protocol::units::ByteSize(quota),
            &quota_key,
        );
    }
    let (in_flight, _) = pick(
        o.and_then(|o| o.request_in_flight).map(u64::from),
        u64::from(s.request_in_flight),
        "request_in_flight",
    );
    let (max_bytes, _) = pick(
        o.and_then(|o| o.request_max_bytes).map(|b| b.0),
        s.request_max_bytes.0,
        "request_max_bytes",
    );
    let (per_second, _) = pick(
        o.and_then(|o| o.request_rate).map(u64::from),
        u64::from(s.request_rate),
        "request_rate",
    );
    let (event_queue, _) = pick(
        o.and_then(|o| o.event_queue).map(u64::from),
        u64::from(s.event_queue),
        "event_queue",
    );
    // A request must fit in a frame: the frame limit bounds it too.
    let max_bytes = max_bytes.min(cx.policy.protocol.max_frame.0);
    let requests = RequestLimits {
        in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        per_second: u32::try_from(per_second).unwrap_or(u32::MAX),
        event_queue: u32::try_from(event_queue).unwrap_or(u32::MAX),
    };
    rec.cite_policy(
        "services.requests",
        format!(
            "{} in flight, {} bytes, {}/s, {} queued events",
            requests.in_flight, requests.max_bytes, requests.per_second, requests.event_queue
        ),
        "services",
    );
    (quota, requests)
}

/// What runs around this plugin's API calls: the operator's hooks that
/// target it, in the order they run, and the retry rule for its
/// idempotent methods. Enforced by the daemon's call path
/// (`crate::services::hooks`, `crate::services::retry`); listed here so
/// `policy show` tells the whole story of a call.
fn around_calls(cx: &Context<'_>, rec: &mut Recorder<'_>) {
    let mut hooks: Vec<(usize, &crate::services::hooks::HookRule)> = cx
        .policy
        .hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.plugin != cx.name)
        .filter(|(_, h)| {
            h.targets
                .iter()
                .any(|t| corral_protocol::services::pattern_matches(t, cx.name))
        })
        .collect();
    hooks.sort_by_key(|(_, h)| std::cmp::Reverse(h.priority));
    for (index, hook) in hooks {
        let on_failure = match hook.on_failure {
            crate::services::hooks::OnFailure::Fail => "fail",
            crate::services::hooks::OnFailure::Skip => "skip",
        };
        rec.cite_policy(
            &format!("hooks.{}", hook.stage.as_str()),
            format!(
                "{}.{} (priority {}, timeout {}, on failure {on_failure})",
                hook.plugin, hook.method, hook.priority, hook.timeout
            ),
            &format!("hooks[{index}]"),
        );
    }
    let idempotent = &cx.manifest.plugin.idempotent;
    if idempotent.is_empty() {
        return;
    }
    let (retry, key) = match cx.rules.and_then(|r| r.retry.as_ref()) {
        Some(r) => (r.clone(), cx.rules_key("retry")),
        None => (cx.policy.retry.clone(), "retry".to_string()),
    };
    rec.cite_policy(
        "retry",
        format!(
            "{} after crashed or timeout: {} more attempts, backoff {} up to {}",
            idempotent
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            retry.attempts,
            retry.backoff,
            retry.backoff_max
        ),
        &key,
    );
}
