//! What the figures were measured on: CPUs, kernel, memory, cgroup
//! version, and the load average while each benchmark ran (other work on
//! the machine shows up in the figures, so it is recorded with them).

use std::fmt;
use std::time::SystemTime;

/// `/proc/loadavg`'s first three fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl fmt::Display for LoadAvg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2} / {:.2} / {:.2}",
            self.one, self.five, self.fifteen
        )
    }
}

pub fn load_avg() -> Option<LoadAvg> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_loadavg(&text)
}

fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some(LoadAvg {
        one: fields.next()?.ok()?,
        five: fields.next()?.ok()?,
        fifteen: fields.next()?.ok()?,
    })
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_total_mib: u64,
    pub cgroups: String,
    pub bwrap: String,
    pub date_utc: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cgroups =
            if std::path::Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
                "v1 (memory, pids, cpu, cpuacct, freezer)".to_string()
            } else if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "v2".to_string()
            } else {
                "unknown".to_string()
            };
        let cgroups = format!(
            "{cgroups}, favordynmods {}",
            if favordynmods() { "on" } else { "off" }
        );
        let bwrap = std::process::Command::new("bwrap")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "not installed".into());
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel,
            memory_total_mib,
            cgroups,
            bwrap,
            date_utc: utc_now(),
        }
    }
}

/// Whether a cgroup hierarchy favours dynamic changes now (a move into
/// a cgroup then waits for no RCU grace period).
pub fn favordynmods() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| corral_cgroups::favors_dynamic_changes(&m))
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        (rest % 3600) / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_parses() {
        let l = parse_loadavg("0.52 1.10 2.00 1/234 5678\n").expect("parse");
        assert_eq!(l.one, 0.52);
        assert_eq!(l.fifteen, 2.0);
        assert_eq!(l.to_string(), "0.52 / 1.10 / 2.00");
        assert!(parse_loadavg("garbage").is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
