//! The process's own metrics, read from `/proc` at each scrape (Linux; elsewhere none are
//! exposed), under the names every Prometheus client library uses: CPU time, resident and
//! virtual memory, open descriptors against the `nofile` limit, start time.
//!
//! prometheus-client has no process collector, and the crates that add one bring `procfs` or
//! `libc` (and `unsafe` calls to `sysconf`) for six numbers. `/proc/self/stat` counts CPU time
//! in clock ticks; USER_HZ is 100 on every Linux architecture callrelay builds for (it is part
//! of the kernel's ABI, and Prometheus's own `procfs` library assumes the same).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector;

/// What one reading of `/proc` found; a value the OS did not give is `None`.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` after the command name, which may itself hold spaces and
/// parentheses: everything after the last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// `/proc/self/stat`: user and system time (fields 14 and 15), start time in ticks after boot
/// (22) and virtual size in bytes (23); numbered as in proc(5), so index = field - 3.
pub fn parse_stat(stat: &str, boot_time: Option<u64>) -> (Option<f64>, Option<f64>, Option<i64>) {
    let fields = stat_fields(stat);
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) as f64 / USER_HZ),
        _ => None,
    };
    let start = match (field(22), boot_time) {
        (Some(ticks), Some(boot)) => Some(boot as f64 + ticks as f64 / USER_HZ),
        _ => None,
    };
    let vsize = field(23).and_then(|v| i64::try_from(v).ok());
    (cpu, start, vsize)
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status`, in bytes (the file says kB, meaning KiB).
pub fn parse_resident(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub fn read() -> Reading {
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_boot_time(&s));
    let (cpu_seconds, start_time_seconds, virtual_bytes) =
        match std::fs::read_to_string("/proc/self/stat") {
            Ok(stat) => parse_stat(&stat, boot_time),
            Err(_) => (None, None, None),
        };
    Reading {
        cpu_seconds,
        resident_bytes: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_resident(&s)),
        virtual_bytes,
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as i64),
        max_fds: crate::http::descriptors::open_files_limit()
            .and_then(|limit| i64::try_from(limit).ok()),
        start_time_seconds,
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = read();
        if let Some(seconds) = reading.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                reading.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "The soft limit on open file descriptors (nofile)",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(start) = reading.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // proc(5)'s layout, with a command name that holds a space and a parenthesis.
    const STAT: &str = "4242 (call relay) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
        250 130 0 0 20 0 3 0 500 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn reads_cpu_start_and_virtual_size_from_stat() {
        let (cpu, start, vsize) = parse_stat(STAT, Some(1_700_000_000));
        assert_eq!(cpu, Some(3.8)); // (250 + 130) ticks at 100 per second
        assert_eq!(start, Some(1_700_000_005.0)); // booted + 500 ticks
        assert_eq!(vsize, Some(123_456_789));
        let (cpu, start, vsize) = parse_stat("garbage", None);
        assert_eq!((cpu, start, vsize), (None, None, None));
    }

    #[test]
    fn reads_boot_time_and_resident_size() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        assert_eq!(
            parse_resident("Name:\tcallrelay\nVmRSS:\t   10240 kB\nVmSwap:\t0 kB\n"),
            Some(10_485_760)
        );
        assert_eq!(parse_resident("Name:\tcallrelay\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let r = read();
        assert!(r.cpu_seconds.is_some_and(|s| s >= 0.0), "{r:?}");
        assert!(r.resident_bytes.is_some_and(|b| b > 0), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n >= 3), "{r:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            r.start_time_seconds.is_some_and(|s| s <= now + 1.0),
            "{r:?}"
        );
    }
}
