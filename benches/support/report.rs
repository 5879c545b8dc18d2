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
    /// Sequential-request latencies, all rounds together.
    pub latency: Samples,
    /// The same, round by round (rounds are interleaved across setups, so round `i` of every
    /// setup ran at about the same time).
    pub rounds: Vec<Samples>,
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
            rounds: Vec::new(),
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
    /// Sequential-request latencies, all rounds together.
    pub samples: Samples,
    /// The same, round by round.
    pub rounds: Vec<Samples>,
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
            rounds: Vec::new(),
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
    /// Latency rounds, and sequential calls per setup in each.
    pub latency_rounds: usize,
    pub latency_per_round: usize,
    /// Concurrent connections of the throughput runs.
    pub connections: usize,
    /// Throughput rounds per setup, and the length of each.
    pub throughput_rounds: usize,
    pub throughput_time: Duration,
    /// 2 MB rounds, and requests per path in each.
    pub large_rounds: usize,
    pub large_per_round: usize,
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
    /// Callgrind figures.
    pub instructions: &'a Instructions,
    /// The idle-connections scenario, if run.
    pub idle: Option<Idle>,
    /// The hung-primary scenario, if run.
    pub hung: Option<Hung>,
    /// The static musl build's idle RSS, if it ran.
    pub musl_idle_kib: Option<u64>,
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
            "{}, {} ({} cores), nginx {}. Latency: 1 keep-alive connection per setup, {} rounds \
             interleaved across setups of {} sequential `engine_forkchoiceUpdatedV3` with payload \
             attributes ({} bytes, unique head hash); each latency figure is the median over rounds of \
             that round's percentile, with the lowest and highest round in brackets. Throughput: {} \
             keep-alive connections, {} round(s) of {:?} per setup (median round). Mock ELs answer at \
             once. Load generator, mock ELs and proxies share the machine's cores (load average at \
             start: {}), so absolute numbers are for this box; compare ratios, and only where ranges \
             do not overlap.\n",
            today(),
            cpu_model(),
            thread::available_parallelism().map_or(0, |n| n.get()),
            self.nginx_binary
                .map_or_else(|| "skipped".to_owned(), nginx_version),
            s.latency_rounds,
            s.latency_per_round,
            self.small_bytes,
            s.connections,
            s.throughput_rounds,
            s.throughput_time,
            s.load_average,
        );
        self.targets(&mut out);
        let header = "| p50 µs | p99 µs | added p50 µs | req/s | proxy CPU µs/req | EL queue drops | errors |";
        let rule = "|--:|--:|--:|--:|--:|--:|--:|";
        let _ = writeln!(out, "\n| setup {header}\n|---{rule}");
        for setup in &self.setups[..self.main_rows] {
            row(&mut out, &setup.label, setup, direct);
        }
        let _ = writeln!(
            out,
            "\n**Fan-out**: the same call through sync-proxy `--ack primary` to every EL \
             (the first EL's answer is returned).\n"
        );
        let _ = writeln!(out, "| ELs {header}\n|---{rule}");
        row(&mut out, "1 EL", &self.setups[1], direct);
        for setup in &self.setups[self.main_rows..] {
            row(&mut out, &setup.label, setup, direct);
        }
        let _ = writeln!(
            out,
            "\n**2 MB `newPayloadV4`** ({} bytes, unique block hash), {} rounds interleaved across paths \
             of {} sequential requests on 1 connection; median over rounds (lowest–highest round):\n",
            self.large_bytes, s.large_rounds, s.large_per_round
        );
        let _ = writeln!(
            out,
            "| path | p50 ms | added p50 ms | proxy CPU ms/req | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|");
        let large_direct = &self.large_paths[0];
        for (index, path) in self.large_paths.iter().enumerate() {
            let p50 = Spread::of_rounds(&path.rounds, 50.0);
            let added = if index == 0 {
                "—".to_owned()
            } else {
                added_spread(&path.rounds, &large_direct.rounds).show_ms(2, true)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {added} | {} | {} |",
                path.label,
                p50.show_ms(2, false),
                number(large_cpu_ms(path), 2, false),
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
            "\nJSON inspection alone (`sync_proxy::rpc::inspect`, median wall time in this process): {}.",
            inspect.join("; ")
        );
        self.instructions_table(&mut out);
        self.idle_table(&mut out);
        self.hung_table(&mut out);
        let _ = writeln!(
            out,
            "\n**Memory**, peak RSS (`VmHWM`): at start, after the small-request runs, after the 2 MB runs.\n"
        );
        let _ = writeln!(
            out,
            "| process | idle MiB | after small requests MiB | after 2 MB requests MiB |"
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
        let _ = writeln!(out, "| binary | bytes | MB |");
        let _ = writeln!(out, "|---|--:|--:|");
        if let Some((musl, name)) = &self.musl {
            let size = file_size(musl);
            let _ = writeln!(
                out,
                "| static musl release, `{name}` | {size} | {:.2} |",
                size as f64 / 1e6
            );
        } else {
            let _ = writeln!(out, "| static musl release | not built | — |");
        }
        let size = file_size(self.binary);
        let _ = writeln!(
            out,
            "| the binary measured above (glibc, release settings) | {size} | {:.2} |",
            size as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "\nAdded = setup − direct, round by round (the rounds are paired in time). CPU = user + \
             system time of the proxy process(es) during the throughput runs (mirror rows: nginx + \
             sync-proxy), from `/proc/<pid>/task/*/schedstat`. EL queue drops = requests sync-proxy \
             dropped from a full per-EL queue during the throughput run \
             (`sync_proxy_upstream_dropped_total`): with several connections the BNs outpace the ELs, \
             which sync-proxy serves one request at a time each."
        );
        for note in self.notes.iter().chain(&self.instructions.notes) {
            let _ = writeln!(out, "\nNote: {note}");
        }
        let _ = writeln!(out, "\nregenerate: cargo bench --bench proxy");
        out
    }

    /// The issue-10 targets, each as measured in this run, its ratio, and whether it is met.
    fn targets(&self, out: &mut String) {
        let find = |prefix: &str| self.setups.iter().find(|s| s.label.starts_with(prefix));
        let find_large = |prefix: &str| {
            self.large_paths
                .iter()
                .find(|p| p.label.starts_with(prefix))
        };
        let _ = writeln!(
            out,
            "| target | sync-proxy | nginx / reference | ratio | goal | met |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|---|");
        let mut line = |what: &str, ours: f64, theirs: f64, decimals: usize, goal: f64| {
            let ratio = ours / theirs;
            let met = match (ratio.is_finite(), goal.is_finite()) {
                (true, true) if ratio <= goal => "yes",
                (true, true) => "no",
                _ => "—",
            };
            let goal = if goal.is_finite() {
                format!("≤ {goal}")
            } else {
                "(figure only)".to_owned()
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {goal} | {met} |",
                number(ours, decimals, false),
                number(theirs, decimals, false),
                if ratio.is_finite() {
                    format!("{ratio:.2}")
                } else {
                    "—".to_owned()
                },
            );
        };
        let i = self.instructions;
        line(
            "fork choice: marginal instructions per request (callgrind)",
            i.sync_proxy_small.unwrap_or(f64::NAN),
            i.nginx_small.unwrap_or(f64::NAN),
            0,
            0.5,
        );
        let primary = find("sync-proxy `--ack primary`");
        let nginx = find("nginx `proxy_pass` (");
        let cpu = |setup: Option<&Setup>| setup.map_or(f64::NAN, cpu_per_request_us);
        line(
            "fork choice: CPU µs per request (throughput run)",
            cpu(primary),
            cpu(nginx),
            1,
            1.0,
        );
        line(
            "2 MB newPayload: `rpc::inspect` instructions per body byte (callgrind; reference 1)",
            i.inspect_per_byte.unwrap_or(f64::NAN),
            1.0,
            2,
            0.5,
        );
        line(
            "2 MB newPayload: marginal instructions per request (callgrind)",
            i.sync_proxy_large.unwrap_or(f64::NAN),
            i.nginx_large.unwrap_or(f64::NAN),
            0,
            f64::INFINITY,
        );
        let large_one = find_large("sync-proxy → 1 EL");
        let large_nginx = find_large("nginx `proxy_pass`, `client_body_buffer_size");
        let large_direct = &self.large_paths[0];
        line(
            "2 MB newPayload: CPU ms per request",
            large_one.map_or(f64::NAN, large_cpu_ms),
            large_nginx.map_or(f64::NAN, large_cpu_ms),
            2,
            1.0,
        );
        let added = |path: Option<&LargePath>| {
            path.map_or(f64::NAN, |p| {
                added_spread(&p.rounds, &large_direct.rounds).median / 1e3
            })
        };
        line(
            "2 MB newPayload: added p50 ms (median of rounds)",
            added(large_one),
            added(large_nginx),
            2,
            0.75,
        );
        let one = large_one.map_or(f64::NAN, large_cpu_ms);
        line(
            "fan-out 2 MB: CPU ms per request, 3 ELs vs 1 EL",
            find_large("sync-proxy → 3 ELs").map_or(f64::NAN, large_cpu_ms),
            one,
            2,
            1.3,
        );
        line(
            "fan-out 2 MB: CPU ms per request, 8 ELs vs 1 EL",
            find_large("sync-proxy → 8 ELs").map_or(f64::NAN, large_cpu_ms),
            one,
            2,
            2.0,
        );
        if let Some(idle) = &self.idle {
            line(
                &format!(
                    "{} idle keep-alive connections: added RSS MiB (reference 4 MiB)",
                    idle.connections
                ),
                idle.added_kib() as f64 / 1024.0,
                4.0,
                2,
                1.0,
            );
            line(
                "busy connection: instructions per call with them open (reference: without)",
                i.sync_proxy_small_crowded.unwrap_or(f64::NAN),
                i.sync_proxy_small.unwrap_or(f64::NAN),
                0,
                1.05,
            );
        }
        if let Some(idle_kib) = self.musl_idle_kib {
            line(
                "static musl: idle RSS MiB (reference 2 MiB)",
                idle_kib as f64 / 1024.0,
                2.0,
                2,
                1.0,
            );
        }
        if let Some((musl, _)) = &self.musl {
            line(
                "static musl release binary, MB (reference 1.0 MB)",
                file_size(musl) as f64 / 1e6,
                1.0,
                3,
                1.0,
            );
        }
        // Latency differences are called only where the round ranges do not overlap.
        if let (Some(primary), Some(nginx)) = (primary, nginx) {
            let ours = added_spread(&primary.rounds, &direct_rounds(self.setups));
            let theirs = added_spread(&nginx.rounds, &direct_rounds(self.setups));
            let _ = writeln!(
                out,
                "\nFork choice, added p50 over direct: sync-proxy {} µs, nginx {} µs: {}.",
                ours.show(1, true),
                theirs.show(1, true),
                verdict(&ours, &theirs)
            );
        }
        if let (Some(one), Some(nginx)) = (large_one, large_nginx) {
            let ours = added_spread(&one.rounds, &large_direct.rounds);
            let theirs = added_spread(&nginx.rounds, &large_direct.rounds);
            let _ = writeln!(
                out,
                "2 MB newPayload, added p50 over direct: sync-proxy {} ms, nginx {} ms: {}.",
                ours.show_ms(2, true),
                theirs.show_ms(2, true),
                verdict(&ours, &theirs)
            );
        }
    }

    fn instructions_table(&self, out: &mut String) {
        let i = self.instructions;
        let _ = writeln!(
            out,
            "\n**Instructions** (callgrind, user space, repeatable where time is not): marginal \
             instructions per request = (I(N₂) − I(N₁)) / (N₂ − N₁) of the server process, N = {} / {} \
             fork-choice calls and {} / {} 2 MB payloads on one keep-alive connection; `rpc::inspect` \
             of the 2 MB body in this process.\n",
            i.small_counts.0, i.small_counts.1, i.large_counts.0, i.large_counts.1
        );
        let _ = writeln!(out, "| figure | sync-proxy | nginx | ratio |");
        let _ = writeln!(out, "|---|--:|--:|--:|");
        let show = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0}"));
        let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| fork choice, per request | {} | {} | {} |",
            show(i.sync_proxy_small),
            show(i.nginx_small),
            ratio_of(i.sync_proxy_small, i.nginx_small)
        );
        let _ = writeln!(
            out,
            "| fork choice, per request, 1000 idle keep-alive connections open | {} | — | {} vs none |",
            show(i.sync_proxy_small_crowded),
            ratio_of(i.sync_proxy_small_crowded, i.sync_proxy_small)
        );
        let _ = writeln!(
            out,
            "| 2 MB newPayload, per request | {} | {} | {} |",
            show(i.sync_proxy_large),
            show(i.nginx_large),
            ratio_of(i.sync_proxy_large, i.nginx_large)
        );
        for (figure, els) in i.sync_proxy_large_fan_out.iter().zip([3, 8]) {
            let _ = writeln!(
                out,
                "| 2 MB newPayload, per request, {els} ELs | {} | — | {} vs 1 EL |",
                show(*figure),
                ratio_of(*figure, i.sync_proxy_large)
            );
        }
        let _ = writeln!(
            out,
            "| `rpc::inspect`, per 2 MB body byte | {} | — | — |",
            i.inspect_per_byte
                .map_or("—".to_owned(), |v| format!("{v:.2}"))
        );
    }

    fn idle_table(&self, out: &mut String) {
        let Some(idle) = &self.idle else {
            return;
        };
        let _ = writeln!(
            out,
            "\n**{} idle keep-alive beacon connections** (each sent one fork-choice call, then stays \
             open): two sync-proxies in front of the same EL, one crowded with them and one not; the \
             busy client's latency in {} rounds interleaved between them (median, lowest–highest round).\n",
            idle.connections, idle.rounds
        );
        let _ = writeln!(
            out,
            "| sync-proxy | RSS MiB | busy p50 µs | busy p99 µs | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|");
        let _ = writeln!(
            out,
            "| without idle connections | {} | {} | {} | {} |",
            mib(idle.rss_before_kib),
            idle.quiet_p50.show(1, false),
            idle.quiet_p99.show(1, false),
            idle.quiet_errors
        );
        let _ = writeln!(
            out,
            "| with {} idle connections | {} (+{}) | {} | {} | {} |",
            idle.connections,
            mib(idle.rss_after_kib),
            mib(idle.added_kib()),
            idle.crowded_p50.show(1, false),
            idle.crowded_p99.show(1, false),
            idle.crowded_errors
        );
        let _ = writeln!(
            out,
            "\nBusy p99 with vs without: {}.",
            verdict(&idle.crowded_p99, &idle.quiet_p99)
        );
    }

    fn hung_table(&self, out: &mut String) {
        let Some(hung) = &self.hung else {
            return;
        };
        let _ = writeln!(
            out,
            "\n**Primary EL hung** (it answers `eth_syncing` probes but never an Engine API call): \
             sync-proxy `--ack primary` with default `--hedge-after` ({}), a second healthy EL; {} \
             sequential {}-byte `newPayloadV4` from one beacon node.\n",
            hung.hedge_after, hung.requests, hung.bytes
        );
        let slow = hung
            .samples
            .nanos
            .iter()
            .filter(|&&n| n >= 500_000_000)
            .count();
        let _ = writeln!(
            out,
            "| answer time | p50 ms | p99 ms | max ms | answers ≥ 0.5 s | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
        let _ = writeln!(
            out,
            "| beacon node, `newPayload` | {} | {} | {} | {slow} of {} | {} |",
            number(hung.samples.percentile_us(50.0) / 1e3, 2, false),
            number(hung.samples.percentile_us(99.0) / 1e3, 2, false),
            number(hung.samples.percentile_us(100.0) / 1e3, 2, false),
            hung.samples.nanos.len(),
            hung.samples.errors
        );
        let _ = writeln!(
            out,
            "\nThe slow answers are the hedged ones (the second EL's, after `--hedge-after`) until \
             the primary's request timeout marks it unhealthy; the rest come from the healthy EL."
        );
    }
}

/// The instruction figures of the run (callgrind).
#[derive(Default)]
pub struct Instructions {
    /// Requests per run: the marginal cost is (I(more) − I(fewer)) / (more − fewer).
    pub small_counts: (usize, usize),
    pub large_counts: (usize, usize),
    pub sync_proxy_small: Option<f64>,
    /// The same with the idle connections of the idle scenario open.
    pub sync_proxy_small_crowded: Option<f64>,
    pub nginx_small: Option<f64>,
    pub sync_proxy_large: Option<f64>,
    /// The same to 3 and to 8 ELs.
    pub sync_proxy_large_fan_out: [Option<f64>; 2],
    pub nginx_large: Option<f64>,
    /// `rpc::inspect` on the large body, per body byte.
    pub inspect_per_byte: Option<f64>,
    /// Why a figure is missing.
    pub notes: Vec<String>,
}

/// Idle connections: memory and the busy client's latency.
pub struct Idle {
    pub connections: usize,
    pub rounds: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub quiet_p50: Spread,
    pub quiet_p99: Spread,
    pub quiet_errors: u64,
    pub crowded_p50: Spread,
    pub crowded_p99: Spread,
    pub crowded_errors: u64,
}

impl Idle {
    /// RSS the idle connections added.
    pub fn added_kib(&self) -> u64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib)
    }
}

/// The hung-primary scenario.
pub struct Hung {
    pub hedge_after: &'static str,
    pub requests: usize,
    pub bytes: usize,
    pub samples: Samples,
}

/// A figure over rounds: the median round and the lowest and highest.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of per-round values (NaN ones left out).
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: median(&sorted),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Of each round's `percent` percentile, in µs.
    pub fn of_rounds(rounds: &[Samples], percent: f64) -> Spread {
        let values: Vec<f64> = rounds.iter().map(|r| r.percentile_us(percent)).collect();
        Spread::of(&values)
    }

    fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// "12.3 (10.1–15.0)".
    fn show(&self, decimals: usize, signed: bool) -> String {
        format!(
            "{} ({}–{})",
            number(self.median, decimals, signed),
            number(self.min, decimals, signed),
            number(self.max, decimals, signed)
        )
    }

    /// The same, µs shown as ms.
    fn show_ms(&self, decimals: usize, signed: bool) -> String {
        Spread {
            median: self.median / 1e3,
            min: self.min / 1e3,
            max: self.max / 1e3,
        }
        .show(decimals, signed)
    }
}

/// "lower", "higher" or "no difference called" for `ours` against `theirs`.
fn verdict(ours: &Spread, theirs: &Spread) -> String {
    if !ours.median.is_finite() || !theirs.median.is_finite() {
        return "not measured".to_owned();
    }
    if ours.overlaps(theirs) {
        "the round ranges overlap: no difference is called".to_owned()
    } else if ours.max < theirs.min {
        "lower in every round (ranges do not overlap)".to_owned()
    } else {
        "higher in every round (ranges do not overlap)".to_owned()
    }
}

/// Round-by-round p50 of `rounds` minus that of `floor` (same round index), in µs.
fn added_spread(rounds: &[Samples], floor: &[Samples]) -> Spread {
    let values: Vec<f64> = rounds
        .iter()
        .zip(floor)
        .map(|(r, f)| r.percentile_us(50.0) - f.percentile_us(50.0))
        .collect();
    Spread::of(&values)
}

fn direct_rounds(setups: &[Setup]) -> Vec<Samples> {
    setups[0].rounds.clone()
}

fn cpu_per_request_us(setup: &Setup) -> f64 {
    let total: f64 = setup.cpu_times.iter().map(Duration::as_secs_f64).sum();
    if setup.cpu_times.is_empty() || setup.throughput.completed == 0 {
        return f64::NAN;
    }
    total * 1e6 / setup.throughput.completed as f64
}

fn large_cpu_ms(path: &LargePath) -> f64 {
    if path.procs.is_empty() {
        return f64::NAN;
    }
    let calls = path.samples.nanos.len() as u64 + path.samples.errors;
    path.cpu_time.as_secs_f64() * 1e3 / calls.max(1) as f64
}

/// One row of the latency/throughput tables.
fn row(out: &mut String, label: &str, setup: &Setup, direct: &Setup) {
    let is_direct = std::ptr::eq(setup, direct);
    let p50 = Spread::of_rounds(&setup.rounds, 50.0);
    let p99 = Spread::of_rounds(&setup.rounds, 99.0);
    let added = if is_direct {
        "—".to_owned()
    } else {
        added_spread(&setup.rounds, &direct.rounds).show(1, true)
    };
    let rps = median(&setup.rates);
    let cpu_per_request = if setup.cpu_times.is_empty() {
        "—".to_owned()
    } else {
        let seconds: Vec<f64> = setup.cpu_times.iter().map(Duration::as_secs_f64).collect();
        let per_request = |cpu: f64| cpu * 1e6 / (setup.throughput.completed.max(1) as f64);
        let mut text = format!("{:.1}", per_request(seconds.iter().sum()));
        if seconds.len() > 1 {
            let parts: Vec<String> = seconds
                .iter()
                .map(|&c| format!("{:.1}", per_request(c)))
                .collect();
            let _ = write!(text, " ({})", parts.join(" + "));
        }
        text
    };
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {added} | {} | {cpu_per_request} | {} | {} |",
        p50.show(1, false),
        p99.show(1, false),
        number(rps, 0, false),
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
