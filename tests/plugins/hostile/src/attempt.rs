//! The one reply shape of every attack, so a test can check the forbidden
//! thing really failed, and with which errno.

use serde::Serialize;
use std::io;

/// `{"attempted": ..., "ok": ..., "errno": ..., "detail": ..., "value": ...}`
#[derive(Debug, Serialize)]
pub struct Attempt {
    /// The system call(s) made, with their arguments, e.g. `open("/etc/shadow", O_RDONLY)`.
    pub attempted: String,
    /// Whether the forbidden thing succeeded. In a working sandbox: false.
    pub ok: bool,
    /// errno of the failing call, `null` when it succeeded.
    pub errno: Option<i32>,
    /// What happened, for people.
    pub detail: String,
    /// A count where the attack measures one (fds opened, bytes written, ...).
    pub value: Option<u64>,
}

impl Attempt {
    pub fn succeeded(attempted: impl Into<String>, detail: impl Into<String>) -> Attempt {
        Attempt {
            attempted: attempted.into(),
            ok: true,
            errno: None,
            detail: detail.into(),
            value: None,
        }
    }

    pub fn failed(attempted: impl Into<String>, err: &io::Error) -> Attempt {
        Attempt {
            attempted: attempted.into(),
            ok: false,
            errno: err.raw_os_error(),
            detail: err.to_string(),
            value: None,
        }
    }

    /// From a libc return value: negative means failed with `errno`.
    pub fn from_ret(attempted: impl Into<String>, ret: i64) -> Attempt {
        if ret < 0 {
            Attempt::failed(attempted, &io::Error::last_os_error())
        } else {
            Attempt::succeeded(attempted, format!("returned {ret}"))
        }
    }

    pub fn with_value(mut self, value: u64) -> Attempt {
        self.value = Some(value);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Attempt {
        self.detail = detail.into();
        self
    }
}

/// Runs a libc call that returns -1 on failure and keeps errno.
pub fn check(ret: i64) -> io::Result<i64> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string; paths come from the caller and may hold NUL.
pub fn c_path(path: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}
