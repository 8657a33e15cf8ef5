//! Where the CPU went during a run, from `/proc`: the whole machine's busy share
//! (`/proc/stat`), one process's cores, and a process with its children (a PostgreSQL server:
//! the postmaster and every backend, those that exited during the run included), so a
//! comparison of two servers can say what each cost and what else was running.

use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The CPU times of `/proc/<pid>/stat` this module reads, in ticks.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub ppid: u32,
    /// User and system time of the process itself (all its threads).
    pub own_ticks: u64,
    /// User and system time of its children that exited and were waited for.
    pub reaped_children_ticks: u64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')':
        // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        // cutime cstime ...
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
        Some(ProcStat {
            ppid: u32::try_from(field(1)?).ok()?,
            own_ticks: field(11)? + field(12)?,
            reaped_children_ticks: field(13)? + field(14)?,
        })
    }

    pub fn own_cpu_seconds(&self) -> f64 {
        self.own_ticks as f64 / TICKS_PER_SEC
    }
}

/// The machine's CPU counters (all cores together), from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
    cores: usize,
}

impl MachineCpu {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .take(8) // user nice system idle iowait irq softirq steal (guest is within user)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            return None;
        };
        let cores = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        Some(MachineCpu {
            busy: user + nice + system + irq + softirq,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            cores,
        })
    }

    /// The cores the counters add up.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The share of all cores that was busy between `before` and this reading, in percent.
    pub fn busy_percent_since(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

/// The CPU time of a process and of its children, live or exited (one level: the postmaster
/// and its backends).
#[derive(Debug, Clone, Copy)]
pub struct TreeCpu {
    seconds: f64,
    at: Instant,
}

impl TreeCpu {
    pub fn read(root: u32) -> Option<Self> {
        let parent = ProcStat::read(root)?;
        let live_children: u64 = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(ProcStat::read)
            .filter(|child| child.ppid == root)
            .map(|child| child.own_ticks)
            .sum();
        let ticks = parent.own_ticks + parent.reaped_children_ticks + live_children;
        Some(TreeCpu {
            seconds: ticks as f64 / TICKS_PER_SEC,
            at: Instant::now(),
        })
    }

    /// Cores used between `before` and this reading.
    pub fn cores_since(&self, before: &Self) -> f64 {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.seconds - before.seconds) / wall
    }
}

/// The 1-minute load average (the machine may be shared; a run records what else ran).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_the_machine_can_be_read() {
        let me = ProcStat::read(std::process::id()).expect("own /proc/<pid>/stat");
        assert!(me.ppid > 0);
        let before = MachineCpu::read().expect("/proc/stat");
        // Burn a little CPU so the busy counter moves.
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = MachineCpu::read().expect("/proc/stat");
        let busy = after.busy_percent_since(&before);
        assert!((0.0..=100.0).contains(&busy), "{busy}");
        assert!(after.total > before.total);
        assert!(after.cores() >= 1);
    }
}
