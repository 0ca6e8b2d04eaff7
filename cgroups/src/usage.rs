//! Reading what a cgroup has used, cheaply and often: once per batch of
//! call replies. [`Cgroup::stats`](crate::Cgroup::stats) opens half a dozen
//! files each time (~8 µs apiece); a probe keeps the two files a call's
//! usage needs open and re-reads them with `pread` at offset 0 (~1 µs),
//! which cgroupfs answers with fresh figures.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// CPU time used and peak memory, as of the read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_us: u64,
    pub memory_peak: u64,
}

#[derive(Debug)]
enum CpuFile {
    /// One number of nanoseconds (v1 `cpuacct.usage`).
    Nanos(File),
    /// `usage_usec N` among other lines (v2 `cpu.stat`).
    Stat(File),
}

#[derive(Debug)]
enum PeakFile {
    /// The kernel's peak (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    Peak(File),
    /// Only the current figure (v2 before 5.19): the probe keeps the
    /// highest it has read.
    Current(File, AtomicU64),
}

/// Files held open for [`UsageProbe::read`]. A figure whose file is missing
/// reads as 0.
#[derive(Debug, Default)]
pub struct UsageProbe {
    cpu: Option<CpuFile>,
    peak: Option<PeakFile>,
}

fn open(path: &Path) -> Option<File> {
    File::open(path).ok()
}

fn pread_text<'a>(file: &File, buf: &'a mut [u8]) -> Option<&'a str> {
    let n = file.read_at(buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

fn parse_number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

impl UsageProbe {
    /// v1: `cpuacct.usage` in the cpuacct hierarchy and
    /// `memory.max_usage_in_bytes` in the memory hierarchy.
    pub(crate) fn v1(cpuacct: Option<&Path>, memory: Option<&Path>) -> UsageProbe {
        UsageProbe {
            cpu: cpuacct
                .and_then(|d| open(&d.join("cpuacct.usage")))
                .map(CpuFile::Nanos),
            peak: memory
                .and_then(|d| open(&d.join("memory.max_usage_in_bytes")))
                .map(PeakFile::Peak),
        }
    }

    /// v2: `cpu.stat`, and `memory.peak` or else `memory.current`.
    pub(crate) fn v2(dir: &Path) -> UsageProbe {
        let peak = match open(&dir.join("memory.peak")) {
            Some(f) => Some(PeakFile::Peak(f)),
            None => {
                open(&dir.join("memory.current")).map(|f| PeakFile::Current(f, AtomicU64::new(0)))
            }
        };
        UsageProbe {
            cpu: open(&dir.join("cpu.stat")).map(CpuFile::Stat),
            peak,
        }
    }

    pub fn read(&self) -> Usage {
        let mut buf = [0u8; 512];
        let cpu_usage_us = match &self.cpu {
            Some(CpuFile::Nanos(f)) => {
                pread_text(f, &mut buf).map(parse_number).unwrap_or(0) / 1000
            }
            Some(CpuFile::Stat(f)) => pread_text(f, &mut buf)
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("usage_usec ")))
                .map(parse_number)
                .unwrap_or(0),
            None => 0,
        };
        let mut buf = [0u8; 64];
        let memory_peak = match &self.peak {
            Some(PeakFile::Peak(f)) => pread_text(f, &mut buf).map(parse_number).unwrap_or(0),
            Some(PeakFile::Current(f, seen)) => {
                let now = pread_text(f, &mut buf).map(parse_number).unwrap_or(0);
                seen.fetch_max(now, Ordering::Relaxed).max(now)
            }
            None => 0,
        };
        Usage {
            cpu_usage_us,
            memory_peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_shaped_files_fresh_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("memory.current"), "4096\n").expect("write");
        let probe = UsageProbe::v2(dir.path());
        assert_eq!(
            probe.read(),
            Usage {
                cpu_usage_us: 1500,
                memory_peak: 4096
            }
        );
        // Rewritten in place (same inode, as cgroupfs updates its files):
        // the held-open files see the new figures.
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 2500\nuser_usec 1000\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("memory.current"), "1024\n").expect("write");
        let again = probe.read();
        assert_eq!(again.cpu_usage_us, 2500);
        assert_eq!(again.memory_peak, 4096, "the highest current seen is kept");
    }

    #[test]
    fn missing_files_read_as_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(UsageProbe::v2(dir.path()).read(), Usage::default());
        assert_eq!(UsageProbe::v1(None, None).read(), Usage::default());
    }

    #[test]
    fn reads_this_hosts_v1_root_counters() {
        let probe = UsageProbe::v1(
            Some(Path::new("/sys/fs/cgroup/cpuacct")),
            Some(Path::new("/sys/fs/cgroup/memory")),
        );
        let a = probe.read();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let b = probe.read();
        assert!(
            b.cpu_usage_us > a.cpu_usage_us,
            "a held-open file re-reads fresh: {a:?} then {b:?}"
        );
        assert!(b.memory_peak > 0);
    }
}
