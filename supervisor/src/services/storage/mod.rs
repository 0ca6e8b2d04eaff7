//! The `kv` service: key-value tables corrald keeps for plugins in one
//! embedded database, `<state_dir>/services/kv.redb` (PROTOCOL.md section
//! 9). A request goes through, in order:
//!
//! 1. the grant: the table must be one the policy granted
//!    (`policy.services.tables`), else `permission_denied` naming
//!    `kv.table <name>`;
//! 2. the input: keys are 1 to 1024 bytes, `list` takes at most 1000 keys
//!    a page; values are any JSON, bounded by the request size limit the
//!    child's reader already enforced;
//! 3. the name: the plugin's table becomes the real one through its name
//!    scope (`<plugin>_users` by default, or the operator's map entry,
//!    which is how two plugins share a table);
//! 4. the database, on the blocking pool, at most [`DB_WORKERS`] at a
//!    time, so a flood of requests never takes the async threads or more
//!    than a few blocking ones.
//!
//! # Why redb
//!
//! Pure Rust (no C library to build or audit), ACID transactions with
//! copy-on-write pages (a crash leaves the last commit, never half a
//! write), one file, a stable file format, and well kept. A put and its
//! quota bookkeeping commit together, so a refused put changes nothing.
//! sled (unmaintained beta) and RocksDB/LMDB (C, bindings) were the
//! alternatives. A committed put is fsynced before it is answered
//! (benches/RESULTS.md has the rate).
//!
//! # Quota
//!
//! A plugin's usage is the bytes (keys + values) held by the real tables
//! its grants reach: its own, and any shared with it. A put that would
//! take that past `policy.services.storage_quota` is refused
//! `quota_exceeded` and changes nothing; a put that does not grow the
//! data is always allowed. A shared table counts in full against every
//! plugin that uses it, so no plugin can fill a shared table past its own
//! quota, and no accounting depends on who wrote which key.
//!
//! # Lifetime
//!
//! The data outlives plugin processes, reloads, upgrades and daemon
//! restarts. It is removed only when an operator asks:
//! `DELETE /v1/plugins/{name}?purge_data=true` (`corral rm --purge-data`)
//! drops the tables the plugin owns (those it created through its own
//! prefix); tables the operator shares through a name map stay.
//!
//! A database that cannot be opened (corrupt, unreadable) does not stop
//! the daemon: it is logged, and every `kv` request is answered
//! `service_unavailable` naming the file.

mod db;

pub use db::Purged;

use super::{Caller, ServiceFuture, body, clip, parse, unknown_operation};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::services::ServiceGrants;
use db::{Db, DbError, Put};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The database file, under the state directory.
pub const DB_FILE: &str = "services/kv.redb";
/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Most keys one `list` returns.
pub const MAX_LIST: usize = 1000;
const DEFAULT_LIST: usize = 100;
/// Database operations running at once (blocking threads taken).
pub const DB_WORKERS: usize = 4;

const OPERATIONS: &[&str] = &["get", "put", "delete", "list"];

#[derive(Debug)]
pub struct Storage {
    db: Result<Arc<Db>, String>,
    path: PathBuf,
    workers: Arc<Semaphore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    table: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    table: String,
    key: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    table: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

impl Storage {
    /// Opens (or creates) the database under `state_dir`. A failure is
    /// logged and kept: the daemon runs, `kv` requests are refused.
    pub fn open(state_dir: &Path) -> Storage {
        let path = state_dir.join(DB_FILE);
        let db = match Db::open(&path) {
            Ok(db) => Ok(Arc::new(db)),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "the key-value database cannot be opened; kv requests will be refused");
                Err(e.to_string())
            }
        };
        Storage {
            db,
            path,
            workers: Arc::new(Semaphore::new(DB_WORKERS)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn handle(&self, caller: Caller, operation: String, payload: Vec<u8>) -> ServiceFuture {
        let db = self.db.clone();
        let path = self.path.clone();
        let workers = self.workers.clone();
        Box::pin(async move {
            run(
                db,
                &path,
                &workers,
                &caller.plugin,
                &caller.policy.services,
                &operation,
                &payload,
            )
            .await
        })
    }

    /// One request as `plugin` with `grants`, without a child: what
    /// [`Storage::handle`] does, for benchmarks and tools.
    pub async fn request(
        &self,
        plugin: &str,
        grants: &ServiceGrants,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CorralError> {
        run(
            self.db.clone(),
            &self.path,
            &self.workers,
            plugin,
            grants,
            operation,
            payload,
        )
        .await
    }

    /// Removes the tables `plugin` owns; what was removed.
    pub async fn purge(&self, plugin: &str) -> Result<Purged, CorralError> {
        let db = self
            .db
            .clone()
            .map_err(|reason| unavailable(&self.path, &reason))?;
        let _permit = self
            .workers
            .acquire()
            .await
            .map_err(|_| CorralError::new(ErrorKind::ShuttingDown, "corrald is stopping"))?;
        let owner = plugin.to_string();
        let purged = tokio::task::spawn_blocking(move || db.purge(&owner))
            .await
            .map_err(|e| CorralError::internal(format!("purging {plugin}'s data: {e}")))?
            .map_err(|e| db_error(plugin, "purge", e))?;
        tracing::info!(plugin = %plugin, tables = ?purged.tables, bytes = purged.bytes, "purged the plugin's stored data");
        Ok(purged)
    }
}

async fn run(
    db: Result<Arc<Db>, String>,
    path: &Path,
    workers: &Arc<Semaphore>,
    plugin: &str,
    grants: &ServiceGrants,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, CorralError> {
    let db = db.map_err(|reason| unavailable(path, &reason))?;
    let op = prepare(plugin, grants, operation, payload)?;
    let _permit = workers
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| CorralError::new(ErrorKind::ShuttingDown, "corrald is stopping"))?;
    tokio::task::spawn_blocking(move || op.run(&db))
        .await
        .map_err(|e| CorralError::internal(format!("kv.{operation}: {e}")))?
        .map_err(|e| db_error(plugin, operation, e))
}

/// One checked operation, in real names, ready for the database.
enum Op {
    Get {
        table: String,
        key: String,
    },
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
        counted: Vec<String>,
        quota: u64,
        owner: Option<String>,
    },
    Delete {
        table: String,
        key: String,
    },
    List {
        table: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
    },
}

impl Op {
    fn run(self, db: &Db) -> Result<Vec<u8>, DbError> {
        let encode =
            |v: serde_json::Value| serde_json::to_vec(&v).map_err(|e| DbError::Io(e.to_string()));
        match self {
            Op::Get { table, key } => Ok(match db.get(&table, &key)? {
                // Stored bytes are JSON this service encoded: spliced in
                // as they are rather than parsed again.
                Some(value) => [b"{\"value\":".as_slice(), &value, b"}"].concat(),
                None => b"{\"value\":null}".to_vec(),
            }),
            Op::Put {
                table,
                key,
                value,
                counted,
                quota,
                owner,
            } => {
                db.put(&Put {
                    table: &table,
                    key: &key,
                    value: &value,
                    counted: &counted,
                    quota,
                    owner: owner.as_deref(),
                })?;
                Ok(b"{}".to_vec())
            }
            Op::Delete { table, key } => {
                encode(serde_json::json!({ "deleted": db.delete(&table, &key)? }))
            }
            Op::List {
                table,
                prefix,
                after,
                limit,
            } => {
                let (keys, next) = db.list(&table, &prefix, after.as_deref(), limit)?;
                encode(serde_json::json!({ "keys": keys, "next": next }))
            }
        }
    }
}

/// Checks the grant and the input and resolves the names; nothing here
/// touches the database.
fn prepare(
    plugin: &str,
    grants: &ServiceGrants,
    operation: &str,
    payload: &[u8],
) -> Result<Op, CorralError> {
    let real = |table: &str| -> Result<String, CorralError> {
        if !grants.tables.iter().any(|t| t == table) {
            return Err(denied(plugin, table));
        }
        Ok(grants.table_names.resolve(table))
    };
    Ok(match operation {
        "get" | "delete" => {
            let a: KeyArgs = parse("kv", operation, payload)?;
            check_key(operation, "key", &a.key, false)?;
            let table = real(&a.table)?;
            if operation == "get" {
                Op::Get { table, key: a.key }
            } else {
                Op::Delete { table, key: a.key }
            }
        }
        "put" => {
            let a: PutArgs = parse("kv", operation, payload)?;
            check_key(operation, "key", &a.key, false)?;
            let table = real(&a.table)?;
            let value = body(&a.value)?;
            // Owned when reached through the plugin's own prefix, not
            // through the operator's map.
            let owner =
                (!grants.table_names.map.contains_key(&a.table)).then(|| plugin.to_string());
            Op::Put {
                table,
                key: a.key,
                value,
                counted: grants
                    .tables
                    .iter()
                    .map(|t| grants.table_names.resolve(t))
                    .collect(),
                quota: grants.storage_quota,
                owner,
            }
        }
        "list" => {
            let a: ListArgs = parse("kv", operation, payload)?;
            check_key(operation, "prefix", &a.prefix, true)?;
            if let Some(after) = &a.after {
                check_key(operation, "after", after, true)?;
            }
            let limit = a.limit.unwrap_or(DEFAULT_LIST);
            if limit == 0 || limit > MAX_LIST {
                return Err(CorralError::invalid_input(format!(
                    "kv.list: limit {limit} is not between 1 and {MAX_LIST}"
                )));
            }
            Op::List {
                table: real(&a.table)?,
                prefix: a.prefix,
                after: a.after,
                limit,
            }
        }
        other => return Err(unknown_operation("kv", other, OPERATIONS)),
    })
}

fn check_key(
    operation: &str,
    field: &str,
    key: &str,
    may_be_empty: bool,
) -> Result<(), CorralError> {
    if (key.is_empty() && !may_be_empty) || key.len() > MAX_KEY {
        return Err(CorralError::invalid_input(format!(
            "kv.{operation}: {field} is {} bytes; keys are 1 to {MAX_KEY} bytes",
            key.len()
        )));
    }
    Ok(())
}

fn denied(plugin: &str, table: &str) -> CorralError {
    let table = clip(table);
    CorralError::new(
        ErrorKind::PermissionDenied {
            permission: Some(format!("kv.table {table}")),
        },
        format!(
            "plugin {plugin} may not use table {table:?}: list it in the manifest's \
             [permissions.storage] tables, and an operator grants it with \
             `tables = true` under [grantable] or `tables = [\"{table}\"]` under \
             [plugins.{plugin}.grant]"
        ),
    )
}

fn unavailable(path: &Path, reason: &str) -> CorralError {
    CorralError::new(
        ErrorKind::ServiceUnavailable {
            service: "kv".into(),
        },
        format!(
            "the key-value database {} cannot be used ({reason}); an operator must repair or move it and restart corrald",
            path.display()
        ),
    )
}

fn db_error(plugin: &str, operation: &str, e: DbError) -> CorralError {
    match e {
        DbError::Quota { quota, used } => CorralError::new(
            ErrorKind::QuotaExceeded {
                quota_bytes: quota,
                used_bytes: used,
            },
            format!(
                "kv.{operation}: plugin {plugin}'s tables hold {used} of its {quota} bytes; \
                 delete keys, or an operator raises storage_quota"
            ),
        ),
        other => {
            tracing::error!(plugin = %plugin, operation, error = %other, "key-value database error");
            CorralError::internal(format!("kv.{operation}: the database failed: {other}"))
        }
    }
}

#[cfg(test)]
mod tests;
