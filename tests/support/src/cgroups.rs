//! Cgroups a test's runtime or daemon made under its own base directory,
//! in every mounted hierarchy (v1 controllers, or v2).

use std::path::{Path, PathBuf};

/// Where the hierarchies are mounted on the machines corral tests on.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `<hierarchy>/<base>` for every mounted hierarchy that has it.
pub fn cgroup_base_dirs(base: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join(base))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Leaf cgroups under `base`, in every hierarchy.
pub fn cgroup_leaves(base: &str) -> Vec<PathBuf> {
    let mut leaves = Vec::new();
    for dir in cgroup_base_dirs(base) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                leaves.push(entry.path());
            }
        }
    }
    leaves.sort();
    leaves
}

/// Leaf names (without the hierarchy), deduplicated.
pub fn cgroup_leaf_names(base: &str) -> Vec<String> {
    names_of(&cgroup_leaves(base))
}

/// The leaves' names, sorted and deduplicated: a v1 leaf stands once in
/// each controller's hierarchy.
fn names_of(leaves: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = leaves
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether processes are inside the leaf (a plugin's cgroup while it
/// runs; a daemon also keeps a few empty ones ready for its next start).
fn populated(leaf: &Path) -> bool {
    std::fs::read_to_string(leaf.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
}

/// Leaves under `base` with processes inside: the running plugins'.
pub fn populated_cgroup_leaves(base: &str) -> Vec<PathBuf> {
    cgroup_leaves(base)
        .into_iter()
        .filter(|l| populated(l))
        .collect()
}

/// Names of the populated leaves (without the hierarchy), deduplicated.
pub fn populated_cgroup_leaf_names(base: &str) -> Vec<String> {
    names_of(&populated_cgroup_leaves(base))
}

/// Kills what is in each leaf, removes the leaves and the base (cleanup
/// after a test, passing or not).
pub fn remove_cgroup_base(base: &str) {
    for leaf in cgroup_leaves(base) {
        kill_cgroup(&leaf);
    }
    for _ in 0..50 {
        let mut left = false;
        for leaf in &cgroup_leaves(base) {
            left |= std::fs::remove_dir(leaf).is_err();
        }
        if !left {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for dir in cgroup_base_dirs(base) {
        let _ = std::fs::remove_dir(dir);
    }
}

fn kill_cgroup(leaf: &Path) {
    let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill has no memory effects; the pid may be gone already.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
