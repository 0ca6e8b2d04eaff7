//! Files, with the path in every error.
//!
//! `std::io::Error` does not carry the path it concerns, so a handler that
//! passes `std::fs::read(p)?` on gives its caller "Permission denied (os
//! error 13)" and no way to tell which path the sandbox refused. The
//! functions here are `std::fs`'s, with the path (and the operation) put
//! into the error; [`WithPath::with_path`] does the same for any
//! `io::Result`. Passed on with `?`, such an error becomes a reply whose
//! message names the path; a refusal (`EACCES`, `EPERM`: outside the paths
//! the plugin's `[permissions]` were granted, which the sandbox's Landlock
//! rules enforce) gets the code [`codes::PERMISSION_DENIED`](crate::codes::PERMISSION_DENIED).
//!
//! ```no_run
//! use corral_sdk::fs::{self, WithPath};
//! # fn handler() -> Result<(), corral_sdk::Error> {
//! let config = fs::read_to_string("/etc/myapp.toml")?;
//! let log = std::fs::File::create("/var/log/myapp.log").with_path("create", "/var/log/myapp.log")?;
//! # let _ = (config, log); Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An I/O error about one path: what was done, the path, the cause.
#[derive(Debug)]
pub struct PathError {
    pub operation: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.operation,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Puts the path into an `io::Result`'s error.
pub trait WithPath<T> {
    fn with_path(self, operation: &'static str, path: impl AsRef<Path>) -> io::Result<T>;
}

impl<T> WithPath<T> for io::Result<T> {
    fn with_path(self, operation: &'static str, path: impl AsRef<Path>) -> io::Result<T> {
        self.map_err(|source| {
            io::Error::new(
                source.kind(),
                PathError {
                    operation,
                    path: path.as_ref().to_path_buf(),
                    source,
                },
            )
        })
    }
}

/// The [`PathError`] inside `e`, if it has one.
pub fn path_error(e: &io::Error) -> Option<&PathError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<PathError>())
}

/// Whether `e` is a refusal: `EACCES` or `EPERM`, directly or inside a
/// [`PathError`].
pub fn is_refusal(e: &io::Error) -> bool {
    let errno = path_error(e)
        .map(|p| p.source.raw_os_error())
        .unwrap_or_else(|| e.raw_os_error());
    matches!(errno, Some(libc_errno::EACCES | libc_errno::EPERM))
}

/// The two errno values, without a libc dependency.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
}

pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    std::fs::read(path.as_ref()).with_path("read", path)
}

pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    std::fs::read_to_string(path.as_ref()).with_path("read", path)
}

pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    std::fs::write(path.as_ref(), contents).with_path("write", path)
}

pub fn open(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    std::fs::File::open(path.as_ref()).with_path("open", path)
}

pub fn create(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    std::fs::File::create(path.as_ref()).with_path("create", path)
}

pub fn read_dir(path: impl AsRef<Path>) -> io::Result<std::fs::ReadDir> {
    std::fs::read_dir(path.as_ref()).with_path("list", path)
}

pub fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    std::fs::create_dir_all(path.as_ref()).with_path("create directory", path)
}

pub fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    std::fs::metadata(path.as_ref()).with_path("stat", path)
}

pub fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    std::fs::remove_file(path.as_ref()).with_path("remove", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_and_a_refusal_survive_into_the_reply() {
        let refused: io::Result<()> = Err(io::Error::from_raw_os_error(13));
        let e = refused
            .with_path("read", "/etc/shadow")
            .expect_err("refused");
        assert!(is_refusal(&e));
        assert_eq!(
            path_error(&e).map(|p| p.path.clone()),
            Some(PathBuf::from("/etc/shadow"))
        );
        let reply = crate::Error::from(e);
        assert_eq!(reply.code(), crate::codes::PERMISSION_DENIED);
        assert!(
            reply
                .message()
                .contains("read /etc/shadow: Permission denied"),
            "{}",
            reply.message()
        );
        assert!(
            reply.message().contains("[permissions]"),
            "{}",
            reply.message()
        );

        let missing = read("/nonexistent/corral-sdk-test").expect_err("missing");
        assert!(!is_refusal(&missing));
        let reply = crate::Error::from(missing);
        assert_eq!(reply.code(), crate::codes::IO);
        assert!(reply.message().contains("/nonexistent/corral-sdk-test"));
    }
}
