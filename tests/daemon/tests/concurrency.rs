//! Many clients at once get the right answers, and a slow plugin never
//! holds up calls to another.

use corral_daemon_tests::{Daemon, EVENT_WAIT, Request, Setup, eventually};
use corral_protocol::api::CallResponse;
use serde_json::json;
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;
const CALLS_PER_CLIENT: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_many_calls_all_answered_correctly() {
    let setup = Setup::new()
        .package_as("hello", "hello-a")
        .package_as("hello", "hello-b");
    let daemon = Daemon::start(&setup).await;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let api = daemon.client.clone();
        tasks.push(tokio::spawn(async move {
            // Half the clients keep one connection for all their calls,
            // half open one per call.
            let mut kept = if client % 2 == 0 {
                Some(api.connect().await)
            } else {
                None
            };
            let mut wrong = Vec::new();
            for i in 0..CALLS_PER_CLIENT {
                let plugin = if (client + i) % 2 == 0 {
                    "hello-a"
                } else {
                    "hello-b"
                };
                let input = json!({"client": client, "call": i, "pad": "x".repeat(i * 17)});
                let request = Request::post(&format!("/v1/plugins/{plugin}/call"))
                    .json(&json!({"method": "echo", "input": input}));
                let response = match kept.as_mut() {
                    Some(connection) => connection.send(&request).await,
                    None => api.send(&request).await,
                };
                if response.status != 200 {
                    wrong.push(format!(
                        "{client}/{i}: {} {}",
                        response.status,
                        response.text()
                    ));
                    continue;
                }
                let answer: CallResponse = response.parse();
                if answer.output != input {
                    wrong.push(format!("{client}/{i}: got {} for {input}", answer.output));
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.expect("a client task"));
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {wrong:#?}",
        wrong.len()
    );
    let calls: u64 = daemon.client.list().await.iter().map(|p| p.calls_ok).sum();
    assert_eq!(calls, (CLIENTS * CALLS_PER_CLIENT) as u64);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_does_not_delay_another() {
    const SLOW_MS: u64 = 2000;
    let setup = Setup::new()
        .package_as("hello", "slow")
        .package_as("hello", "quick");
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    // One slow call: hello serves a child's calls one at a time, so more
    // would only queue behind it.
    let slow_calls: Vec<_> = (0..1)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.call("slow", "sleep", json!({"ms": SLOW_MS})).await })
        })
        .collect();
    eventually("the slow calls are in flight", EVENT_WAIT, || async {
        (api.detail("slow").await.summary.in_flight >= 1).then_some(())
    })
    .await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let out = api
            .call_ok("quick", "greet", json!({"name": format!("n{i}")}))
            .await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(out.output["greeting"], format!("Hello, n{i}!"));
    }
    let quick_total = started.elapsed();
    // The isolation claim: every quick call finished while the slow plugin
    // was still busy, so none of them waited for it.
    assert!(
        slow_calls.iter().all(|t| !t.is_finished()),
        "a slow call finished before the quick ones ({quick_total:?}): they were held up"
    );
    assert!(
        slowest < Duration::from_millis(SLOW_MS / 2),
        "a quick call took {slowest:?} while the other plugin slept {SLOW_MS} ms"
    );
    assert!(api.detail("slow").await.summary.in_flight >= 1);
    for call in slow_calls {
        let out: CallResponse = call.await.expect("slow call task").ok();
        assert_eq!(out.output["cancelled"], false);
    }
    eprintln!(
        "20 calls to `quick` during a {SLOW_MS} ms call to `slow`: {quick_total:?} in all, slowest {slowest:?}"
    );
    daemon.stop().await;
}
