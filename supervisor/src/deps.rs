//! The dependency graph between installed plugins: finding a cycle (and
//! naming it) before an install or a load would chase it, instead of
//! relying on a recursion limit.

use std::collections::BTreeSet;

/// The first cycle reachable from `start`, as the names along it with the
/// first repeated at the end (`a -> b -> a`); `deps_of` gives a plugin's
/// dependencies (empty for one not installed).
pub fn find_cycle(start: &str, deps_of: &dyn Fn(&str) -> Vec<String>) -> Option<Vec<String>> {
    let mut path: Vec<String> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    visit(start, deps_of, &mut path, &mut done)
}

fn visit(
    node: &str,
    deps_of: &dyn Fn(&str) -> Vec<String>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for dep in deps_of(node) {
        if let Some(cycle) = visit(&dep, deps_of, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

/// `a -> b -> a`.
pub fn describe(cycle: &[String]) -> String {
    cycle.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn graph(edges: &[(&str, &[&str])]) -> impl Fn(&str) -> Vec<String> {
        let map: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        move |n: &str| map.get(n).cloned().unwrap_or_default()
    }

    #[test]
    fn cycles_are_found_and_named() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(
            find_cycle("a", &g).map(|c| describe(&c)),
            Some("a -> b -> c -> a".into())
        );
        let g = graph(&[("app", &["lib"]), ("lib", &["core"]), ("core", &["lib"])]);
        assert_eq!(
            find_cycle("app", &g).map(|c| describe(&c)),
            Some("lib -> core -> lib".into())
        );
        let g = graph(&[("self", &["self"])]);
        assert_eq!(
            find_cycle("self", &g).map(|c| describe(&c)),
            Some("self -> self".into())
        );
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])]);
        assert_eq!(find_cycle("a", &g), None);
        assert_eq!(find_cycle("missing", &g), None);
    }
}
