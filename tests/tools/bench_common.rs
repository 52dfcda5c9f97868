//! What the benchmarks under `tests/tools/` share: wrk's figures, a process's CPU time
//! and context switches from /proc, and the arithmetic and formatting of their tables.
//! Included by each with `#[path]`, so each stays one example.

use std::path::Path;
use std::process::Command;

use harness::nginx::nginx_bin;

/// A finished wrk's output, its requests per second and its request count; an error if
/// it failed, or as [`wrk_figures`].
pub fn wrk_output(
    out: std::io::Result<std::process::Output>,
) -> Result<(String, f64, u64), String> {
    let out = out.map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (rate, requests) = wrk_figures(&text)?;
    Ok((text, rate, requests))
}

/// wrk's requests per second and request count, from its output; an error if some
/// requests failed or were not answered 200 (the run is then void).
pub fn wrk_figures(text: &str) -> Result<(f64, u64), String> {
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!(
            "some requests failed or were not answered 200, the measurement is void:\n{text}"
        ));
    }
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("no request count in wrk's output:\n{text}"))?;
    Ok((rate, requests))
}

/// A wrk Lua script that POSTs `body` with these Basic credentials.
pub fn wrk_script(path: &Path, basic: &str, body: &str) -> Result<(), String> {
    write(
        path,
        &format!(
            "wrk.method = \"POST\"\n\
             wrk.body = '{body}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Basic {basic}\"\n"
        ),
        0o644,
    )
}

/// Voluntary and involuntary context switches so far, from a `status` file of
/// /proc (a process's counts are its main thread's); 0 if it is gone.
fn switches(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// utime and stime, in clock ticks, from a `stat` file of /proc (a process's, all its
/// threads; or one thread's, under `task/`); 0 if it is gone.
fn user_system(stat: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return (0, 0);
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); the state (field 3) is first here.
    (field(11), field(12))
}

/// What processes (or threads) have used so far: user and system CPU, in clock ticks,
/// and context switches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: u64,
    pub system: u64,
    pub switches: u64,
}

impl Cpu {
    /// The sum over processes, all their threads each.
    pub fn processes(pids: &[u32]) -> Cpu {
        let mut cpu = Cpu::default();
        for pid in pids {
            let (user, system) = user_system(&format!("/proc/{pid}/stat"));
            cpu.user += user;
            cpu.system += system;
            // A process's `status` counts its first thread's switches only.
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    cpu.switches += switches(&format!("{}/status", task.path().display()));
                }
            }
        }
        cpu
    }

    /// One thread of this process.
    pub fn thread(tid: u32) -> Cpu {
        let me = std::process::id();
        let (user, system) = user_system(&format!("/proc/{me}/task/{tid}/stat"));
        Cpu {
            user,
            system,
            switches: switches(&format!("/proc/{me}/task/{tid}/status")),
        }
    }

    /// What was used between `self` (before) and `after`.
    pub fn until(self, after: Cpu) -> Cpu {
        Cpu {
            user: after.user.saturating_sub(self.user),
            system: after.system.saturating_sub(self.system),
            switches: after.switches.saturating_sub(self.switches),
        }
    }
}

pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

pub fn median(mut samples: Vec<f64>) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

pub fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NAN, f64::max)
}

pub fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NAN, f64::min)
}

/// 12345.6 -> "12,346".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn nginx_version() -> String {
    Command::new(nginx_bin())
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .and_then(|v| v.rsplit('/').next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

pub fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    set_mode(path, mode)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}
