//! Instruction counts under `valgrind --tool=callgrind`: a server started under it, driven by a
//! closure, stopped with `SIGTERM` (so callgrind writes its totals), and the user-space
//! instructions it executed read back. Two runs that differ only in the number of requests
//! give the marginal instructions per request, free of start-up and shut-down.
//!
//! Counts are repeatable where wall-clock time on a shared machine is not. Loopback only;
//! every wait is bounded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::procs::Proc;

/// How long a child under callgrind gets to write its totals after `SIGTERM`.
const MAX_EXIT_WAIT: Duration = Duration::from_secs(60);

/// The `valgrind` program, if installed.
pub fn valgrind() -> Option<PathBuf> {
    super::procs::which("valgrind")
}

/// Starts `program args` under callgrind, writing its profile to `out`.
pub fn spawn(
    valgrind: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    out: &Path,
    log: &Path,
) -> io::Result<Proc> {
    let _ = fs::remove_file(out);
    let mut full = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        program.display().to_string(),
    ];
    full.extend(args.iter().cloned());
    Proc::spawn(name, valgrind, &full, log)
}

/// Sends `SIGTERM` to `proc`, waits for it to exit and returns the instructions callgrind
/// counted (the `summary:` or `totals:` line of `out`).
pub fn stop(mut proc: Proc, out: &Path) -> io::Result<u64> {
    let status = Command::new("kill")
        .args(["-TERM", &proc.pid().to_string()])
        .status()?;
    if !status.success() {
        return Err(io::Error::other("kill -TERM failed"));
    }
    let deadline = Instant::now() + MAX_EXIT_WAIT;
    while proc.running() {
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} did not exit within {MAX_EXIT_WAIT:?} of SIGTERM",
                out.display()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    total(out)
}

/// The total instruction count in a callgrind profile.
pub fn total(out: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(out)?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no totals in {}", out.display())))
}
