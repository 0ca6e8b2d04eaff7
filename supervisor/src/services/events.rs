//! The event bus: `events.publish`, `events.subscribe` and
//! `events.unsubscribe` for plugins, and publishing for admin clients
//! (`POST /v1/events`).
//!
//! # Names
//!
//! A plugin names topics in its own terms; its `topic_names` scope (map
//! entry, else prefix) gives the real topic. A publish resolves the
//! plugin's topic to the real one; a delivery undoes the subscriber's
//! scope ([`NameScope::unresolve`]) and matches the result against the
//! subscriber's patterns, so a subscriber sees only topics it can name,
//! under its own names, and two plugins share a topic when the operator
//! maps both their names onto one real name.
//!
//! # Bounds
//!
//! - Grants: a topic published must match a pattern of
//!   `policy.services.publish`; a pattern subscribed must be covered by
//!   one of `policy.services.subscribe`.
//! - A delivery is queued on the subscriber's channel without waiting
//!   (`ChildLink::deliver`); a full queue drops it and counts it, so a
//!   slow subscriber never slows a publisher.
//! - A child holds at most [`MAX_PATTERNS`] subscriptions of at most
//!   [`MAX_PATTERN_BYTES`] in all; they end with it ([`Bus::child_gone`],
//!   and lazily when a delivery finds it gone). Matching a topic against a
//!   pattern costs up to their lengths multiplied, so the byte bound is
//!   what keeps the work of one publish per subscriber small whatever
//!   patterns a plugin picks.
//! - Published events also go to the lifecycle stream as
//!   `Event::Plugin` (what `GET /v1/events?topic=` reads), with payloads
//!   over [`MIRRORED_PAYLOAD_BYTES`] left out, so a flood of large
//!   events cannot fill that stream's fixed ring with megabytes each.
//! - Metrics are labelled by plugin only: topics are the plugins' input
//!   and would mint label values without bound.

use super::{Caller, body, clip, parse, unknown_operation};
use crate::child::{ChildLink, Delivered};
use corral_protocol::api::Event;
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::message::Delivery;
use corral_protocol::services::{NameScope, pattern_covers, pattern_matches, valid_name};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Patterns one child may be subscribed to at once.
pub const MAX_PATTERNS: usize = 64;

/// Bytes of those patterns, together.
pub const MAX_PATTERN_BYTES: usize = 2048;

/// Largest payload copied into the lifecycle stream's `Event::Plugin`.
pub const MIRRORED_PAYLOAD_BYTES: usize = 8 << 10;

/// The `from` of an event an API client published.
pub const CLIENT: &str = "client";

/// Where deliveries go: a child's channel ([`ChildLink`]), or a fake in
/// tests.
pub trait Inbox: Send + Sync {
    fn plugin(&self) -> &str;
    fn deliver(&self, delivery: Delivery) -> Delivered;
}

impl Inbox for ChildLink {
    fn plugin(&self) -> &str {
        ChildLink::plugin(self)
    }
    fn deliver(&self, delivery: Delivery) -> Delivered {
        ChildLink::deliver(self, delivery)
    }
}

struct Subscriber {
    inbox: Arc<dyn Inbox>,
    /// How this child's plugin names topics.
    scope: NameScope,
    /// Its patterns, in its own names.
    patterns: Vec<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// The bus's counters, by plugin.
#[derive(Debug, Default, Clone)]
struct BusMetrics {
    published: Family<PluginLabel, Counter>,
    delivered: Family<PluginLabel, Counter>,
    dropped: Family<PluginLabel, Counter>,
}

impl BusMetrics {
    fn count(family: &Family<PluginLabel, Counter>, plugin: &str) {
        family
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reach {
    pub delivered: u64,
    pub dropped: u64,
}

/// The bus: subscriptions by child, and the lifecycle stream published
/// events are mirrored to.
pub struct Bus {
    subscribers: RwLock<BTreeMap<u64, Subscriber>>,
    lifecycle: Option<crate::events::EventBus>,
    metrics: BusMetrics,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    topic: String,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternArgs {
    pattern: String,
}

impl Bus {
    pub fn new(lifecycle: Option<crate::events::EventBus>) -> Bus {
        Bus {
            subscribers: RwLock::new(BTreeMap::new()),
            lifecycle,
            metrics: BusMetrics::default(),
        }
    }

    /// Adds the bus's counters to a registry (`/metrics`).
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "events_published",
            "Events published on the bus, by publishing plugin (client for the API)",
            self.metrics.published.clone(),
        );
        r.register(
            "events",
            "Events delivered to a subscribed plugin's channel, by subscriber",
            self.metrics.delivered.clone(),
        );
        r.register(
            "event_drops",
            "Events dropped because a subscriber's queue was full, by subscriber",
            self.metrics.dropped.clone(),
        );
    }

    /// Answers one `events` request.
    pub fn handle(
        &self,
        caller: &Caller,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CorralError> {
        match operation {
            "publish" => {
                let args: PublishArgs = parse("events", "publish", payload)?;
                let reach = self.publish_as(
                    &caller.plugin,
                    &caller.policy.services,
                    &args.topic,
                    &args.payload,
                )?;
                body(&reach)
            }
            "subscribe" => {
                let args: PatternArgs = parse("events", "subscribe", payload)?;
                self.subscribe(
                    caller.link.id(),
                    Arc::new(caller.link.clone()),
                    &caller.policy.services,
                    &args.pattern,
                )?;
                body(&serde_json::json!({}))
            }
            "unsubscribe" => {
                let args: PatternArgs = parse("events", "unsubscribe", payload)?;
                let removed = self.unsubscribe(caller.link.id(), &args.pattern)?;
                body(&serde_json::json!({ "removed": removed }))
            }
            other => Err(unknown_operation(
                "events",
                other,
                &["publish", "subscribe", "unsubscribe"],
            )),
        }
    }

    /// A plugin publishes `topic` (its own name) if its grants allow.
    pub fn publish_as(
        &self,
        plugin: &str,
        grants: &corral_protocol::services::ServiceGrants,
        topic: &str,
        payload: &serde_json::Value,
    ) -> Result<Reach, CorralError> {
        valid_name(topic, false).map_err(|e| bad_name("events.publish", "topic", &e))?;
        if !grants.publish.iter().any(|g| pattern_matches(g, topic)) {
            return Err(denied(plugin, "publish", topic));
        }
        let real = grants.topic_names.resolve(topic);
        Ok(self.publish(plugin, &real, payload))
    }

    /// An admin client publishes `topic` (a real name).
    pub fn publish_from_client(
        &self,
        topic: &str,
        payload: &serde_json::Value,
    ) -> Result<Reach, CorralError> {
        valid_name(topic, false).map_err(|e| bad_name("POST /v1/events", "topic", &e))?;
        Ok(self.publish(CLIENT, topic, payload))
    }

    /// Delivers `real_topic` to every subscriber whose patterns match its
    /// own name for it; never waits on a subscriber.
    fn publish(&self, from: &str, real_topic: &str, payload: &serde_json::Value) -> Reach {
        BusMetrics::count(&self.metrics.published, from);
        let bytes = serde_json::to_vec(payload).unwrap_or_else(|_| b"null".to_vec());
        let mut reach = Reach::default();
        let mut gone = Vec::new();
        {
            let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
            for (id, sub) in subscribers.iter() {
                let Some(mine) = sub.scope.unresolve(real_topic) else {
                    continue;
                };
                if !sub.patterns.iter().any(|p| pattern_matches(p, &mine)) {
                    continue;
                }
                let delivery = Delivery {
                    topic: mine,
                    from: from.to_string(),
                    payload: bytes.clone(),
                };
                match sub.inbox.deliver(delivery) {
                    Delivered::Queued => {
                        reach.delivered += 1;
                        BusMetrics::count(&self.metrics.delivered, sub.inbox.plugin());
                    }
                    Delivered::Dropped => {
                        reach.dropped += 1;
                        BusMetrics::count(&self.metrics.dropped, sub.inbox.plugin());
                        tracing::debug!(
                            plugin = sub.inbox.plugin(),
                            topic = clip(real_topic),
                            "event dropped: queue full"
                        );
                    }
                    Delivered::Gone => gone.push(*id),
                }
            }
        }
        if !gone.is_empty() {
            let mut subscribers = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
            for id in gone {
                subscribers.remove(&id);
            }
        }
        if let Some(lifecycle) = &self.lifecycle {
            let payload = if bytes.len() <= MIRRORED_PAYLOAD_BYTES {
                payload.clone()
            } else {
                serde_json::json!({ "omitted_bytes": bytes.len() })
            };
            lifecycle.publish(Event::Plugin {
                plugin: from.to_string(),
                topic: real_topic.to_string(),
                payload,
            });
        }
        reach
    }

    /// Subscribes child `id` to `pattern` (its own name) if its grants
    /// cover it. A pattern subscribed twice is one subscription.
    pub fn subscribe(
        &self,
        id: u64,
        inbox: Arc<dyn Inbox>,
        grants: &corral_protocol::services::ServiceGrants,
        pattern: &str,
    ) -> Result<(), CorralError> {
        valid_name(pattern, true).map_err(|e| bad_name("events.subscribe", "pattern", &e))?;
        let plugin = inbox.plugin().to_string();
        if !grants.subscribe.iter().any(|g| pattern_covers(g, pattern)) {
            return Err(denied(&plugin, "subscribe", pattern));
        }
        let mut subscribers = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        let sub = subscribers.entry(id).or_insert_with(|| Subscriber {
            inbox,
            scope: grants.topic_names.clone(),
            patterns: Vec::new(),
        });
        if sub.patterns.iter().any(|p| p == pattern) {
            return Ok(());
        }
        let bytes: usize = sub.patterns.iter().map(String::len).sum();
        if sub.patterns.len() >= MAX_PATTERNS || bytes + pattern.len() > MAX_PATTERN_BYTES {
            return Err(CorralError::invalid_input(format!(
                "events.subscribe: plugin {plugin} already holds {} subscriptions of {bytes} bytes \
                 (at most {MAX_PATTERNS}, {MAX_PATTERN_BYTES} bytes in all); unsubscribe from one first",
                sub.patterns.len()
            )));
        }
        sub.patterns.push(pattern.to_string());
        Ok(())
    }

    /// Ends child `id`'s subscription to `pattern`; false when it had none.
    pub fn unsubscribe(&self, id: u64, pattern: &str) -> Result<bool, CorralError> {
        valid_name(pattern, true).map_err(|e| bad_name("events.unsubscribe", "pattern", &e))?;
        let mut subscribers = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        let Some(sub) = subscribers.get_mut(&id) else {
            return Ok(false);
        };
        let before = sub.patterns.len();
        sub.patterns.retain(|p| p != pattern);
        let removed = sub.patterns.len() != before;
        if sub.patterns.is_empty() {
            subscribers.remove(&id);
        }
        Ok(removed)
    }

    /// The child is gone: its subscriptions end.
    pub fn child_gone(&self, id: u64) {
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Children with at least one subscription.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn bad_name(what: &str, field: &str, problem: &str) -> CorralError {
    CorralError::invalid_input(format!("{what}: {field} {problem}"))
}

fn denied(plugin: &str, action: &str, name: &str) -> CorralError {
    let name = clip(name);
    let key = match action {
        "publish" => "events_publish",
        _ => "events_subscribe",
    };
    CorralError::new(
        ErrorKind::PermissionDenied {
            permission: Some(format!("events.{action} {name}")),
        },
        format!(
            "plugin {plugin} may not {action} {name:?}: ask for it under [permissions.events] {action} in its plugin.toml \
             and grant it in the policy ([plugins.{plugin}.grant] {key} = [\"{name}\"])"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_protocol::services::ServiceGrants;
    use std::sync::Mutex;

    /// A subscriber that keeps up to `room` deliveries.
    struct FakeInbox {
        plugin: String,
        room: usize,
        got: Mutex<Vec<Delivery>>,
        gone: bool,
    }

    impl FakeInbox {
        fn new(plugin: &str, room: usize) -> Arc<FakeInbox> {
            Arc::new(FakeInbox {
                plugin: plugin.into(),
                room,
                got: Mutex::new(Vec::new()),
                gone: false,
            })
        }
        fn topics(&self) -> Vec<String> {
            self.got
                .lock()
                .map(|g| g.iter().map(|d| d.topic.clone()).collect())
                .unwrap_or_default()
        }
    }

    impl Inbox for FakeInbox {
        fn plugin(&self) -> &str {
            &self.plugin
        }
        fn deliver(&self, delivery: Delivery) -> Delivered {
            if self.gone {
                return Delivered::Gone;
            }
            let Ok(mut got) = self.got.lock() else {
                return Delivered::Gone;
            };
            if got.len() >= self.room {
                return Delivered::Dropped;
            }
            got.push(delivery);
            Delivered::Queued
        }
    }

    fn grants(publish: &[&str], subscribe: &[&str]) -> ServiceGrants {
        ServiceGrants {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            ..ServiceGrants::default()
        }
    }

    fn render(bus: &Bus) -> String {
        let mut r = Registry::with_prefix("corral");
        bus.register_metrics(&mut r);
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &r);
        text
    }

    #[test]
    fn a_wildcard_subscription_receives_matching_topics_only() {
        let bus = Bus::new(None);
        let sub = FakeInbox::new("watcher", 100);
        bus.subscribe(1, sub.clone(), &grants(&[], &["user:*"]), "user:*")
            .expect("subscribe");
        let publisher = grants(&["*"], &[]);
        for topic in ["user:created", "order:created", "user:", "users:x"] {
            bus.publish_as("app", &publisher, topic, &serde_json::json!({"n": 1}))
                .expect("publish");
        }
        assert_eq!(sub.topics(), vec!["user:created", "user:"]);
        let got = sub.got.lock().map(|g| g[0].clone()).expect("lock");
        assert_eq!(got.from, "app");
        assert_eq!(got.payload, br#"{"n":1}"#);
    }

    #[test]
    fn two_plugins_share_a_topic_through_their_name_maps() {
        let bus = Bus::new(None);
        let mut a = grants(&["user-events"], &[]);
        a.topic_names
            .map
            .insert("user-events".into(), "shared-events".into());
        a.topic_names.prefix = "a.".into();
        let mut b = grants(&[], &["people*"]);
        b.topic_names
            .map
            .insert("people".into(), "shared-events".into());
        b.topic_names.prefix = "b.".into();
        let sub = FakeInbox::new("b", 100);
        bus.subscribe(2, sub.clone(), &b, "people*")
            .expect("subscribe");
        let reach = bus
            .publish_as("a", &a, "user-events", &serde_json::json!(null))
            .expect("publish");
        assert_eq!(
            reach,
            Reach {
                delivered: 1,
                dropped: 0
            }
        );
        assert_eq!(sub.topics(), vec!["people"]);
        // A prefixed topic of a's does not reach b: b cannot name it.
        let mut a_any = a.clone();
        a_any.publish = vec!["*".into()];
        bus.publish_as("a", &a_any, "peoplex", &serde_json::json!(null))
            .expect("publish");
        assert_eq!(sub.topics(), vec!["people"]);
    }

    #[test]
    fn a_prefix_keeps_plugins_apart_and_maps_back() {
        let bus = Bus::new(None);
        let mut b = grants(&[], &["*"]);
        b.topic_names.prefix = "b/".into();
        let sub = FakeInbox::new("b", 100);
        bus.subscribe(3, sub.clone(), &b, "orders.*")
            .expect("subscribe");
        let mut a = grants(&["*"], &[]);
        a.topic_names.prefix = "b/".into();
        bus.publish_as("a", &a, "orders.new", &serde_json::json!(1))
            .expect("publish");
        bus.publish_from_client("orders.new", &serde_json::json!(2))
            .expect("publish");
        bus.publish_from_client("b/orders.old", &serde_json::json!(3))
            .expect("publish");
        assert_eq!(sub.topics(), vec!["orders.new", "orders.old"]);
    }

    #[test]
    fn ungranted_publish_and_subscribe_are_refused_by_name() {
        let bus = Bus::new(None);
        let g = grants(&["orders.*"], &["user:*"]);
        let e = bus
            .publish_as("app", &g, "billing.paid", &serde_json::json!(null))
            .expect_err("refused");
        assert_eq!(
            e.kind,
            ErrorKind::PermissionDenied {
                permission: Some("events.publish billing.paid".into())
            }
        );
        assert!(e.message.contains("events_publish"), "{}", e.message);
        let sub = FakeInbox::new("app", 10);
        // Wider than granted: `*` is not covered by `user:*`.
        let e = bus.subscribe(4, sub.clone(), &g, "*").expect_err("refused");
        assert_eq!(
            e.kind,
            ErrorKind::PermissionDenied {
                permission: Some("events.subscribe *".into())
            }
        );
        assert_eq!(bus.subscriber_count(), 0);
        assert!(bus.subscribe(4, sub, &g, "user:admin*").is_ok());
    }

    #[test]
    fn malformed_names_are_invalid_input() {
        let bus = Bus::new(None);
        let g = grants(&["*"], &["*"]);
        for bad in ["", "a b", "x*"] {
            let e = bus
                .publish_as("app", &g, bad, &serde_json::json!(null))
                .expect_err("refused");
            assert_eq!(e.code(), "invalid_input", "{bad:?}");
        }
        let e = bus
            .subscribe(5, FakeInbox::new("app", 1), &g, "a\nb")
            .expect_err("refused");
        assert_eq!(e.code(), "invalid_input");
    }

    #[test]
    fn a_full_subscriber_drops_and_counts_without_stopping_the_others() {
        let bus = Bus::new(None);
        let g = grants(&["*"], &["*"]);
        let slow = FakeInbox::new("slow", 2);
        let quick = FakeInbox::new("quick", 100);
        bus.subscribe(6, slow.clone(), &g, "t").expect("subscribe");
        bus.subscribe(7, quick.clone(), &g, "t").expect("subscribe");
        let mut total = Reach::default();
        for _ in 0..5 {
            let r = bus
                .publish_as("app", &g, "t", &serde_json::json!(null))
                .expect("publish");
            total.delivered += r.delivered;
            total.dropped += r.dropped;
        }
        assert_eq!(
            total,
            Reach {
                delivered: 7,
                dropped: 3
            }
        );
        assert_eq!(quick.topics().len(), 5);
        let text = render(&bus);
        assert!(
            text.contains("corral_event_drops_total{plugin=\"slow\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("corral_events_total{plugin=\"quick\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("corral_events_published_total{plugin=\"app\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn subscriptions_end_with_the_child() {
        let bus = Bus::new(None);
        let g = grants(&["*"], &["*"]);
        let sub = FakeInbox::new("b", 10);
        bus.subscribe(8, sub.clone(), &g, "a").expect("subscribe");
        bus.subscribe(8, sub.clone(), &g, "a")
            .expect("twice is once");
        assert_eq!(bus.unsubscribe(8, "zzz").ok(), Some(false));
        bus.child_gone(8);
        assert_eq!(bus.subscriber_count(), 0);
        let reach = bus
            .publish_as("app", &g, "a", &serde_json::json!(null))
            .expect("publish");
        assert_eq!(reach.delivered, 0);
        // One found gone at delivery is removed too.
        let dead = Arc::new(FakeInbox {
            plugin: "dead".into(),
            room: 10,
            got: Mutex::new(Vec::new()),
            gone: true,
        });
        bus.subscribe(9, dead, &g, "a").expect("subscribe");
        bus.publish_as("app", &g, "a", &serde_json::json!(null))
            .expect("publish");
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[test]
    fn subscriptions_per_child_are_bounded() {
        let bus = Bus::new(None);
        let g = grants(&[], &["*"]);
        let sub = FakeInbox::new("b", 10);
        for i in 0..MAX_PATTERNS {
            bus.subscribe(10, sub.clone(), &g, &format!("t{i}"))
                .expect("subscribe");
        }
        let e = bus.subscribe(10, sub, &g, "one-more").expect_err("bounded");
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(bus.unsubscribe(10, "t0").ok(), Some(true));
        // Long patterns reach the byte bound first.
        let long = |i: usize| format!("{i:03}{}", "*a".repeat(98));
        for i in 0..MAX_PATTERN_BYTES / 199 {
            bus.subscribe(11, FakeInbox::new("c", 1), &g, &long(i))
                .expect("subscribe");
        }
        let e = bus
            .subscribe(11, FakeInbox::new("c", 1), &g, &long(999))
            .expect_err("bounded by bytes");
        assert!(e.message.contains("bytes"), "{}", e.message);
    }

    #[test]
    fn large_payloads_are_left_out_of_the_lifecycle_stream() {
        let lifecycle = crate::events::EventBus::new(16);
        let mut rx = lifecycle.subscribe();
        let bus = Bus::new(Some(lifecycle));
        let big = serde_json::json!("x".repeat(MIRRORED_PAYLOAD_BYTES + 1));
        bus.publish_from_client("big", &big).expect("publish");
        bus.publish_from_client("small", &serde_json::json!({"a": 1}))
            .expect("publish");
        let first = rx.try_recv().expect("mirrored");
        match &first.event {
            Event::Plugin {
                plugin,
                topic,
                payload,
            } => {
                assert_eq!((plugin.as_str(), topic.as_str()), ("client", "big"));
                assert!(payload.get("omitted_bytes").is_some(), "{payload}");
            }
            other => panic!("not a plugin event: {other:?}"),
        }
        let second = rx.try_recv().expect("mirrored");
        assert!(
            matches!(&second.event, Event::Plugin { payload, .. } if payload == &serde_json::json!({"a": 1}))
        );
    }
}
