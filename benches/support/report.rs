//! The proxy benchmark's results and their Markdown rendering: one table of latency,
//! throughput and CPU per setup, the fan-out table, the 2 MB table, peak memory and binary
//! size, with ratios against the direct connection.
//!
//! It measures nothing itself; `benches/proxy.rs` fills the results in.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime};

use super::load::{Samples, Throughput};

/// What the load generator talks to, and what it measured there.
pub struct Setup {
    /// Row label.
    pub label: String,
    /// Where the load generator connects.
    pub addr: SocketAddr,
    /// Indexes into the run's processes whose CPU counts for this setup.
    pub procs: Vec<usize>,
    /// The sync-proxy whose queue drops count for this setup.
    pub sync_proxy: Option<SocketAddr>,
    /// Sequential-request latencies.
    pub latency: Samples,
    /// All throughput rounds together.
    pub throughput: Throughput,
    /// Requests per second of each throughput round.
    pub rates: Vec<f64>,
    /// CPU time of each of `procs` during the throughput rounds.
    pub cpu_times: Vec<Duration>,
    /// Requests sync-proxy dropped from full EL queues during the throughput rounds.
    pub drops: Option<u64>,
}

impl Setup {
    /// A setup with nothing measured yet.
    pub fn new(
        label: &str,
        addr: SocketAddr,
        procs: Vec<usize>,
        sync_proxy: Option<SocketAddr>,
    ) -> Setup {
        let proc_count = procs.len();
        Setup {
            label: label.to_owned(),
            addr,
            procs,
            sync_proxy,
            latency: Samples::default(),
            throughput: Throughput::default(),
            rates: Vec::new(),
            cpu_times: vec![Duration::ZERO; proc_count],
            drops: Some(0).filter(|_| sync_proxy.is_some()),
        }
    }
}

/// A path the 2 MB payload is sent through.
pub struct LargePath {
    /// Row label.
    pub label: String,
    /// Where the load generator connects.
    pub addr: SocketAddr,
    /// Indexes into the run's processes whose CPU counts for this path.
    pub procs: Vec<usize>,
    /// Sequential-request latencies.
    pub samples: Samples,
    /// CPU time of `procs` while this path was measured.
    pub cpu_time: Duration,
}

impl LargePath {
    /// A path with nothing measured yet.
    pub fn new(label: &str, addr: SocketAddr, procs: Vec<usize>) -> LargePath {
        LargePath {
            label: label.to_owned(),
            addr,
            procs,
            samples: Samples::default(),
            cpu_time: Duration::ZERO,
        }
    }
}

/// A process whose peak memory is reported.
pub struct Measured {
    /// Row label.
    pub label: String,
    /// Index into the run's processes.
    pub proc: usize,
    /// Peak RSS after start, after the 1 KB runs and after the 2 MB runs, in KiB.
    pub idle_kib: u64,
    pub small_kib: u64,
    pub large_kib: u64,
}

impl Measured {
    /// A process with nothing measured yet.
    pub fn new(label: &str, proc: usize) -> Measured {
        Measured {
            label: label.to_owned(),
            proc,
            idle_kib: 0,
            small_kib: 0,
            large_kib: 0,
        }
    }
}

/// How the numbers were taken, for the text around the tables.
pub struct Method {
    /// A CI smoke run with fewer samples.
    pub quick: bool,
    /// Latency samples per setup.
    pub latency_samples: usize,
    /// Concurrent connections of the throughput runs.
    pub connections: usize,
    /// Throughput rounds per setup, and the length of each.
    pub throughput_rounds: usize,
    pub throughput_time: Duration,
    /// 2 MB requests per path.
    pub large_samples: usize,
    /// The 1-minute load average when the run started.
    pub load_average: String,
}

/// Everything the tables are made of.
pub struct Report<'a> {
    /// How the numbers were taken.
    pub method: &'a Method,
    /// The direct connection first, then the main rows, then the fan-out rows.
    pub setups: &'a [Setup],
    /// How many of `setups` belong to the main table.
    pub main_rows: usize,
    /// The 2 MB paths, the direct one first.
    pub large_paths: &'a [LargePath],
    /// Peak memory per process.
    pub measured: &'a [Measured],
    /// Body bytes of the small and the large request.
    pub small_bytes: usize,
    pub large_bytes: usize,
    /// Body bytes and median `rpc::inspect` time.
    pub inspect: &'a [(usize, Duration)],
    /// The binary measured.
    pub binary: &'a Path,
    /// The static build and how to name it.
    pub musl: Option<(&'a Path, String)>,
    /// nginx, unless skipped.
    pub nginx_binary: Option<&'a Path>,
    /// Remarks printed under the tables.
    pub notes: &'a [String],
}

impl Report<'_> {
    /// The tables and their explanations, ending with the command that regenerates them.
    pub fn markdown(&self) -> String {
        let s = self.method;
        let direct = &self.setups[0];
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### sync-proxy vs direct and nginx{}\n",
            if s.quick {
                " (quick run: fewer samples)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{}, {} ({} cores), nginx {}. Latency: 1 keep-alive connection per setup, {} sequential \
             `engine_newPayloadV4` of {} bytes each (unique `blockHash`; rounds interleaved across setups). \
             Throughput: {} keep-alive connections, {} round(s) of {:?} per setup (median round). Mock ELs \
             answer at once. Load generator, mock ELs and proxies share the machine's cores (load average \
             at start: {}), so absolute numbers are for this box; compare the ratios.\n",
            today(),
            cpu_model(),
            thread::available_parallelism().map_or(0, |n| n.get()),
            self.nginx_binary
                .map_or_else(|| "skipped".to_owned(), nginx_version),
            s.latency_samples,
            self.small_bytes,
            s.connections,
            s.throughput_rounds,
            s.throughput_time,
            s.load_average,
        );
        let header = "| p50 µs | p99 µs | added p50 µs | added p99 µs | p50 × direct | req/s | req/s × direct | proxy CPU µs/req | proxy CPU % of a core | EL queue drops | errors |";
        let rule = "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|";
        let _ = writeln!(out, "| setup {header}\n|---{rule}");
        for setup in &self.setups[..self.main_rows] {
            row(&mut out, &setup.label, setup, direct);
        }
        let _ = writeln!(
            out,
            "\n**Fan-out**: the same `newPayloadV4` through sync-proxy `--ack primary` to every EL \
             (the first EL's answer is returned).\n"
        );
        let _ = writeln!(out, "| ELs {header}\n|---{rule}");
        row(&mut out, "1 EL", &self.setups[1], direct);
        for setup in &self.setups[self.main_rows..] {
            row(&mut out, &setup.label, setup, direct);
        }
        let _ = writeln!(
            out,
            "\n**2 MB `newPayloadV4`** ({} bytes), {} sequential requests per path on 1 connection:\n",
            self.large_bytes, s.large_samples
        );
        let _ = writeln!(
            out,
            "| path | p50 ms | p99 ms | added p50 ms | p50 × direct | proxy CPU ms/req | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|");
        let large_direct = self.large_paths[0].samples.percentile_us(50.0);
        for (index, path) in self.large_paths.iter().enumerate() {
            let p50 = path.samples.percentile_us(50.0);
            let added = if index == 0 {
                "—".to_owned()
            } else {
                number((p50 - large_direct) / 1e3, 2, true)
            };
            let cpu = if path.procs.is_empty() {
                "—".to_owned()
            } else {
                let calls = path.samples.nanos.len() as u64 + path.samples.errors;
                number(
                    path.cpu_time.as_secs_f64() * 1e3 / calls.max(1) as f64,
                    2,
                    false,
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {added} | {} | {cpu} | {} |",
                path.label,
                number(p50 / 1e3, 2, false),
                number(path.samples.percentile_us(99.0) / 1e3, 2, false),
                ratio(p50, large_direct),
                path.samples.errors,
            );
        }
        let inspect: Vec<String> = self
            .inspect
            .iter()
            .map(|(bytes, time)| format!("{bytes} bytes: {:.1} µs", time.as_secs_f64() * 1e6))
            .collect();
        let _ = writeln!(
            out,
            "\nOf the added time, JSON inspection (`sync_proxy::rpc::inspect`, median, in this process) takes {}.",
            inspect.join("; ")
        );
        let _ = writeln!(
            out,
            "\n**Memory**, peak RSS (`VmHWM`): at start, after the 1 KB runs, after the 2 MB runs.\n"
        );
        let _ = writeln!(
            out,
            "| process | idle MiB | after 1 KB load MiB | after 2 MB load MiB |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|");
        for m in self.measured {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                m.label,
                mib(m.idle_kib),
                mib(m.small_kib),
                mib(m.large_kib)
            );
        }
        let _ = writeln!(out, "\n**Binary size**:\n");
        let _ = writeln!(out, "| binary | bytes | MiB |");
        let _ = writeln!(out, "|---|--:|--:|");
        if let Some((musl, name)) = &self.musl {
            let size = file_size(musl);
            let _ = writeln!(
                out,
                "| static musl release, `{name}` | {size} | {} |",
                mib(size / 1024)
            );
        } else {
            let _ = writeln!(out, "| static musl release | not built | — |");
        }
        let size = file_size(self.binary);
        let _ = writeln!(
            out,
            "| the binary measured above, `target/release/sync-proxy` (glibc, release settings) | {size} | {} |",
            mib(size / 1024)
        );
        let _ = writeln!(
            out,
            "\nAdded = setup − direct at the same percentile (p99 of {} samples per setup). CPU = user + \
             system time of the proxy process(es) during the throughput runs (mirror rows: nginx + \
             sync-proxy), from `/proc/<pid>/task/*/schedstat`. EL queue drops = requests sync-proxy dropped from a full \
             per-EL queue during the throughput run (`sync_proxy_upstream_dropped_total`): with several \
             connections the BNs outpace the ELs, which sync-proxy serves one request at a time each.",
            s.latency_samples
        );
        for note in self.notes {
            let _ = writeln!(out, "\nNote: {note}");
        }
        let _ = writeln!(out, "\nregenerate: cargo bench --bench proxy");
        out
    }
}

/// One row of the latency/throughput tables.
fn row(out: &mut String, label: &str, setup: &Setup, direct: &Setup) {
    let is_direct = std::ptr::eq(setup, direct);
    let (p50, p99) = (
        setup.latency.percentile_us(50.0),
        setup.latency.percentile_us(99.0),
    );
    let (direct_p50, direct_p99) = (
        direct.latency.percentile_us(50.0),
        direct.latency.percentile_us(99.0),
    );
    let rps = median(&setup.rates);
    let (cpu_per_request, cpu_percent) = if setup.cpu_times.is_empty() {
        ("—".to_owned(), "—".to_owned())
    } else {
        let seconds: Vec<f64> = setup.cpu_times.iter().map(Duration::as_secs_f64).collect();
        let total: f64 = seconds.iter().sum();
        let per_request = |cpu: f64| cpu * 1e6 / (setup.throughput.completed.max(1) as f64);
        let mut text = format!("{:.1}", per_request(total));
        if seconds.len() > 1 {
            let parts: Vec<String> = seconds
                .iter()
                .map(|&c| format!("{:.1}", per_request(c)))
                .collect();
            let _ = write!(text, " ({})", parts.join(" + "));
        }
        let elapsed = setup.throughput.elapsed.as_secs_f64().max(1e-9);
        (text, format!("{:.0}", total * 100.0 / elapsed))
    };
    let added = |value: f64, floor: f64| {
        if is_direct {
            "—".to_owned()
        } else {
            number(value - floor, 1, true)
        }
    };
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {cpu_per_request} | {cpu_percent} | {} | {} |",
        number(p50, 1, false),
        number(p99, 1, false),
        added(p50, direct_p50),
        added(p99, direct_p99),
        ratio(p50, direct_p50),
        number(rps, 0, false),
        ratio(rps, median(&direct.rates)),
        setup.drops.map_or("—".to_owned(), |d| d.to_string()),
        setup.latency.errors + setup.throughput.errors,
    );
}

/// The median of `values`; NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `value` with `decimals` decimals (and a sign if `signed`); "—" when there is no value.
fn number(value: f64, decimals: usize, signed: bool) -> String {
    match (value.is_finite(), signed) {
        (false, _) => "—".to_owned(),
        (true, true) => format!("{value:+.decimals$}"),
        (true, false) => format!("{value:.decimals$}"),
    }
}

/// `a / b` as "×1.23".
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("×{:.2}", a / b)
    } else {
        "—".to_owned()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
    let z = (seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn nginx_version(nginx: &Path) -> String {
    std::process::Command::new(nginx)
        .arg("-v")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace("nginx version: nginx/", "")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}
