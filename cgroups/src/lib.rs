//! cgroup v1 and v2 drivers behind one trait
