//! 200 plugins loaded at once: every one ready, every one answering, each
//! child's memory reported. The load time is printed (not asserted: it
//! is a measurement, and machines differ).

use corral_daemon_tests::{Daemon, Setup};
use corral_protocol::api::PluginState;
use serde_json::json;
use std::time::Instant;

const PLUGINS: usize = 200;
/// Calls in flight at once while calling every plugin.
const PARALLEL_CALLS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_plugins_load_and_answer() {
    let copying = Instant::now();
    let setup = Setup::new();
    for i in 0..PLUGINS {
        setup.add_package("hello", &format!("hello-{i:03}"));
    }
    let copy_time = copying.elapsed();

    let started = Instant::now();
    let daemon = Daemon::start(&setup).await;
    let load_time = started.elapsed();
    let api = daemon.client.clone();

    let health = api.health().await;
    assert_eq!(health.plugins_installed, PLUGINS, "{health:?}");
    assert_eq!(health.plugins_loaded, PLUGINS, "{health:?}");
    assert_eq!(health.children_alive, PLUGINS, "{health:?}");
    let list = api.list().await;
    assert_eq!(list.len(), PLUGINS);
    let not_ready: Vec<_> = list
        .iter()
        .filter(|p| p.state != PluginState::Ready || p.children != 1)
        .map(|p| (&p.name, p.state, p.children))
        .collect();
    assert!(not_ready.is_empty(), "not ready: {not_ready:?}");

    let calling = Instant::now();
    let names: Vec<String> = list.iter().map(|p| p.name.clone()).collect();
    let mut failures = Vec::new();
    for chunk in names.chunks(PARALLEL_CALLS) {
        let calls: Vec<_> = chunk
            .iter()
            .map(|name| {
                let (api, name) = (api.clone(), name.clone());
                tokio::spawn(async move {
                    let response = api.call(&name, "greet", json!({"name": name})).await;
                    (name, response)
                })
            })
            .collect();
        for call in calls {
            let (name, response) = call.await.expect("a call task");
            let ok = response.status == 200
                && response.value()["output"]["greeting"] == format!("Hello, {name}!");
            if !ok {
                failures.push(format!("{name}: {} {}", response.status, response.text()));
            }
        }
    }
    let call_time = calling.elapsed();
    assert!(
        failures.is_empty(),
        "{} calls failed: {failures:#?}",
        failures.len()
    );

    // Memory per child, as the daemon reports it (the child's cgroup).
    let mut memory: Vec<u64> = Vec::new();
    for name in &names {
        let detail = api.detail(name).await;
        assert_eq!(detail.processes.len(), 1, "{name}");
        let child = &detail.processes[0];
        assert!(
            child.memory_bytes > 0,
            "{name}: no memory reported: {child:?}"
        );
        memory.push(child.memory_bytes);
    }
    memory.sort_unstable();
    let total: u64 = memory.iter().sum();
    let listed: u64 = api.list().await.iter().map(|p| p.memory_bytes).sum();
    assert!(listed > 0);
    eprintln!(
        "{PLUGINS} plugins: copied in {copy_time:?}, corrald ready after {load_time:?} \
         (first health answer after {:?}), one call to each in {call_time:?}; \
         memory per child: min {} KiB, median {} KiB, max {} KiB, mean {} KiB",
        daemon.ready_after.unwrap_or_default(),
        memory[0] >> 10,
        memory[memory.len() / 2] >> 10,
        memory[memory.len() - 1] >> 10,
        (total / memory.len() as u64) >> 10,
    );
    let stopping = Instant::now();
    daemon.stop().await;
    eprintln!("stopped {PLUGINS} plugins in {:?}", stopping.elapsed());
}
