//! Capability sets: the bounding set, the ambient set, and the
//! permitted/effective/inheritable sets via `capget`/`capset`.
//!
//! Shared by the `credentials` step (in the initial user namespace) and
//! the `user_namespace` step (whose new namespace grants a full set again,
//! which must be thrown away before the plugin runs).

use crate::error::{SandboxError, Step};
use nix::errno::Errno;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The three per-thread sets, as 64-bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// The highest capability number this kernel knows.
pub fn last_cap(step: Step) -> Result<u32, SandboxError> {
    const PATH: &str = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(PATH)
        .map_err(|e| SandboxError::io(step, &e, format_args!("read {PATH}")))?;
    parse_last_cap(&text).ok_or_else(|| {
        SandboxError::new(
            step,
            format!("{PATH} holds {:?}, not a capability number", text.trim()),
        )
    })
}

pub(crate) fn parse_last_cap(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|&n| n < 64)
}

/// Drops every capability from the bounding set, so that no execve can
/// ever grant one again (file capabilities included).
pub fn drop_bounding_set(step: Step, last_cap: u32) -> Result<(), SandboxError> {
    for cap in 0..=last_cap {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(cap),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(SandboxError::sys(
                step,
                Errno::last(),
                format_args!("drop capability {cap} from the bounding set"),
            ));
        }
    }
    Ok(())
}

/// Empties the ambient set, which would otherwise survive execve.
pub fn clear_ambient(step: Step) -> Result<(), SandboxError> {
    // SAFETY: no pointers are passed.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            step,
            Errno::last(),
            "clear the ambient capabilities",
        ));
    }
    Ok(())
}

pub fn get(step: Step) -> Result<CapSets, SandboxError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array are what version 3 of
    // the capget ABI reads and writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            step,
            Errno::last(),
            "read the capability sets",
        ));
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok(CapSets {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

/// Empties the effective, permitted and inheritable sets. setresuid
/// empties the first two when leaving uid 0 but keeps the inheritable set,
/// which a file's inheritable capabilities could turn back into permitted
/// ones at execve.
pub fn clear_all(step: Step) -> Result<(), SandboxError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array are what version 3 of
    // the capset ABI reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            step,
            Errno::last(),
            "clear the capability sets",
        ));
    }
    Ok(())
}

/// Fails unless every set is empty.
pub fn verify_empty(step: Step) -> Result<(), SandboxError> {
    let sets = get(step)?;
    if sets.effective != 0 || sets.permitted != 0 || sets.inheritable != 0 {
        return Err(SandboxError::new(
            step,
            format!(
                "capabilities remain after dropping them: effective {:#x}, permitted {:#x}, \
                 inheritable {:#x}",
                sets.effective, sets.permitted, sets.inheritable
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_cap_parses_the_kernel_file_and_rejects_junk() {
        assert_eq!(parse_last_cap("40\n"), Some(40));
        assert_eq!(parse_last_cap("63"), Some(63));
        assert_eq!(parse_last_cap("64"), None, "caps are 64-bit masks");
        assert_eq!(parse_last_cap("forty"), None);
        assert_eq!(parse_last_cap(""), None);
    }

    #[test]
    fn last_cap_of_this_kernel_is_readable() {
        let last = last_cap(Step::Credentials).expect("read cap_last_cap");
        // CAP_AUDIT_READ (37) exists since Linux 3.16.
        assert!(last >= 37, "cap_last_cap {last}");
    }

    #[test]
    fn capget_reads_this_process() {
        let sets = get(Step::Credentials).expect("capget");
        assert_eq!(
            sets.effective & !sets.permitted,
            0,
            "effective is a subset of permitted"
        );
    }
}
