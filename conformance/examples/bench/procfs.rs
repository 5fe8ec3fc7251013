//! What the benchmark reads about a process from `/proc` (its CPU time and
//! resident memory), and the open-files limit it raises for itself and the
//! servers it starts.

use anyhow::{bail, Context, Result};

/// `VmRSS` of a process, in KiB: what the process holds in memory now.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// User and system CPU time of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; fields after its closing parenthesis
    // start at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/pid/stat")
    };
    Ok((field(11)?, field(12)?))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot run).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time of a process in seconds, split into user and system time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// The CPU time spent between two readings.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// A measured server and its Redis, whose CPU times are read together at the
/// edges of a measured window.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub server: u32,
    pub redis: u32,
    ticks_per_sec: f64,
}

/// Both processes' CPU times at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReading {
    pub server: CpuTime,
    pub redis: CpuTime,
}

impl CpuReading {
    pub fn since(&self, earlier: &CpuReading) -> CpuReading {
        CpuReading {
            server: self.server.since(&earlier.server),
            redis: self.redis.since(&earlier.redis),
        }
    }
}

impl Measured {
    pub fn new(server: u32, redis: u32) -> Self {
        Self {
            server,
            redis,
            ticks_per_sec: clock_ticks_per_sec(),
        }
    }

    fn cpu(&self, pid: u32) -> Result<CpuTime> {
        let (user, system) = cpu_ticks(pid)?;
        Ok(CpuTime {
            user: user as f64 / self.ticks_per_sec,
            system: system as f64 / self.ticks_per_sec,
        })
    }

    pub fn read(&self) -> Result<CpuReading> {
        Ok(CpuReading {
            server: self.cpu(self.server)?,
            redis: self.cpu(self.redis)?,
        })
    }
}

/// Raise this process's soft limit of open files to its hard limit (children,
/// the servers included, inherit it) and return the new limit; fails when the
/// hard limit is below `needed`.
pub fn raise_open_files_limit(needed: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    let current: u64 = limit.rlim_cur;
    if current < needed {
        bail!(
            "the open-files limit is {current} (hard limit); {needed} are needed: raise it (ulimit -Hn, /etc/security/limits.conf)"
        );
    }
    Ok(current)
}
