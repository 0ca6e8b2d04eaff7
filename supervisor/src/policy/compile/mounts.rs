//! Mounts: the parent side of the trampoline's `mounts` and `root`
//! modules. A fresh /proc, the plugin's tmpfs scratch space (sized by
//! `limits.disk`), the operator's remaps, and either the minimal root
//! (every host path the plugin may reach, each bind-mounted into an
//! otherwise empty tmpfs root) or, with `sandbox.minimal_root = false`,
//! the host's tree with the paths beneath the scratch mount point that must
//! stay visible bound back ("kept": the package, granted paths).

use super::entry::Package;
use super::limits::Limits;
use super::permissions::GrantedPath;
use super::{CompileError, Context, Recorder};
use crate::policy::Policy;
use corral_protocol::manifest::HostPath;
use corral_protocol::policy::{
    FsAccess, KeptPath, MinimalRoot, Mounts, Remap, RootPath, TmpfsSpec,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(super) fn plan(
    cx: &Context<'_>,
    package: &Package,
    granted: &[GrantedPath],
    limits: &Limits,
    rec: &mut Recorder<'_>,
) -> Result<Mounts, CompileError> {
    let policy = cx.policy;
    let scratch_path = policy.sandbox.scratch_path.as_path();
    // The tmpfs hides what lies beneath its mount point; the package and
    // granted paths there are bound back (a remapped path is mounted from
    // its source instead).
    let root = policy
        .sandbox
        .minimal_root
        .then(|| minimal_root(cx, package, granted, rec));
    let mut keep: Vec<KeptPath> = Vec::new();
    if root.is_some() {
        // Everything is bound into the new root, beneath the scratch too.
    } else if package.dir.starts_with(scratch_path) {
        keep.push(KeptPath {
            path: package.dir.display().to_string(),
            writable: false,
        });
    }
    for g in granted.iter().filter(|_| !policy.sandbox.minimal_root) {
        if g.path.as_path().starts_with(scratch_path) && !cx.remapped.covers(&g.path) {
            keep.push(KeptPath {
                path: g.path.to_string(),
                writable: g.access == FsAccess::ReadWrite,
            });
        }
    }
    let scratch = policy.sandbox.scratch_path.to_string();
    let disk = limits.disk;
    let mounts = Mounts {
        proc: true,
        scratch: Some(TmpfsSpec {
            path: scratch.clone(),
            size_bytes: disk.0,
            inodes: (disk.0 / 8192).clamp(64, 1 << 20),
            keep: keep.clone(),
        }),
        root,
        remaps: remaps(
            cx.remapped,
            &cx.manifest.permissions.fs.write,
            policy,
            &cx.rules_key("remap"),
            rec,
        )?,
    };
    for k in &keep {
        rec.builtin(
            "scratch.keep",
            format!(
                "{} ({})",
                k.path,
                if k.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            ),
            "beneath the scratch mount point, bind-mounted back",
        );
    }
    rec.cite_policy(
        "scratch",
        format!("{scratch} (tmpfs, {disk})"),
        "sandbox.scratch_path",
    );
    Ok(mounts)
}

/// The host paths of the minimal root: the package (read, exec), the
/// native runtime's files, the loader and libraries of a dynamic entry
/// (read, exec), and the granted paths (never exec). /proc is mounted
/// afresh, and remapped paths are mounted from their sources, so neither
/// is bound from the host. Sorted parents first; a path listed twice gets
/// the union of its rights, except that nothing writable is executable.
fn minimal_root(
    cx: &Context<'_>,
    package: &Package,
    granted: &[GrantedPath],
    rec: &mut Recorder<'_>,
) -> MinimalRoot {
    let native = &cx.policy.runtime.native;
    let mut paths: BTreeMap<Vec<String>, (RootPath, String)> = BTreeMap::new();
    let mut add = |path: &Path, writable: bool, exec: bool, why: String| {
        if path.starts_with("/proc") {
            return;
        }
        let key = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (entry, _) = paths.entry(key).or_insert_with(|| {
            let path = path.display().to_string();
            (
                RootPath {
                    path,
                    writable: false,
                    exec: false,
                },
                why,
            )
        });
        entry.writable |= writable;
        entry.exec = (entry.exec || exec) && !entry.writable;
    };
    // A script plugin's package is data; its interpreter is the program.
    add(
        &package.dir,
        false,
        package.script.is_none(),
        "corral (the plugin's own package)".into(),
    );
    if let Some(launch) = &package.script {
        for (rule, why) in &launch.grants {
            let exec = rule.access == FsAccess::ReadExec;
            add(Path::new(&rule.path), false, exec, why.clone());
        }
    }
    let policy = cx.policy;
    let existing = |list: &[HostPath]| -> Vec<PathBuf> {
        list.iter()
            .filter(|p| p.as_path().exists())
            .map(|p| p.as_path().to_path_buf())
            .collect()
    };
    for p in existing(&native.read) {
        add(&p, false, false, policy.cite("runtime.native.read"));
    }
    for p in existing(&native.read_write) {
        add(&p, true, false, policy.cite("runtime.native.read_write"));
    }
    if package.dynamic {
        for p in existing(&native.dynamic_libraries) {
            let why = policy.cite("runtime.native.dynamic_libraries");
            add(&p, false, true, why);
        }
    }
    for g in granted.iter().filter(|g| !cx.remapped.covers(&g.path)) {
        let writable = g.access == FsAccess::ReadWrite;
        let key = if writable { "fs.write" } else { "fs.read" };
        let why = format!("{} (permissions.{key})", cx.manifest_file);
        add(g.path.as_path(), writable, false, why);
    }
    let (paths, why): (Vec<RootPath>, Vec<String>) = paths.into_values().unzip();
    rec.cite_policy(
        "root",
        "a read-only tmpfs holding only the paths below, /proc, the scratch and the remaps",
        "sandbox.minimal_root",
    );
    for (p, why) in paths.iter().zip(why) {
        let mode = match (p.writable, p.exec) {
            (true, _) => "read-write, not executable",
            (false, true) => "read-only, executable",
            (false, false) => "read-only, not executable",
        };
        rec.cite(format!("root {}", p.path), mode, why);
    }
    MinimalRoot { paths }
}

/// The operator's remaps for one plugin: target (as the plugin sees it)
/// to host source.
#[derive(Clone, Copy)]
pub(super) struct Remapped<'a>(pub Option<&'a BTreeMap<HostPath, HostPath>>);

impl Remapped<'_> {
    /// The deepest remap whose target holds `path`.
    fn find(&self, path: &HostPath) -> Option<(&HostPath, &HostPath)> {
        self.0?
            .iter()
            .filter(|(target, _)| path.is_within(target))
            .max_by_key(|(target, _)| target.as_str().len())
    }

    pub fn covers(&self, path: &HostPath) -> bool {
        self.find(path).is_some()
    }

    /// Where `path`, as the plugin sees it, is on the host.
    pub fn host_path_of(&self, path: &HostPath) -> PathBuf {
        match self.find(path) {
            Some((target, source)) => match path.as_path().strip_prefix(target.as_path()) {
                Ok(rest) if !rest.as_os_str().is_empty() => source.as_path().join(rest),
                _ => source.as_path().to_path_buf(),
            },
            None => path.as_path().to_path_buf(),
        }
    }
}

/// The bind mounts for the remaps, parents first (the map is sorted, and
/// a parent sorts before its children). A source must exist; a target
/// outside the scratch space must exist as the same kind of file, since
/// nothing is created on the host. Writable when the plugin was granted
/// writing beneath the target.
fn remaps(
    remapped: Remapped<'_>,
    writes: &[HostPath],
    policy: &Policy,
    key: &str,
    rec: &mut Recorder<'_>,
) -> Result<Vec<Remap>, CompileError> {
    let Some(map) = remapped.0 else {
        return Ok(Vec::new());
    };
    let scratch = policy.sandbox.scratch_path.as_path();
    let mut out = Vec::with_capacity(map.len());
    for (target, source) in map {
        // The file that set this entry (tables merge key by key).
        let error = |reason: String| CompileError::Policy {
            file: policy.source_of(&format!("{key}.{target}")).to_string(),
            key: format!("{key}.\"{target}\""),
            reason,
        };
        let source_meta = std::fs::metadata(source.as_path())
            .map_err(|e| error(format!("the source {source}: {e}")))?;
        let in_scratch = target.as_path().starts_with(scratch) && target.as_path() != scratch;
        if !in_scratch {
            let target_meta = std::fs::metadata(target.as_path()).map_err(|e| {
                error(format!(
                    "the target {target}: {e}; a remap mounts over an existing path, or beneath the scratch path {} where its mount point is made",
                    scratch.display()
                ))
            })?;
            if target_meta.is_dir() != source_meta.is_dir() {
                return Err(error(format!(
                    "the target {target} and the source {source} must both be directories or both files"
                )));
            }
        }
        let writable = writes.iter().any(|w| w.is_within(target));
        let mode = if writable { "read-write" } else { "read-only" };
        rec.cite(
            format!("mount {target}"),
            format!("{source} ({mode})"),
            format!(
                "{} ({key}.\"{target}\")",
                policy.source_of(&format!("{key}.{target}"))
            ),
        );
        out.push(Remap {
            source: source.to_string(),
            target: target.to_string(),
            writable,
        });
    }
    Ok(out)
}
