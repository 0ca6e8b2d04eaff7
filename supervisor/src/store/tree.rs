//! Reading a package directory without trusting it: every name is opened
//! relative to its parent's descriptor, never through a symbolic link
//! (`O_NOFOLLOW`; the path given is resolved with `RESOLVE_NO_SYMLINKS`),
//! and non-blocking, so a FIFO or a device cannot stall the daemon. What
//! is opened must be what was listed (same device and inode) and must not
//! change while it is read (same size and modification time, as many
//! bytes as it said); anything else is refused. Files are hashed as they
//! are copied, so the digest covers exactly the bytes stored, and counted
//! against the package limits as they are written.

use super::eyes::Switch;
use super::{PackageLimits, invalid};
use corral_protocol::error::{CorralError, ErrorKind};
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Deepest directory nesting a package may have.
const MAX_DEPTH: usize = 64;

/// One entry of a package, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Dir,
    File {
        executable: bool,
        bytes: u64,
        sha256: [u8; 32],
    },
    Symlink {
        target: PathBuf,
    },
}

/// A package's entries and digest.
#[derive(Debug)]
pub(super) struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
    pub digest: String,
}

fn io_denied(what: &Path, e: nix::Error) -> CorralError {
    match e {
        nix::Error::EACCES | nix::Error::EPERM => CorralError::new(
            ErrorKind::PermissionDenied {
                permission: Some(format!("read {}", what.display())),
            },
            format!(
                "{} cannot be read with the requesting user's permissions",
                what.display()
            ),
        ),
        nix::Error::ELOOP => invalid(format!(
            "{} is or passes through a symbolic link, which an install does not follow",
            what.display()
        )),
        e => invalid(format!("{}: {e}", what.display())),
    }
}

/// Opens an absolute path for reading without following any symbolic
/// link on the way, non-blocking.
pub(super) fn open_path(path: &Path) -> Result<OwnedFd, CorralError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: open_how is plain data; every field is set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the path and `how` of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io_denied(path, nix::Error::last()));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Same object, unchanged: device, inode, size, modification time.
fn same(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev
        && a.st_ino == b.st_ino
        && a.st_size == b.st_size
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
}

fn changed(rel: &Path) -> CorralError {
    invalid(format!("{} changed while it was being read", rel.display()))
}

/// What a walk does besides hashing: copy into `dest` (a directory only
/// the daemon writes), with the package limits.
pub(super) struct Walk<'a> {
    pub switch: &'a mut Switch,
    pub limits: PackageLimits,
    pub dest: Option<&'a Path>,
}

impl Walk<'_> {
    fn as_peer(&mut self) -> Result<(), CorralError> {
        self.switch
            .peer()
            .map_err(|e| CorralError::internal(format!("taking the client's credentials: {e}")))
    }

    fn as_daemon(&mut self) -> Result<(), CorralError> {
        self.switch.daemon().map_err(|e| {
            CorralError::internal(format!("taking back the daemon's credentials: {e}"))
        })
    }

    /// Walks the directory open at `root` (shown as `shown` in messages).
    pub fn run(mut self, root: &OwnedFd, shown: &Path) -> Result<Tree, CorralError> {
        let mut entries = BTreeMap::new();
        let mut total = 0u64;
        self.as_peer()?;
        // A fresh open of "." reads the listing from its start whatever
        // an earlier walk did with `root`.
        let first = openat(
            root.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_denied(shown, e))?;
        let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(first, PathBuf::new())];
        while let Some((dir_fd, rel)) = stack.pop() {
            if rel.components().count() > MAX_DEPTH {
                return Err(invalid(format!(
                    "{}: nested deeper than {MAX_DEPTH} directories",
                    rel.display()
                )));
            }
            self.as_peer()?;
            let names = list(&dir_fd).map_err(|e| io_denied(&shown.join(&rel), e))?;
            for name in names {
                let child_rel = rel.join(&name);
                let shown_child = shown.join(&child_rel);
                self.as_peer()?;
                let st = fstatat(
                    dir_fd.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_denied(&shown_child, e))?;
                let entry = match kind(&st) {
                    SFlag::S_IFDIR => {
                        let fd = openat(
                            dir_fd.as_fd(),
                            name.as_os_str(),
                            OFlag::O_RDONLY
                                | OFlag::O_DIRECTORY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_NONBLOCK
                                | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| io_denied(&shown_child, e))?;
                        let now = fstat(fd.as_fd()).map_err(|e| io_denied(&shown_child, e))?;
                        if now.st_dev != st.st_dev || now.st_ino != st.st_ino {
                            return Err(changed(&child_rel));
                        }
                        if let Some(dest) = self.dest {
                            self.as_daemon()?;
                            let d = dest.join(&child_rel);
                            std::fs::create_dir(&d)
                                .and_then(|()| {
                                    std::fs::set_permissions(
                                        &d,
                                        std::fs::Permissions::from_mode(0o755),
                                    )
                                })
                                .map_err(|e| store_error(&d, e))?;
                        }
                        stack.push((fd, child_rel.clone()));
                        Entry::Dir
                    }
                    SFlag::S_IFLNK => {
                        let target = PathBuf::from(
                            readlinkat(dir_fd.as_fd(), name.as_os_str())
                                .map_err(|e| io_denied(&shown_child, e))?,
                        );
                        super::check_symlink(&child_rel, &target).map_err(invalid)?;
                        if let Some(dest) = self.dest {
                            self.as_daemon()?;
                            let d = dest.join(&child_rel);
                            std::os::unix::fs::symlink(&target, &d)
                                .map_err(|e| store_error(&d, e))?;
                        }
                        Entry::Symlink { target }
                    }
                    SFlag::S_IFREG => {
                        let budget = self.limits.max_bytes.saturating_sub(total);
                        let entry =
                            self.file(&dir_fd, name.as_os_str(), &st, &child_rel, budget)?;
                        if let Entry::File { bytes, .. } = &entry {
                            total = total.saturating_add(*bytes);
                        }
                        entry
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{}: only files, directories and relative symlinks are allowed (this is a FIFO, socket or device)",
                            child_rel.display()
                        )));
                    }
                };
                entries.insert(child_rel, entry);
                if entries.len() > self.limits.max_files {
                    return Err(invalid(format!(
                        "more than {} files",
                        self.limits.max_files
                    )));
                }
            }
        }
        self.as_daemon()?;
        let digest = digest(&entries);
        Ok(Tree { entries, digest })
    }

    /// Hashes (and copies) one regular file, counting its bytes against
    /// `budget` as they are read.
    fn file(
        &mut self,
        dir_fd: &OwnedFd,
        name: &OsStr,
        listed: &FileStat,
        rel: &Path,
        budget: u64,
    ) -> Result<Entry, CorralError> {
        self.as_peer()?;
        let fd = openat(
            dir_fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_denied(rel, e))?;
        let before = fstat(fd.as_fd()).map_err(|e| io_denied(rel, e))?;
        if kind(&before) != SFlag::S_IFREG || !same(listed, &before) {
            return Err(changed(rel));
        }
        self.as_daemon()?;
        let mut out = match self.dest {
            Some(dest) => {
                let d = dest.join(rel);
                Some(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&d)
                        .map_err(|e| store_error(&d, e))?,
                )
            }
            None => None,
        };
        let mut file = std::fs::File::from(fd);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(invalid(format!("{}: {e}", rel.display()))),
            };
            if n == 0 {
                break;
            }
            seen += n as u64;
            if seen > budget {
                return Err(invalid(format!(
                    "larger than {} bytes",
                    self.limits.max_bytes
                )));
            }
            hasher.update(&buf[..n]);
            if let Some(out) = &mut out {
                out.write_all(&buf[..n])
                    .map_err(|e| CorralError::internal(format!("writing the store: {e}")))?;
            }
        }
        let after = fstat(file.as_fd()).map_err(|e| io_denied(rel, e))?;
        if !same(&before, &after) || seen != before.st_size as u64 {
            return Err(changed(rel));
        }
        let executable = before.st_mode & 0o111 != 0;
        if let Some(out) = out {
            let mode = if executable { 0o755 } else { 0o644 };
            out.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| CorralError::internal(format!("writing the store: {e}")))?;
        }
        Ok(Entry::File {
            executable,
            bytes: seen,
            sha256: hasher.finalize().into(),
        })
    }
}

fn store_error(path: &Path, e: std::io::Error) -> CorralError {
    CorralError::internal(format!("writing {}: {e}", path.display()))
}

/// The names in a directory, sorted, without `.` and `..`.
fn list(dir: &OwnedFd) -> Result<Vec<PathBuf>, nix::Error> {
    let dup = nix::unistd::dup(dir.as_fd())?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(PathBuf::from(OsStr::from_bytes(name)));
    }
    names.sort();
    Ok(names)
}

/// The digest covers paths, kinds, the executable bit, sizes and content
/// hashes, in path order, so the same package always lands in the same
/// directory.
fn digest(entries: &BTreeMap<PathBuf, Entry>) -> String {
    let mut hasher = Sha256::new();
    for (rel, entry) in entries {
        let path = rel.as_os_str().as_bytes();
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path);
        match entry {
            Entry::Dir => hasher.update(b"d"),
            Entry::Symlink { target } => {
                let t = target.as_os_str().as_bytes();
                hasher.update(b"l");
                hasher.update((t.len() as u64).to_le_bytes());
                hasher.update(t);
            }
            Entry::File {
                executable,
                bytes,
                sha256,
            } => {
                hasher.update(if *executable { b"x" } else { b"f" });
                hasher.update(bytes.to_le_bytes());
                hasher.update(sha256);
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
