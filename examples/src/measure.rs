//! What the benchmarks and the memory tests read off processes: resident memory from
//! `/proc/<pid>/status`, CPU time from `/proc/<pid>/stat`, for the
//! "server CPU per call" figures every side-by-side benchmark reports; and [`table`], the cells
//! of the one markdown table `benches/run.sh` prints from `grpc_vs_tonic` and `volo_bench`.

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

/// Resident memory (`VmRSS`) of process `pid` in bytes; `None` where `/proc` is not readable
/// (not Linux, or the process is gone).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The cells of the issue-17 table both side-by-side benchmarks print (`benches/run.sh`
/// concatenates them, so header and formatting are shared here). A row's rounds are
/// `Result<F, String>`: figures, or why that round failed.
pub mod table {
    /// The table's header (markdown).
    pub const HEADER: &str = "| suite | scenario | client → server | ops/s | p50 µs | p99 µs | srv CPU µs/op | reference | ops/s × ref | srv CPU × ref | bar (issue 17) | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

    /// The median of some values (the mean of the middle two for an even count); non-finite
    /// values are left out, `None` when nothing is left.
    pub fn median(mut v: Vec<f64>) -> Option<f64> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// A figure with `digits` decimals, or `-`.
    pub fn fmt(v: Option<f64>, digits: usize) -> String {
        v.filter(|v| v.is_finite())
            .map_or("-".into(), |v| format!("{v:.digits$}"))
    }

    /// A ratio as a cell: `0.78×`, or `-` where it could not be taken.
    pub fn times(r: Option<f64>) -> String {
        match r.filter(|r| r.is_finite()) {
            Some(r) => format!("{r:.2}×"),
            None => "-".into(),
        }
    }

    /// A failure as a cell: one line, no `|`, at most 60 characters.
    pub fn cell(s: &str) -> String {
        let s: String = s.replace('|', "/").replace('\n', " ");
        if s.chars().count() > 60 {
            format!("{}…", s.chars().take(60).collect::<String>())
        } else {
            s
        }
    }

    /// The ops/s cell: the median of `per_sec` over the rounds, or the failure of the rounds
    /// that had no figures.
    pub fn ops_cell<F>(v: &[Result<F, String>], per_sec: impl Fn(&F) -> f64) -> String {
        let failed: Vec<&String> = v.iter().filter_map(|o| o.as_ref().err()).collect();
        match (
            median(v.iter().flatten().map(per_sec).collect()),
            failed.first(),
        ) {
            (Some(m), None) => format!("{m:.0}"),
            (Some(m), Some(e)) => format!("{m:.0} ({} in {}/{})", cell(e), failed.len(), v.len()),
            (None, Some(e)) => cell(e),
            (None, None) => "-".into(),
        }
    }

    /// Whether a row met its bar: met when every check holds, `not measured` when one could
    /// not be taken, and how many rounds failed.
    pub fn verdict<F>(v: &[Result<F, String>], checks: &[Option<bool>]) -> String {
        let failed = v.iter().filter(|o| o.is_err()).count();
        if !v.is_empty() && failed == v.len() {
            let why = v.iter().find_map(|o| o.as_ref().err()).map_or("", |e| e);
            return format!("**not met** ({})", cell(why));
        }
        let base = if checks.iter().any(Option::is_none) {
            "not measured"
        } else if checks.iter().all(|c| *c == Some(true)) {
            "met"
        } else {
            "**not met**"
        };
        if failed > 0 {
            format!("{base} ({failed}/{} rounds failed)", v.len())
        } else {
            base.into()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_cells() {
        use super::table::*;
        assert_eq!(median(vec![3.0, 1.0, f64::NAN, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(times(Some(0.776)), "0.78×");
        assert_eq!(fmt(Some(f64::INFINITY), 1), "-");
        assert_eq!(cell("a|b\nc"), "a/b c");
        let rounds: Vec<Result<f64, String>> = vec![Ok(10.0), Err("hang".into()), Ok(30.0)];
        assert_eq!(ops_cell(&rounds, |f| *f), "20 (hang in 1/3)");
        assert_eq!(verdict(&rounds, &[Some(true)]), "met (1/3 rounds failed)");
        assert_eq!(verdict(&rounds[..1], &[Some(true), None]), "not measured");
        assert_eq!(verdict(&rounds[..1], &[Some(false)]), "**not met**");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        assert!(super::cpu_time(std::process::id()).is_some());
        assert_eq!(super::cpu_time(u32::MAX), None);
    }
}
