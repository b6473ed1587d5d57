//! A process's resource use, read from Linux's `/proc`: for `/metrics` (the
//! standard `process_*` gauges Prometheus users expect) and for the load
//! tools that watch a server from outside. `None` where `/proc` cannot be
//! read (another OS, a process that has exited).

use std::path::PathBuf;

/// This process or another one, by pid.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    Current,
    Pid(u32),
}

impl Process {
    fn path(self, file: &str) -> PathBuf {
        match self {
            Process::Current => PathBuf::from(format!("/proc/self/{file}")),
            Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        }
    }

    fn status_kib(self, field: &str) -> Option<u64> {
        status_field(&std::fs::read_to_string(self.path("status")).ok()?, field)
    }

    /// Resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The highest resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// User + system CPU time, in milliseconds.
    pub fn cpu_ms(self) -> Option<u64> {
        Some(ticks_to_ms(cpu_ticks(
            &std::fs::read_to_string(self.path("stat")).ok()?,
        )?))
    }

    /// Open file descriptors (sockets included).
    pub fn open_files(self) -> Option<usize> {
        Some(std::fs::read_dir(self.path("fd")).ok()?.count())
    }
}

fn ticks_to_ms(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / per_second
}

/// CPU time the whole machine has spent busy since boot (every core, every
/// process and the kernel; idle and I/O wait not counted), in milliseconds:
/// what a server costs together with its database and its clients.
pub fn machine_busy_ms() -> Option<u64> {
    Some(ticks_to_ms(busy_ticks(
        &std::fs::read_to_string("/proc/stat").ok()?,
    )?))
}

/// The busy ticks of `/proc/stat`'s first (`cpu`) line: user, nice, system,
/// irq, softirq and steal (guest time is already inside user and nice).
fn busy_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmRSS:     1234 kB`.
fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces and parentheses:
    // the fields that follow start after its last `)`. utime and stime are
    // the line's fields 14 and 15, so 12 and 13 after the name.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_stat_lines() {
        let status = "Name:\thookhost\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1024));
        assert_eq!(status_field(status, "VmHWM:"), Some(2048));
        assert_eq!(status_field(status, "VmSwap:"), None);
        // A command name with a space and a `)` in it.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some(12));
        assert_eq!(cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 2 30 5000 700 4 5 6 9 1\ncpu0 50 1 15 2500 350 2 2 3 4 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 2 + 30 + 4 + 5 + 6));
        assert_eq!(busy_ticks("intr 1 2 3\n"), None);
        assert!(machine_busy_ms().is_some(), "/proc/stat on this machine");
    }

    #[test]
    fn this_process_is_visible() {
        let me = Process::Current;
        let rss = me.rss_kib().expect("VmRSS of this process");
        assert!(rss > 0);
        assert!(me.peak_rss_kib().expect("VmHWM") >= rss);
        assert!(me.open_files().expect("fd folder") >= 3);
        assert!(me.cpu_ms().is_some());
        let other = Process::Pid(std::process::id());
        assert!(other.open_files().is_some());
        assert_eq!(Process::Pid(u32::MAX).rss_kib(), None);
    }
}
