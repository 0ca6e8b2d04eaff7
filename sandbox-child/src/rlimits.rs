//! Step `rlimits`: the resource limits of the policy.
//!
//! Applied after the uid change, so a hard limit can only be lowered: the
//! plugin (and this step) lack CAP_SYS_RESOURCE to raise one back.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{Rlimit, RlimitSpec};
use nix::sys::resource::{Resource, setrlimit};

/// The kernel resource for each policy name.
pub fn resource(rlimit: Rlimit) -> Resource {
    match rlimit {
        Rlimit::Nofile => Resource::RLIMIT_NOFILE,
        Rlimit::Nproc => Resource::RLIMIT_NPROC,
        Rlimit::Core => Resource::RLIMIT_CORE,
        Rlimit::Fsize => Resource::RLIMIT_FSIZE,
        Rlimit::Memlock => Resource::RLIMIT_MEMLOCK,
        Rlimit::Msgqueue => Resource::RLIMIT_MSGQUEUE,
        Rlimit::Stack => Resource::RLIMIT_STACK,
        Rlimit::Nice => Resource::RLIMIT_NICE,
        Rlimit::Rtprio => Resource::RLIMIT_RTPRIO,
        Rlimit::Rttime => Resource::RLIMIT_RTTIME,
        Rlimit::Sigpending => Resource::RLIMIT_SIGPENDING,
        Rlimit::Cpu => Resource::RLIMIT_CPU,
        Rlimit::As => Resource::RLIMIT_AS,
        Rlimit::Data => Resource::RLIMIT_DATA,
    }
}

pub fn apply(limits: &[RlimitSpec]) -> Result<(), SandboxError> {
    for spec in limits {
        if spec.soft > spec.hard {
            return Err(SandboxError::new(
                Step::Rlimits,
                format!(
                    "{}: soft limit {} exceeds hard limit {}",
                    spec.resource.name(),
                    spec.soft,
                    spec.hard
                ),
            ));
        }
        // u64::MAX is RLIM_INFINITY on Linux, so "unlimited" passes through.
        setrlimit(resource(spec.resource), spec.soft, spec.hard).map_err(|e| {
            SandboxError::sys(
                Step::Rlimits,
                e,
                format_args!(
                    "set {} to soft {} hard {}",
                    spec.resource.name(),
                    spec.soft,
                    spec.hard
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Rlimit; 14] = [
        Rlimit::Nofile,
        Rlimit::Nproc,
        Rlimit::Core,
        Rlimit::Fsize,
        Rlimit::Memlock,
        Rlimit::Msgqueue,
        Rlimit::Stack,
        Rlimit::Nice,
        Rlimit::Rtprio,
        Rlimit::Rttime,
        Rlimit::Sigpending,
        Rlimit::Cpu,
        Rlimit::As,
        Rlimit::Data,
    ];

    #[test]
    fn every_rlimit_maps_to_the_libc_constant_of_its_name() {
        let expected = [
            libc::RLIMIT_NOFILE,
            libc::RLIMIT_NPROC,
            libc::RLIMIT_CORE,
            libc::RLIMIT_FSIZE,
            libc::RLIMIT_MEMLOCK,
            libc::RLIMIT_MSGQUEUE,
            libc::RLIMIT_STACK,
            libc::RLIMIT_NICE,
            libc::RLIMIT_RTPRIO,
            libc::RLIMIT_RTTIME,
            libc::RLIMIT_SIGPENDING,
            libc::RLIMIT_CPU,
            libc::RLIMIT_AS,
            libc::RLIMIT_DATA,
        ];
        for (rlimit, constant) in ALL.into_iter().zip(expected) {
            assert_eq!(
                resource(rlimit) as i64,
                constant as i64,
                "{}",
                rlimit.name()
            );
        }
        let mut seen: Vec<i64> = ALL.iter().map(|&r| resource(r) as i64).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ALL.len(), "no two names share a resource");
    }

    #[test]
    fn soft_above_hard_is_refused_naming_the_limit() {
        let err = apply(&[RlimitSpec {
            resource: Rlimit::Nofile,
            soft: 10,
            hard: 5,
        }])
        .expect_err("must be refused");
        assert_eq!(err.step, Step::Rlimits);
        assert!(err.message.contains("RLIMIT_NOFILE"), "{}", err.message);
    }
}
