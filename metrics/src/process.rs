//! Process metrics read from `/proc/self` on each scrape: CPU seconds, resident memory, open file
//! descriptors and the start time. Names follow Prometheus' `process_*` conventions.

use std::fmt::Error as FmtError;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on every Linux we target).
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size used by `/proc/self/statm` (4 KiB on the platforms we target).
const PAGE_BYTES: i64 = 4096;

/// Reads the process' own resource use when scraped.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of the process' resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub resident_bytes: i64,
    /// Open file descriptors.
    pub open_fds: i64,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where it is unavailable (non-Linux).
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        Some(ProcessSample {
            cpu_seconds: cpu_seconds_from_stat(&stat)?,
            resident_bytes: resident_pages_from_statm(&statm)? * PAGE_BYTES,
            open_fds,
        })
    }
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, in seconds. The command name (field 2)
/// may contain spaces, so fields are counted after its closing parenthesis.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The resident set (second field) of `/proc/self/statm`, in pages.
fn resident_pages_from_statm(statm: &str) -> Option<i64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), FmtError> {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let memory = ConstGauge::new(sample.resident_bytes);
        memory.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            memory.metric_type(),
        )?)?;
        let fds = ConstGauge::new(sample.open_fds);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors",
            None,
            fds.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat = "42 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0";
        assert_eq!(cpu_seconds_from_stat(stat), Some(4.0));
    }

    #[test]
    fn resident_pages_are_the_second_field() {
        assert_eq!(resident_pages_from_statm("1000 250 30 1 0 90 0"), Some(250));
        assert_eq!(resident_pages_from_statm("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcessSample::read().expect("/proc/self is readable on Linux");
        assert!(sample.resident_bytes > 0);
        assert!(sample.open_fds > 0);
    }
}
