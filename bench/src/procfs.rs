//! CPU time and resident memory of a process, from Linux `/proc`.

use std::time::Duration;

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu(&stat, clock_ticks()).ok_or_else(|| std::io::Error::other("unparseable /proc stat"))
}

/// CPU time (user + system) of the calling thread so far.
pub fn thread_cpu_time() -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    parse_cpu(&stat, clock_ticks()).ok_or_else(|| std::io::Error::other("unparseable /proc stat"))
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&status).ok_or_else(|| std::io::Error::other("no VmRSS in /proc status"))
}

fn clock_ticks() -> u64 {
    // USER_HZ is 100 on every Linux architecture we run on.
    100
}

/// utime and stime are fields 14 and 15; the command (field 2) may contain spaces, so count
/// from the closing parenthesis.
fn parse_cpu(stat: &str, hz: u64) -> Option<Duration> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

fn parse_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_with_spaces_in_the_command() {
        let stat = "1234 (my prog) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(stat, 100), Some(Duration::from_secs(3)));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        cpu_time(me).unwrap();
    }

    #[test]
    fn parses_rss() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t  5120 kB\n"), Some(5120));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }
}
