//! Host services: what a plugin may ask the host for over its channel
//! (protocol version 2), as compiled from its manifest and the operator's
//! policy. The operations and their JSON bodies are in `PROTOCOL.md`,
//! section 9.
//!
//! Every name a plugin uses (a topic, a table, a bucket) is the plugin's
//! own; the host resolves it to the real name through the plugin's
//! [`NameScope`] (an exact name map first, then a prefix), so two plugins
//! can use the same name without meeting, and an operator shares a table
//! or a topic by mapping both plugins' names onto one real name.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The services the plugin was granted, in the plugin's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceGrants {
    /// Plugins it may call (`plugins.call`): its manifest's
    /// `[dependencies]` the policy grants.
    pub calls: Vec<String>,
    /// Topic patterns it may publish to (`*` matches any run of
    /// characters).
    pub publish: Vec<String>,
    /// Topic patterns it may subscribe to.
    pub subscribe: Vec<String>,
    /// Key-value tables it may use.
    pub tables: Vec<String>,
    /// S3 buckets it may reach through the host.
    pub buckets: Vec<String>,
    pub topic_names: NameScope,
    pub table_names: NameScope,
    pub bucket_names: NameScope,
    /// Bytes of keys and values it may keep across its tables.
    pub storage_quota: u64,
    pub requests: RequestLimits,
}

impl ServiceGrants {
    /// True when the plugin was granted any service at all.
    pub fn any(&self) -> bool {
        !(self.calls.is_empty()
            && self.publish.is_empty()
            && self.subscribe.is_empty()
            && self.tables.is_empty()
            && self.buckets.is_empty())
    }
}

/// Bounds on one child's requests, so a flood cannot grow the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimits {
    /// Requests waiting for their response at once.
    pub in_flight: u32,
    /// Largest request payload, in bytes.
    pub max_bytes: u32,
    /// Requests per second, sustained (a burst of as many is allowed).
    pub per_second: u32,
    /// Events queued for the plugin before new ones are dropped.
    pub event_queue: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            in_flight: 64,
            max_bytes: 1 << 20,
            per_second: 5000,
            event_queue: 1024,
        }
    }
}

/// How a plugin's names become real ones: an exact map entry wins, else
/// the prefix is put in front.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameScope {
    pub prefix: String,
    pub map: BTreeMap<String, String>,
}

impl NameScope {
    pub fn resolve(&self, name: &str) -> String {
        match self.map.get(name) {
            Some(real) => real.clone(),
            None => format!("{}{name}", self.prefix),
        }
    }

    /// The plugin's name for a real name, if it has one.
    pub fn unresolve(&self, real: &str) -> Option<String> {
        if let Some((mine, _)) = self.map.iter().find(|(_, r)| r.as_str() == real) {
            return Some(mine.clone());
        }
        let mine = real.strip_prefix(self.prefix.as_str())?;
        // A name that the map sends elsewhere is not reached by prefix.
        (!self.map.contains_key(mine)).then(|| mine.to_string())
    }
}

/// `*` matches any run of characters (empty included); everything else
/// matches itself. `data:*` matches `data:saved` and `data:`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Iterative glob with one backtrack point: linear in practice and
    // never recursive, whatever the plugin sends.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// True when every name `requested` matches is matched by `granted` too
/// (a pattern covers another when it matches it as a name).
pub fn pattern_covers(granted: &str, requested: &str) -> bool {
    pattern_matches(granted, requested)
}

/// Topic, table and bucket names: 1 to 200 bytes of `[A-Za-z0-9._:/-]`
/// (and `*` in patterns).
pub fn valid_name(name: &str, pattern: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("{name:?} must be 1 to 200 bytes long"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/-".contains(*c) || (pattern && *c == '*')))
    {
        Some(c) => Err(format!(
            "{name:?} holds {c:?}; names use letters, digits and . _ : / -{}",
            if pattern { " (and * in patterns)" } else { "" }
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(pattern_matches("data:*", "data:saved"));
        assert!(pattern_matches("data:*", "data:"));
        assert!(!pattern_matches("data:*", "date:x"));
        assert!(pattern_matches("*", "anything.at/all"));
        assert!(pattern_matches("a*b*c", "aXXbYYc"));
        assert!(!pattern_matches("a*b*c", "aXXbYY"));
        assert!(pattern_matches("user.created", "user.created"));
        assert!(!pattern_matches("user.created", "user.created2"));
        assert!(pattern_matches("**x", "x"));
    }

    #[test]
    fn a_pattern_covers_narrower_ones() {
        assert!(pattern_covers("data:*", "data:x*"));
        assert!(pattern_covers("*", "data:*"));
        assert!(!pattern_covers("data:x*", "data:*"));
    }

    #[test]
    fn names_resolve_through_the_map_then_the_prefix() {
        let scope = NameScope {
            prefix: "my-plugin_".into(),
            map: BTreeMap::from([("users".into(), "custom_users_table".into())]),
        };
        assert_eq!(scope.resolve("users"), "custom_users_table");
        assert_eq!(scope.resolve("orders"), "my-plugin_orders");
        assert_eq!(
            scope.unresolve("custom_users_table").as_deref(),
            Some("users")
        );
        assert_eq!(
            scope.unresolve("my-plugin_orders").as_deref(),
            Some("orders")
        );
        assert_eq!(scope.unresolve("my-plugin_users"), None);
        assert_eq!(scope.unresolve("other_orders"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("orders.created", false).is_ok());
        assert!(valid_name("data:*", true).is_ok());
        assert!(valid_name("data:*", false).is_err());
        assert!(valid_name("", false).is_err());
        assert!(valid_name("a b", false).is_err());
        assert!(valid_name(&"x".repeat(201), false).is_err());
    }
}
