//! The hostile plugin's answer to every attack, and assertions on it.

use serde::Deserialize;

/// `{"attempted", "ok", "errno", "detail", "value"}` as the hostile
/// plugin replies (tests/plugins/hostile/src/attempt.rs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// The system call(s) made.
    pub attempted: String,
    /// Whether the forbidden thing succeeded.
    pub ok: bool,
    /// errno of the failing call.
    pub errno: Option<i32>,
    pub detail: String,
    /// A count, where the attack measures one.
    pub value: Option<u64>,
}

impl Attempt {
    /// Decodes a reply; panics (naming the bytes) if it is not an Attempt.
    pub fn from_output(output: &[u8]) -> Attempt {
        serde_json::from_slice(output).unwrap_or_else(|e| {
            panic!(
                "the hostile plugin's reply is not an attempt ({e}): {}",
                String::from_utf8_lossy(output)
            )
        })
    }

    /// Asserts the attempt failed inside the sandbox with `errno`.
    #[track_caller]
    pub fn assert_denied(&self, errno: i32) -> &Attempt {
        assert!(
            !self.ok,
            "ESCAPE: `{}` succeeded inside the sandbox: {}",
            self.attempted, self.detail
        );
        assert_eq!(
            self.errno.map(errno_name),
            Some(errno_name(errno)),
            "`{}` failed, but not with the expected errno: {}",
            self.attempted,
            self.detail
        );
        self
    }

    /// Asserts the attempt succeeded (a positive control).
    #[track_caller]
    pub fn assert_succeeded(&self) -> &Attempt {
        assert!(
            self.ok,
            "`{}` should have worked inside the sandbox but failed: {}",
            self.attempted, self.detail
        );
        self
    }

    /// The count the attack measured; panics if it reported none.
    #[track_caller]
    pub fn value(&self) -> u64 {
        self.value
            .unwrap_or_else(|| panic!("`{}` reported no value: {}", self.attempted, self.detail))
    }
}

/// `EACCES (13)`: errnos in messages, by name.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "errno",
    };
    format!("{name} ({errno})")
}
