//! Which names may become cgroup directories.
//!
//! A name ends up as a path component under a base the daemon owns, so it
//! must not walk out of it (`/`, `..`) nor collide with the interface files
//! cgroupfs puts next to child directories (`cgroup.procs`, `memory.max`,
//! `tasks`, ...).

use crate::error::CgroupError;

/// `NAME_MAX`: longer components are refused by every Linux filesystem.
const MAX_LEN: usize = 255;

/// Prefixes of interface files, as in `<prefix>.<file>`.
const RESERVED_PREFIXES: &[&str] = &[
    "cgroup",
    "memory",
    "memsw",
    "pids",
    "cpu",
    "cpuacct",
    "cpuset",
    "io",
    "blkio",
    "freezer",
    "hugetlb",
    "rdma",
    "misc",
    "devices",
    "net_cls",
    "net_prio",
    "perf_event",
    "irq",
];

/// Interface files without a dot (v1).
const RESERVED_NAMES: &[&str] = &["tasks", "notify_on_release", "release_agent"];

/// Checks that `name` is a safe leaf name: `[a-z0-9._-]`, starting with a
/// letter or digit, no `..`, at most 255 bytes, and not shaped like a
/// cgroupfs interface file.
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return invalid("it is empty");
    };
    if name.len() > MAX_LEN {
        return invalid("it is longer than 255 bytes");
    }
    if name.contains('/') {
        return invalid("it contains '/'");
    }
    if name.contains("..") {
        return invalid("it contains '..'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return invalid("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return invalid("it must start with a letter or a digit");
    }
    if RESERVED_NAMES.contains(&name) {
        return invalid("it is the name of a cgroupfs interface file");
    }
    let prefix = name.split_once('.').map(|(prefix, _)| prefix);
    if prefix.is_some_and(|prefix| RESERVED_PREFIXES.contains(&prefix)) {
        return invalid("it is shaped like a cgroupfs interface file (<controller>.<file>)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plugin_like_names() {
        for name in [
            "corral",
            "hello",
            "csv-summary.3",
            "a_b-c.d",
            "0",
            "corral-test-123-4",
        ] {
            assert!(validate_name(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn rejects_escapes_and_collisions() {
        let long = "a".repeat(256);
        for (name, why) in [
            ("", "empty"),
            ("..", ".."),
            ("a..b", ".."),
            ("a/b", "'/'"),
            ("/abs", "'/'"),
            (".hidden", "start"),
            ("-flag", "start"),
            ("Upper", "allowed"),
            ("sp ace", "allowed"),
            ("caf\u{e9}", "allowed"),
            ("cgroup.procs", "interface"),
            ("memory.max", "interface"),
            ("cpu.max", "interface"),
            ("tasks", "interface"),
            (long.as_str(), "255"),
        ] {
            let err = validate_name(name).expect_err("name must be rejected");
            let text = err.to_string();
            assert!(text.contains(why), "{name:?}: {text}");
        }
    }
}
