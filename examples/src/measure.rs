//! What the benchmarks read off processes: CPU time from `/proc/<pid>/stat`, for the
//! "server CPU per call" figures every side-by-side benchmark reports.

use std::time::Duration;

/// Ticks of `utime`/`stime` in `/proc/<pid>/stat` per second (`USER_HZ`, 100 on Linux).
pub const USER_HZ: f64 = 100.0;

/// User + system CPU time of process `pid` so far (all its threads); `None` where `/proc` is
/// not readable (not Linux, or the process is gone).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold spaces and parentheses):
    // state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        assert!(super::cpu_time(std::process::id()).is_some());
        assert_eq!(super::cpu_time(u32::MAX), None);
    }
}
