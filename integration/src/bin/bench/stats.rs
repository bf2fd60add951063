//! Figures: latency percentiles, and CPU time and memory of processes read from /proc.

use std::time::Duration;

use serde_json::{Value, json};

/// p50, p90, p99 and max of `samples`, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    json!({"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": ms(samples[samples.len() - 1]), "n": samples.len()})
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // Linux reports times in USER_HZ, 100 on every architecture it supports today.
    100.0
}

/// A memory figure from /proc/<pid>/status, in MiB: `VmRSS` (now) or `VmHWM` (peak).
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// CPU and memory of named processes, measured between two points in time.
pub struct Meter {
    start: Vec<(String, u32, f64)>,
}

impl Meter {
    pub fn start(processes: &[(String, u32)]) -> Self {
        Self {
            start: processes
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, cpu_seconds(*pid).unwrap_or(0.0)))
                .collect(),
        }
    }

    /// CPU seconds used since [`Meter::start`], and peak RSS so far, per process.
    pub fn finish(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, pid, cpu0) in &self.start {
            let cpu = cpu_seconds(*pid).map(|c| ((c - cpu0) * 100.0).round() / 100.0);
            out.insert(
                name.clone(),
                json!({"cpu_s": cpu, "peak_rss_mib": memory_mib(*pid, "VmHWM")}),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&mut samples);
        assert_eq!(
            (
                p["p50_ms"].as_f64(),
                p["p99_ms"].as_f64(),
                p["max_ms"].as_f64()
            ),
            (Some(50.0), Some(99.0), Some(100.0))
        );
    }

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(memory_mib(me, "VmHWM").unwrap() > 0.0);
    }
}
