//! The key-value database itself: one redb file, one redb table per real
//! table (`t/<real name>`), and two bookkeeping tables kept in the same
//! transactions as the data, so they can never disagree with it:
//!
//! - `meta/usage`: bytes (keys + values) each real table holds, so a
//!   quota check reads a handful of counters instead of walking data;
//! - `meta/owner`: the plugin a real table belongs to (the one that
//!   reached it through its own prefix), so a purge removes exactly that
//!   plugin's tables and never a table another plugin's name happens to
//!   start with, nor a table the operator shares through a name map.
//!
//! Everything here blocks (file I/O, fsync on commit): callers run it on
//! the blocking pool.

use redb::{Database, ReadableTable, TableDefinition, TableError};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;

const USAGE: TableDefinition<&str, u64> = TableDefinition::new("meta/usage");
const OWNER: TableDefinition<&str, &str> = TableDefinition::new("meta/owner");
const DATA_PREFIX: &str = "t/";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file could not be opened as a database (corrupt, not redb, a
    /// newer format, unreadable).
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    /// A read or write failed.
    #[error("{0}")]
    Io(String),
    /// The put would take the writer past its quota.
    #[error("quota of {quota} bytes reached ({used} used)")]
    Quota { quota: u64, used: u64 },
}

fn io(e: impl Into<redb::Error>) -> DbError {
    DbError::Io(e.into().to_string())
}

fn data_name(real: &str) -> String {
    format!("{DATA_PREFIX}{real}")
}

/// A write: one key of one real table, checked against a quota.
pub struct Put<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
    /// Real tables whose bytes count against the writer's quota (the
    /// table written is counted whether listed or not).
    pub counted: &'a [String],
    pub quota: u64,
    /// The plugin that owns the table, when it reached it through its own
    /// prefix; recorded the first time.
    pub owner: Option<&'a str>,
}

/// What a purge removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    pub tables: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Db {
    db: Database,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Open {
                path: path.display().to_string(),
                reason: format!("creating {}: {e}", dir.display()),
            })?;
        }
        let db = Database::create(path).map_err(|e| DbError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Db { db })
    }

    pub fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.db.begin_read().map_err(io)?;
        let name = data_name(table);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// Writes one key, unless the writer's usage would pass its quota
    /// (then nothing changes). A put that does not grow the data is
    /// always allowed, so a plugin over its quota can still shrink.
    pub fn put(&self, put: &Put<'_>) -> Result<(), DbError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let name = data_name(put.table);
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
            let mut data = txn.open_table(def).map_err(io)?;
            let mut usage = txn.open_table(USAGE).map_err(io)?;
            let old = data
                .get(put.key)
                .map_err(io)?
                .map(|v| (put.key.len() + v.value().len()) as u64)
                .unwrap_or(0);
            let new = (put.key.len() + put.value.len()) as u64;
            let tables: BTreeSet<&str> = put
                .counted
                .iter()
                .map(String::as_str)
                .chain([put.table])
                .collect();
            let mut used = 0u64;
            for t in tables {
                used = used.saturating_add(usage.get(t).map_err(io)?.map_or(0, |v| v.value()));
            }
            if new > old && used.saturating_sub(old).saturating_add(new) > put.quota {
                // Dropping the transaction aborts it: nothing changed.
                return Err(DbError::Quota {
                    quota: put.quota,
                    used,
                });
            }
            data.insert(put.key, put.value).map_err(io)?;
            let here = usage.get(put.table).map_err(io)?.map_or(0, |v| v.value());
            usage
                .insert(put.table, here.saturating_sub(old).saturating_add(new))
                .map_err(io)?;
            if let Some(owner) = put.owner {
                let mut owners = txn.open_table(OWNER).map_err(io)?;
                if owners.get(put.table).map_err(io)?.is_none() {
                    owners.insert(put.table, owner).map_err(io)?;
                }
            }
        }
        txn.commit().map_err(io)
    }

    pub fn delete(&self, table: &str, key: &str) -> Result<bool, DbError> {
        let txn = self.db.begin_write().map_err(io)?;
        let removed = {
            let name = data_name(table);
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
            let mut data = txn.open_table(def).map_err(io)?;
            let removed = data
                .remove(key)
                .map_err(io)?
                .map(|v| (key.len() + v.value().len()) as u64);
            if let Some(size) = removed {
                let mut usage = txn.open_table(USAGE).map_err(io)?;
                let here = usage.get(table).map_err(io)?.map_or(0, |v| v.value());
                usage.insert(table, here.saturating_sub(size)).map_err(io)?;
            }
            removed.is_some()
        };
        if removed {
            txn.commit().map_err(io)?;
        } else {
            txn.abort().map_err(io)?;
        }
        Ok(removed)
    }

    /// Keys in byte order that start with `prefix` and come after
    /// `after`, at most `limit`; the second value is the `after` of the
    /// next page when there is one.
    pub fn list(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), DbError> {
        let txn = self.db.begin_read().map_err(io)?;
        let name = data_name(table);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(io(e)),
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut keys = Vec::new();
        for entry in t.range::<&str>((start, Bound::Unbounded)).map_err(io)? {
            let (k, _) = entry.map_err(io)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if keys.len() == limit {
                let next = keys.last().cloned();
                return Ok((keys, next));
            }
            keys.push(k.to_string());
        }
        Ok((keys, None))
    }

    /// Bytes the given real tables hold together.
    #[cfg(test)]
    pub fn usage(&self, tables: &[String]) -> Result<u64, DbError> {
        let txn = self.db.begin_read().map_err(io)?;
        let usage = match txn.open_table(USAGE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let mut used = 0u64;
        for t in tables.iter().collect::<BTreeSet<_>>() {
            used = used.saturating_add(usage.get(t.as_str()).map_err(io)?.map_or(0, |v| v.value()));
        }
        Ok(used)
    }

    /// Removes every table `plugin` owns, in one transaction.
    pub fn purge(&self, plugin: &str) -> Result<Purged, DbError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut purged = Purged::default();
        {
            let mut owners = txn.open_table(OWNER).map_err(io)?;
            let mut usage = txn.open_table(USAGE).map_err(io)?;
            let mut mine = Vec::new();
            for entry in owners.iter().map_err(io)? {
                let (table, owner) = entry.map_err(io)?;
                if owner.value() == plugin {
                    mine.push(table.value().to_string());
                }
            }
            for table in mine {
                let name = data_name(&table);
                let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
                txn.delete_table(def).map_err(io)?;
                owners.remove(table.as_str()).map_err(io)?;
                if let Some(bytes) = usage.remove(table.as_str()).map_err(io)? {
                    purged.bytes = purged.bytes.saturating_add(bytes.value());
                }
                purged.tables.push(table);
            }
        }
        txn.commit().map_err(io)?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(table: &'a str, key: &'a str, value: &'a [u8], quota: u64) -> Put<'a> {
        Put {
            table,
            key,
            value,
            counted: &[],
            quota,
            owner: Some("p"),
        }
    }

    #[test]
    fn puts_are_counted_and_a_refused_put_changes_nothing() {
        let dir = tempfile::tempdir().expect("succeeds");
        let db = Db::open(&dir.path().join("kv.redb")).expect("succeeds");
        db.put(&put("p_t", "k1", b"12345", 20)).expect("succeeds");
        assert_eq!(db.usage(&["p_t".into()]).expect("succeeds"), 7);
        let err = db
            .put(&put("p_t", "k2", &[b'x'; 20], 20))
            .expect_err("refused");
        assert!(
            matches!(err, DbError::Quota { quota: 20, used: 7 }),
            "{err}"
        );
        assert_eq!(db.get("p_t", "k2").expect("succeeds"), None);
        assert_eq!(db.usage(&["p_t".into()]).expect("succeeds"), 7);
        // Overwriting with something smaller is always allowed.
        db.put(&put("p_t", "k1", b"1", 0)).expect("succeeds");
        assert_eq!(db.usage(&["p_t".into()]).expect("succeeds"), 3);
        assert!(db.delete("p_t", "k1").expect("succeeds"));
        assert!(!db.delete("p_t", "k1").expect("succeeds"));
        assert_eq!(db.usage(&["p_t".into()]).expect("succeeds"), 0);
    }

    #[test]
    fn lists_page_in_byte_order_within_the_prefix() {
        let dir = tempfile::tempdir().expect("succeeds");
        let db = Db::open(&dir.path().join("kv.redb")).expect("succeeds");
        for k in ["a1", "b1", "b2", "b3", "c1"] {
            db.put(&put("p_t", k, b"1", 1000)).expect("succeeds");
        }
        let (keys, next) = db.list("p_t", "b", None, 2).expect("succeeds");
        assert_eq!(keys, ["b1", "b2"]);
        assert_eq!(next.as_deref(), Some("b2"));
        let (keys, next) = db.list("p_t", "b", next.as_deref(), 2).expect("succeeds");
        assert_eq!(keys, ["b3"]);
        assert_eq!(next, None);
        let (keys, _) = db.list("p_t", "", Some("b3"), 10).expect("succeeds");
        assert_eq!(keys, ["c1"]);
        assert_eq!(
            db.list("nothing", "", None, 10).expect("succeeds").0.len(),
            0
        );
    }

    #[test]
    fn a_purge_removes_only_the_owners_tables() {
        let dir = tempfile::tempdir().expect("succeeds");
        let db = Db::open(&dir.path().join("kv.redb")).expect("succeeds");
        db.put(&put("p_t", "k", b"1", 1000)).expect("succeeds");
        let mut other = put("p_tx", "k", b"1", 1000);
        other.owner = Some("p_t");
        db.put(&other).expect("succeeds");
        let mut shared = put("shared", "k", b"1", 1000);
        shared.owner = None;
        db.put(&shared).expect("succeeds");
        let purged = db.purge("p").expect("succeeds");
        assert_eq!(purged.tables, ["p_t"]);
        assert_eq!(purged.bytes, 2);
        assert_eq!(db.get("p_t", "k").expect("succeeds"), None);
        assert!(db.get("p_tx", "k").expect("succeeds").is_some());
        assert!(db.get("shared", "k").expect("succeeds").is_some());
    }

    #[test]
    fn a_corrupt_file_is_an_open_error_naming_it() {
        let dir = tempfile::tempdir().expect("succeeds");
        let path = dir.path().join("kv.redb");
        std::fs::write(&path, vec![0x5a; 4096]).expect("succeeds");
        let err = Db::open(&path).expect_err("refused");
        assert!(err.to_string().contains("kv.redb"), "{err}");
    }
}
