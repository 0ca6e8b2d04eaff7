//! The plugin itself: the engine range, the runtime, the package
//! directory and the entry inside it. Decided first, since every later
//! mechanism names the package (Landlock's read+exec rule, the working
//! directory, the mounts) and whether the entry is dynamically linked
//! decides whether the loader and libraries are reachable.

use super::{CompileError, Context, Recorder};
use crate::policy::runtimes::{self, ScriptLaunch};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The package as the plugin will run it.
pub(super) struct Package {
    /// Canonical package directory: the working directory and the only
    /// place with read+exec rights besides the runtime.
    pub dir: PathBuf,
    /// Canonical path of the entry, inside `dir`.
    pub entry: PathBuf,
    /// The entry (or a script's interpreter) asks for a program
    /// interpreter (ld.so).
    pub dynamic: bool,
    /// How a script plugin's runtime runs its entry; `None` for a native
    /// plugin, whose entry is the program.
    pub script: Option<ScriptLaunch>,
}

pub(super) fn resolve(
    cx: &Context<'_>,
    package_dir: &Path,
    engine: &semver::Version,
    rec: &mut Recorder<'_>,
) -> Result<Package, CompileError> {
    let plugin = &cx.manifest.plugin;
    if !plugin.engine.matches(engine) {
        return Err(cx.manifest_error(
            "plugin.engine",
            format!(
                "`{}` does not include this corrald ({engine})",
                plugin.engine
            ),
        ));
    }
    let dir = package_dir
        .canonicalize()
        .map_err(|e| cx.manifest_error("(package)", format!("{}: {e}", package_dir.display())))?;
    // Inside the sandbox the scratch tmpfs covers its mount point; what
    // the plugin needs beneath it is bind-mounted back ("kept"), which
    // cannot work for the mount point itself.
    let scratch_path = cx.policy.sandbox.scratch_path.as_path();
    if dir == scratch_path {
        return Err(cx.manifest_error(
            "(package)",
            format!(
                "the package directory is the scratch mount point {}; move the package into a directory of its own",
                scratch_path.display()
            ),
        ));
    }
    // A script plugin's entry is data its runtime's program runs.
    let script = runtimes::prepare(cx.manifest, cx.manifest_file, &dir, cx.policy)?;
    let (entry, dynamic) = match &script {
        Some(launch) => (launch.entry.clone(), launch.dynamic),
        None => {
            let entry = check_entry(&dir, plugin.entry.as_str())
                .map_err(|reason| cx.manifest_error("plugin.entry", reason))?;
            let dynamic = elf_is_dynamic(&entry)
                .map_err(|reason| cx.manifest_error("plugin.entry", reason))?;
            (entry, dynamic)
        }
    };
    rec.cite_manifest("entry", entry.display(), "plugin.entry");
    Ok(Package {
        dir,
        entry,
        dynamic,
        script,
    })
}

/// `entry` resolved (links followed) to a path that must stay inside the
/// package: what a native entry and a script entry both start from.
pub(crate) fn resolve_in_package(package_dir: &Path, entry: &str) -> Result<PathBuf, String> {
    let path = package_dir.join(entry);
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !resolved.starts_with(package_dir) {
        return Err(format!(
            "{} resolves to {}, outside the package",
            path.display(),
            resolved.display()
        ));
    }
    Ok(resolved)
}

/// Resolves the entry inside the package and checks plugin uids can run it.
fn check_entry(package_dir: &Path, entry: &str) -> Result<PathBuf, String> {
    let resolved = resolve_in_package(package_dir, entry)?;
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", resolved.display()));
    }
    // Plugins run as unprivileged uids of their own: the entry and every
    // directory above it must be open to "others".
    if meta.permissions().mode() & 0o005 != 0o005 {
        return Err(format!(
            "{} is mode {:o}; plugins run as their own uid and need it readable and executable by others (chmod o+rx)",
            resolved.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    for dir in resolved.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if mode & 0o001 == 0 {
            return Err(format!(
                "directory {} is mode {:o}; plugins run as their own uid and cannot reach their entry through it (chmod o+x, or install the package into corral's store)",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(resolved)
}

/// True when the ELF executable asks for a program interpreter (is
/// dynamically linked).
pub(crate) fn elf_is_dynamic(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header = [0u8; 64];
    let n = file
        .read(&mut header)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if n < 64 || &header[..4] != b"\x7fELF" {
        return Err(format!(
            "{} is not an ELF executable; runtime \"native\" runs compiled programs",
            path.display()
        ));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(format!(
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    let phoff = u64::from_le_bytes(header[32..40].try_into().map_err(|_| "bad ELF header")?);
    let phentsize = u64::from(u16_at(54));
    let phnum = u64::from(u16_at(56));
    if phentsize < 4 || phnum > 4096 {
        return Err(format!(
            "{} has a malformed program header table",
            path.display()
        ));
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|e| format!("{}: program headers: {e}", path.display()))?;
    const PT_INTERP: u32 = 3;
    Ok(table
        .chunks_exact(phentsize as usize)
        .any(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP))
}
