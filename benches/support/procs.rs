//! Child processes of the proxy benchmark (sync-proxy, nginx): started on loopback ports,
//! awaited until they accept connections, measured through `/proc` (CPU ticks, peak RSS), and
//! killed when their guard is dropped — also when the benchmark panics.
//!
//! Where `setpriv` exists, children also get `SIGKILL` when the benchmark dies from a signal,
//! so no proxy outlives an interrupted run. Linux only.

use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child gets to start listening: sync-proxy and nginx need milliseconds.
const MAX_START_WAIT: Duration = Duration::from_secs(10);

/// Where `setpriv` (util-linux) usually is; used for `--pdeathsig`.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A child process, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr into `log`, and a clean environment (a
    /// user's `SYNC_PROXY_*` or `LOG_LEVEL` must not change what is measured).
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> io::Result<Proc> {
        let output = File::create(log)?;
        let mut command = if Path::new(SETPRIV).exists() {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        let child = command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// Waits until `addr` accepts connections; fails if the child exits first.
    pub fn wait_listening(&mut self, addr: SocketAddr) -> io::Result<()> {
        let deadline = Instant::now() + MAX_START_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at start ({status}); its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::other(format!(
            "{} did not listen on {addr} within {MAX_START_WAIT:?}",
            self.name
        )))
    }

    /// The process id (the program's own: `setpriv` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time (user plus system) consumed so far: the nanosecond run times of
    /// `/proc/<pid>/task/*/schedstat`, or the tick-resolution `utime + stime` of
    /// `/proc/<pid>/stat` where schedstat is missing.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.pid();
        schedstat_nanos(pid).map_or_else(
            || {
                let ticks = stat_ticks(pid).unwrap_or(0);
                Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
            },
            Duration::from_nanos,
        )
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:").unwrap_or(0)
    }

    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:").unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then released),
/// for children that need their port on the command line.
pub fn free_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Finds an executable by name on `PATH`, then in the sbin directories nginx lives in.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn schedstat_nanos(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        // proc(5): time spent on the CPU, in nanoseconds, is the first field.
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn stat_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); the first after ')' is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
