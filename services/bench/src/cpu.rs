//! CPU accounting from /proc: where the two cores went during a phase.

use std::{collections::HashSet, time::Instant};

use crate::env::Env;

/// CPU seconds by group: the service binaries, Postgres, RabbitMQ (beam), this benchmark.
/// The last entry is everything else on the machine (total busy time from /proc/stat
/// minus the four groups): other users' builds and tests disturb a 2-core machine.
fn cpu_snapshot(env: &Env) -> [f64; 5] {
    let ticks = 100.0; // USER_HZ on Linux
    let children: HashSet<u32> = env.children.iter().filter_map(|(_, c)| c.id()).collect();
    let me = std::process::id();
    let mut out = [0.0; 5];
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(cpu) = stat.lines().next() {
            let v: Vec<f64> = cpu
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let busy: f64 = v
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .map(|(_, x)| x)
                .sum();
            out[4] = busy / ticks;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ... utime(14) stime(15)"
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let f: Vec<&str> = tail.split_whitespace().collect();
        let used = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields after the comm start at field 3 (state), so utime (14) is index 11.
        let secs = (used(11) + used(12)) / ticks;
        let group = if children.contains(&pid) {
            0
        } else if comm == "postgres" {
            1
        } else if comm.starts_with("beam") || comm.starts_with("erl") {
            2
        } else if pid == me {
            3
        } else {
            continue;
        };
        out[group] += secs;
    }
    out[4] -= out[0] + out[1] + out[2] + out[3];
    out
}

pub struct Cpu {
    at: Instant,
    last: [f64; 5],
}

pub struct CpuDelta {
    pub wall: f64,
    secs: [f64; 5],
}

impl CpuDelta {
    /// CPU of every process on the machine per event, in microseconds, and the share of
    /// all cores busy: how the cost of an event moves with the rate.
    pub fn per_event(&self, events: usize) -> String {
        let total: f64 = self.secs.iter().sum();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        format!(
            "{:.0} µs ({:.0} % of the {cores} cores busy)",
            total / events.max(1) as f64 * 1e6,
            total / self.wall.max(1e-9) / cores as f64 * 100.0
        )
    }

    pub fn describe(&self) -> String {
        let cores = |s: f64| s / self.wall.max(1e-9);
        let parts: Vec<String> = self
            .secs
            .iter()
            .map(|s| format!("{s:.1} s ({:.2} cores)", cores(*s)))
            .collect();
        parts.join(" / ")
    }
}

impl Cpu {
    pub fn start(env: &Env) -> Self {
        Self {
            at: Instant::now(),
            last: cpu_snapshot(env),
        }
    }

    /// CPU used since the last call (processes that exited in between are not counted).
    pub fn delta(&mut self, env: &Env) -> CpuDelta {
        let now = cpu_snapshot(env);
        let mut secs = [0.0; 5];
        for (i, s) in secs.iter_mut().enumerate() {
            *s = (now[i] - self.last[i]).max(0.0);
        }
        let wall = self.at.elapsed().as_secs_f64();
        self.at = Instant::now();
        self.last = now;
        CpuDelta { wall, secs }
    }
}
