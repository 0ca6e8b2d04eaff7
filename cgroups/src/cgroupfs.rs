//! Reading and writing cgroupfs files.
//!
//! cgroupfs is files, but with rules of its own: a write must be one
//! `write(2)` of the whole value, files are never created by us (a missing
//! interface file means the controller or feature is absent, which the
//! callers turn into [`CgroupError::Unsupported`]), and values come as a
//! number, `max`, or flat-keyed `key value` lines.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Resource};

pub(crate) const CGROUP_PROCS: &str = "cgroup.procs";

/// Writes `value` to an existing cgroupfs file in one `write(2)`.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    // No O_CREAT: creating a missing interface file would hide an absent
    // controller (and in a test tree, fake one).
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::io(format!("write {value:?} to"), path, source))
}

/// Like [`write`], but a missing file means `resource` is unsupported.
pub(crate) fn write_limit(resource: Resource, path: &Path, value: &str) -> Result<(), CgroupError> {
    match write(path, value) {
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            Err(unsupported_file(resource, path))
        }
        other => other,
    }
}

pub(crate) fn unsupported_file(resource: Resource, path: &Path) -> CgroupError {
    CgroupError::Unsupported {
        resource,
        missing: format!("{} does not exist", path.display()),
    }
}

/// Writes a value that undoes a limit. A missing file is fine: without
/// the controller there is nothing to undo.
pub(crate) fn write_reset(path: &Path, value: &str) -> Result<(), CgroupError> {
    match write(path, value) {
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::io("read", path, source))
}

/// Reads a file that may legitimately be absent (controller not enabled,
/// older kernel).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(source) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::io("read", path, source)),
    }
}

fn parse_error(path: &Path, content: &str, reason: impl Into<String>) -> CgroupError {
    // Interface files are short; a long one is cut so the error stays a line.
    let mut content = content.to_string();
    if content.len() > 200 {
        let mut cut = 200;
        while !content.is_char_boundary(cut) {
            cut -= 1;
        }
        content.truncate(cut);
        content.push_str("...");
    }
    CgroupError::Parse {
        path: path.to_path_buf(),
        content,
        reason: reason.into(),
    }
}

/// Parses a single-number file such as `memory.current`.
pub(crate) fn parse_u64(path: &Path, content: &str) -> Result<u64, CgroupError> {
    let trimmed = content.trim();
    trimmed
        .parse::<u64>()
        .map_err(|e| parse_error(path, content, format!("expected an unsigned integer: {e}")))
}

/// Reads a single-number file; `Ok(0)` if it does not exist, because
/// statistics of an absent controller are zero, not an error.
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64, CgroupError> {
    match read_optional(path)? {
        Some(content) => parse_u64(path, &content),
        None => Ok(0),
    }
}

/// Finds `key` in flat-keyed content (`key value` per line, as in
/// `memory.events`, `pids.events`, `cpu.stat`, `memory.oom_control`).
/// `Ok(None)` if the key is absent; a present key with a bad value is an
/// error.
pub(crate) fn parse_flat_keyed(
    path: &Path,
    content: &str,
    key: &str,
) -> Result<Option<u64>, CgroupError> {
    for line in content.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some(key) {
            continue;
        }
        let value = fields
            .next()
            .ok_or_else(|| parse_error(path, content, format!("key {key:?} has no value")))?;
        let value = value.parse::<u64>().map_err(|e| {
            parse_error(
                path,
                content,
                format!("value of {key:?} is not an unsigned integer: {e}"),
            )
        })?;
        return Ok(Some(value));
    }
    Ok(None)
}

/// Reads `key` from a flat-keyed file; 0 when the file or the key is
/// absent (older kernels lack e.g. `oom_kill` in `memory.oom_control`).
pub(crate) fn read_flat_keyed_or_zero(path: &Path, key: &str) -> Result<u64, CgroupError> {
    match read_optional(path)? {
        Some(content) => Ok(parse_flat_keyed(path, &content, key)?.unwrap_or(0)),
        None => Ok(0),
    }
}

/// Parses `cgroup.procs`: one pid per line.
pub(crate) fn parse_pids(path: &Path, content: &str) -> Result<Vec<u32>, CgroupError> {
    content
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.parse::<u32>()
                .map_err(|e| parse_error(path, content, format!("bad pid {line:?}: {e}")))
        })
        .collect()
}

pub(crate) fn read_pids(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join(CGROUP_PROCS);
    let content = read(&path)?;
    parse_pids(&path, &content)
}

/// Like [`read_pids`], but a cgroup that is gone holds no processes.
pub(crate) fn read_pids_or_empty(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join(CGROUP_PROCS);
    match read_optional(&path)? {
        Some(content) => parse_pids(&path, &content),
        None => Ok(Vec::new()),
    }
}

/// Moves one process into the cgroup at `dir`.
pub(crate) fn attach(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    write(&dir.join(CGROUP_PROCS), &pid.to_string())
}

/// Creates a cgroup directory; an existing one is accepted (a base from
/// an earlier run, or a stale leaf). Returns whether it was created.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(source) if source.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::io("create directory", path, source)),
    }
}

/// Removes a cgroup directory, idempotently. EBUSY is retried until
/// `deadline`: after the last process of a cgroup is gone from
/// `cgroup.procs` the kernel may still count it as populated for a moment
/// while the exiting task finishes `do_exit`.
pub(crate) fn rmdir(path: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let mut pause = Duration::from_micros(200);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(source) if source.kind() == ErrorKind::NotFound => return Ok(()),
            Err(source)
                if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
            {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => return Err(CgroupError::io("remove directory", path, source)),
        }
    }
}

/// Names of the subdirectories of `dir` (child cgroups). A missing `dir`
/// has none.
pub(crate) fn subdirectories(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) if source.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CgroupError::io("list directory", dir, source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::io("list directory", dir, source))?;
        let file_type = entry
            .file_type()
            .map_err(|source| CgroupError::io("stat", entry.path(), source))?;
        if !file_type.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(raw) => tracing::warn!(
                dir = %dir.display(),
                name = ?raw,
                "ignoring a cgroup whose name is not UTF-8"
            ),
        }
    }
    names.sort();
    Ok(names)
}

/// The controllers listed in a `cgroup.controllers` or
/// `cgroup.subtree_control` file. The kernel prints `cpu memory pids`;
/// a test tree may hold what we wrote (`+cpu +memory`), so a leading `+`
/// is dropped.
pub(crate) fn parse_controller_list(content: &str) -> Vec<String> {
    content
        .split_whitespace()
        .map(|token| token.trim_start_matches('+').to_string())
        .collect()
}

/// Sends SIGKILL to `pid`. A process that is already gone is not an error.
pub(crate) fn sigkill(pid: u32) -> Result<(), io::Error> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    let rc = unsafe { libc::kill(raw, libc::SIGKILL) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_finds_the_key_and_rejects_bad_values() {
        let path = Path::new("/x/memory.events");
        let content = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(
            parse_flat_keyed(path, content, "oom_kill").ok(),
            Some(Some(2))
        );
        assert_eq!(parse_flat_keyed(path, content, "max").ok(), Some(Some(17)));
        assert_eq!(parse_flat_keyed(path, content, "absent").ok(), Some(None));
        let err = parse_flat_keyed(path, "oom_kill lots\n", "oom_kill")
            .expect_err("a non-numeric value must be rejected");
        assert!(err.to_string().contains("memory.events"), "{err}");
        assert!(parse_flat_keyed(path, "oom_kill\n", "oom_kill").is_err());
    }

    #[test]
    fn pids_parse_and_reject_garbage() {
        let path = Path::new("/x/cgroup.procs");
        assert_eq!(parse_pids(path, "12\n345\n\n").ok(), Some(vec![12, 345]));
        assert_eq!(parse_pids(path, "").ok(), Some(vec![]));
        let err = parse_pids(path, "12\nabc\n").expect_err("garbage must be rejected");
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn single_numbers_parse_with_trailing_newline() {
        let path = Path::new("/x/memory.current");
        assert_eq!(parse_u64(path, "4096\n").ok(), Some(4096));
        assert!(parse_u64(path, "max\n").is_err());
        assert!(parse_u64(path, "-1\n").is_err());
    }

    #[test]
    fn controller_lists_accept_kernel_and_written_forms() {
        assert_eq!(
            parse_controller_list("cpu memory pids\n"),
            ["cpu", "memory", "pids"]
        );
        assert_eq!(parse_controller_list("+memory +pids"), ["memory", "pids"]);
    }

    #[test]
    fn parse_errors_cut_long_content() {
        let long = "x".repeat(1000);
        let err = parse_u64(Path::new("/x/f"), &long).expect_err("not a number");
        assert!(err.to_string().len() < 400, "{err}");
    }
}
