//! The `kv` host service's rate: puts and gets a second through
//! `services::storage::Storage::request`, the path a plugin's request
//! takes once the child's reader admitted it (payload parsing, the grant,
//! the name scope, the blocking pool, a redb transaction; a put's commit
//! is fsynced before it is answered). The channel itself is measured by
//! the warm-call section; this is what the database adds. The file lives
//! under /var/tmp (a real disk, as the state directory would be), not on
//! a tmpfs where an fsync costs nothing.

use crate::Ctx;
use crate::report::{Section, Table};
use crate::stats::{Summary, fmt_rate, fmt_us};
use anyhow::{Result, anyhow};
use corral_protocol::services::{NameScope, ServiceGrants};
use corral_supervisor::services::storage::Storage;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small JSON value, as a settings or session record would be.
const VALUE: &str = r#"{"name":"ada","visits":12,"tags":["a","b"]}"#;

fn grants() -> ServiceGrants {
    ServiceGrants {
        tables: vec!["bench".into()],
        table_names: NameScope {
            prefix: "bench_".into(),
            map: Default::default(),
        },
        storage_quota: 1 << 30,
        ..ServiceGrants::default()
    }
}

/// `n` requests from `clients` concurrent callers; the latencies and the
/// wall time.
fn drive(
    ctx: &Ctx,
    storage: &Arc<Storage>,
    operation: &'static str,
    n: usize,
    clients: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let grants = Arc::new(grants());
    ctx.tokio.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let storage = storage.clone();
            let grants = grants.clone();
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for i in (c..n).step_by(clients) {
                    let payload = match operation {
                        "put" => format!(r#"{{"table":"bench","key":"k{i:08}","value":{VALUE}}}"#),
                        _ => format!(r#"{{"table":"bench","key":"k{i:08}"}}"#),
                    };
                    let t = Instant::now();
                    storage
                        .request("bench", &grants, operation, payload.as_bytes())
                        .await
                        .map_err(|e| anyhow!("kv.{operation}: {e}"))?;
                    times.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(times)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| anyhow!("a client panicked: {e}"))??);
        }
        Ok((all, started.elapsed()))
    })
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-kv-")
        .tempdir_in("/var/tmp")?;
    let storage = Arc::new(Storage::open(dir.path()));
    let n = if ctx.quick { 500 } else { 5_000 };
    let mut section = Section::new("Key-value storage: the kv service (redb)");
    section.intro(format!(
        "{n} puts of distinct keys (a {}-byte JSON value), then {n} gets of them, through \
         `Storage::request` (payload parsing, grant, name scope, blocking pool, one redb \
         transaction each; every put commit is fsynced) on a database file in /var/tmp. \
         1 client waits for each answer; 4 and 16 clients keep that many requests in flight \
         (the service runs at most 4 database operations at once).",
        VALUE.len()
    ));
    let mut table = Table::new(&["operation", "clients", "rate", "p50", "p99", "n"]);
    for clients in [1usize, 4, 16] {
        for operation in ["put", "get"] {
            let (times, wall) = drive(ctx, &storage, operation, n, clients)?;
            let s = Summary::of_durations(&times);
            table.row(vec![
                operation.to_string(),
                clients.to_string(),
                fmt_rate(n as f64 / wall.as_secs_f64()),
                fmt_us(s.p50),
                fmt_us(s.p99),
                n.to_string(),
            ]);
        }
    }
    section.table("kv.put and kv.get", table);
    Ok(section)
}
