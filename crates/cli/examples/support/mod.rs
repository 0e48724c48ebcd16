//! What the session benchmark and the soak both read from a running machine (its CPU time
//! and RSS from `/proc`, and its expiry log lines) and how they sum it up.

/// User plus system CPU time of process `pid`, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The value at fraction `p` (0..=1) of `sorted`; 0 if it is empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The session id and `late_us` of a machine's "session expired" log line.
pub fn expiry_of(line: &str) -> Option<(String, u64)> {
    if !line.contains("session expired") {
        return None;
    }
    let field = |k: &str| line.split_whitespace().find_map(|t| t.strip_prefix(k));
    let id = field("session=")?.to_string();
    let late = field("late_us=")?.parse().unwrap_or(u64::MAX);
    Some((id, late))
}
