//! What the soak found, judged against its bounds and written as Markdown: the proxy's RSS and
//! open files over time, the beacon nodes' answers, and per execution client the blocks missing,
//! delivered out of order or twice, and the catch-up after each restart.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::beacon::{Call, Tally};
use crate::chain::Block;
use crate::execution_client::Receipt;

/// RSS may grow by this much after the warm-up: one catch-up window's worth of allocator
/// slack. A leak of one block per slot (1 MB/s) crosses it in 16 s, one of 100 bytes per request
/// in about a day.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;
/// Open files may grow by this many after the warm-up: a connection per lane and execution
/// client being replaced at the moment of a sample.
const MAX_FD_GROWTH: u64 = 6;
/// How long the proxy may take to exit after SIGTERM: its default grace (5 s) and a margin.
pub const MAX_EXIT_WAIT: Duration = Duration::from_secs(10);
/// Rows of the RSS and file table: the run is cut into this many periods.
const TIMELINE_ROWS: u32 = 10;
/// How late a sample may be and still count for its row of the table.
const TICK_SLACK: Duration = Duration::from_millis(500);
/// Missing blocks named in a failure.
const MAX_NAMED_MISSING: usize = 5;

/// The proxy at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Time since the soak started.
    pub at: Duration,
    /// Resident set size.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// One kill of the victim and its restart.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    /// When it was killed.
    pub down_at: Instant,
    /// When it listened again.
    pub up_at: Option<Instant>,
}

impl Outage {
    /// A kill at `down_at`, not restarted yet.
    pub fn new(down_at: Instant) -> Outage {
        Outage {
            down_at,
            up_at: None,
        }
    }
}

/// How one restart went.
#[derive(Clone, Copy, Debug)]
struct CatchUp {
    /// Time since the soak started, at the kill.
    at: Duration,
    down: Duration,
    /// From the restart until the client had every block answered to a beacon node; `None` if
    /// that did not happen before the next kill (or the end).
    took: Option<Duration>,
    /// Blocks it received in that time: what it missed, replayed, and any new ones.
    replayed: usize,
}

/// What became of the blocks at one execution client.
#[derive(Clone, Debug)]
struct Delivery {
    received: usize,
    /// Slots of the blocks it never got.
    missing: Vec<u64>,
    out_of_order: usize,
    twice: usize,
}

/// Everything a run observed.
pub struct Observed {
    /// When the soak started.
    pub started: Instant,
    /// How long blocks were published.
    pub duration: Duration,
    /// The chain's and the chaos' seed.
    pub seed: u64,
    /// The execution client killed and restarted.
    pub victim: usize,
    /// Growth is counted after this.
    pub warm_up: Duration,
    /// Every block published, in order.
    pub blocks: Vec<Arc<Block>>,
    /// The beacon nodes' answers.
    pub tally: Tally,
    /// The proxy's RSS and open files over time.
    pub samples: Vec<Sample>,
    /// Each execution client's blocks, in arrival order.
    pub receipts: Vec<Vec<Receipt>>,
    /// The victim's kills and restarts.
    pub outages: Vec<Outage>,
    /// When each block was first answered to a beacon node.
    pub first_answers: HashMap<String, Instant>,
    /// Counters of the proxy's `/metrics` at the end.
    pub counters: Vec<(&'static str, u64)>,
    /// How long the proxy took to exit after SIGTERM, if it did within [`MAX_EXIT_WAIT`].
    pub exit: Option<Duration>,
}

/// The soak's findings.
pub struct Report {
    duration: Duration,
    seed: u64,
    victim: usize,
    warm_up: Duration,
    blocks: usize,
    block_bytes: (usize, usize, usize),
    tally: Tally,
    samples: Vec<Sample>,
    deliveries: Vec<Delivery>,
    catch_ups: Vec<CatchUp>,
    counters: Vec<(&'static str, u64)>,
    /// How long the proxy took to exit after SIGTERM, if it did.
    exit: Option<Duration>,
}

impl Report {
    /// Judges a run.
    pub fn new(run: Observed) -> Report {
        let sizes: Vec<usize> = run.blocks.iter().map(|b| b.bytes).collect();
        let block_bytes = (
            sizes.iter().sum(),
            sizes.iter().copied().min().unwrap_or(0),
            sizes.iter().copied().max().unwrap_or(0),
        );
        let deliveries = (run.receipts.iter())
            .map(|r| delivery(&run.blocks, r))
            .collect();
        let catch_ups = match run.receipts.get(run.victim) {
            Some(receipts) => catch_ups(&run, receipts),
            None => Vec::new(),
        };
        Report {
            duration: run.duration,
            seed: run.seed,
            victim: run.victim,
            warm_up: run.warm_up,
            blocks: run.blocks.len(),
            block_bytes,
            tally: run.tally,
            samples: run.samples,
            deliveries,
            catch_ups,
            counters: run.counters,
            exit: run.exit,
        }
    }

    /// What went wrong, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (index, delivery) in self.deliveries.iter().enumerate() {
            if !delivery.missing.is_empty() {
                let named = &delivery.missing[..delivery.missing.len().min(MAX_NAMED_MISSING)];
                failures.push(format!(
                    "el-{index} misses {} blocks (slots {named:?}…)",
                    delivery.missing.len()
                ));
            }
            if delivery.out_of_order > 0 {
                failures.push(format!(
                    "el-{index} got {} blocks before their parent",
                    delivery.out_of_order
                ));
            }
        }
        let errors: u64 = self.tally.calls.iter().map(|c| c.errors).sum();
        if errors > 0 {
            failures.push(format!(
                "{errors} error answers to beacon nodes, while two execution clients were healthy: {:?}",
                self.tally.error_samples
            ));
        }
        let (rss, fds) = self.growth();
        if rss.growth() > MAX_RSS_GROWTH_KIB {
            failures.push(format!(
                "RSS grew {} KiB after the warm-up ({} → {} KiB), over the {} KiB bound",
                rss.growth(),
                rss.baseline,
                rss.peak,
                MAX_RSS_GROWTH_KIB
            ));
        }
        if fds.growth() > MAX_FD_GROWTH {
            failures.push(format!(
                "open files grew by {} after the warm-up ({} → {}), over the bound of {}",
                fds.growth(),
                fds.baseline,
                fds.peak,
                MAX_FD_GROWTH
            ));
        }
        if self.exit.is_none() {
            failures.push(format!(
                "the proxy did not exit within {} s of SIGTERM",
                MAX_EXIT_WAIT.as_secs()
            ));
        }
        failures
    }

    /// The findings as Markdown, for the README.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let restarts = self.catch_ups.len();
        let _ = writeln!(
            out,
            "## Soak: {} s, 3 beacon nodes → sync-proxy → 3 execution clients, el-{} killed and restarted {restarts} times\n",
            self.duration.as_secs(),
            self.victim
        );
        let (total, min, max) = self.block_bytes;
        let _ = writeln!(
            out,
            "Seed {}; {} blocks at one per second, {:.0} MB in all, {} KB to {} KB each.\n",
            self.seed,
            self.blocks,
            total as f64 / 1e6,
            min / 1000,
            max / 1000
        );
        self.memory_tables(&mut out);
        self.answer_table(&mut out);
        self.delivery_tables(&mut out);
        let _ = writeln!(
            out,
            "\"Received again\": after an outage the proxy's catch-up replays every recent payload, since a restarted execution client may have lost blocks it had.\n"
        );
        if !self.counters.is_empty() {
            let counters: Vec<String> = (self.counters.iter())
                .map(|(name, value)| format!("`{name}` {value}"))
                .collect();
            let _ = writeln!(out, "Proxy counters at the end: {}.\n", counters.join(", "));
        }
        let _ = match self.exit {
            Some(took) => writeln!(
                out,
                "SIGTERM at the end: exited after {:.1} s.\n",
                took.as_secs_f64()
            ),
            None => writeln!(
                out,
                "SIGTERM at the end: still running {} s later.\n",
                MAX_EXIT_WAIT.as_secs()
            ),
        };
        let failures = self.failures();
        let _ = match failures.is_empty() {
            true => writeln!(out, "Verdict: passed."),
            false => writeln!(out, "Verdict: FAILED: {}", failures.join("; ")),
        };
        out
    }

    /// RSS and open files after the warm-up: the first sample after it, and the most since.
    fn growth(&self) -> (Growth, Growth) {
        let after: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at >= self.warm_up)
            .collect();
        let growth = |value: fn(&Sample) -> u64| Growth {
            baseline: after.first().map_or(0, |s| value(s)),
            peak: after.iter().map(|s| value(s)).max().unwrap_or(0),
        };
        (growth(|s| s.rss_kib), growth(|s| s.fds as u64))
    }

    fn memory_tables(&self, out: &mut String) {
        let (rss, fds) = self.growth();
        let first = self.samples.first();
        let last = self.samples.last();
        let _ = writeln!(
            out,
            "| proxy | at start | after warm-up ({} s) | peak after | at end | growth after warm-up (bound) |\n|---|--:|--:|--:|--:|--:|",
            self.warm_up.as_secs()
        );
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let _ = writeln!(
            out,
            "| RSS | {} | {} | {} | {} | {} ({}) |",
            mib(first.map_or(0, |s| s.rss_kib)),
            mib(rss.baseline),
            mib(rss.peak),
            mib(last.map_or(0, |s| s.rss_kib)),
            mib(rss.growth()),
            mib(MAX_RSS_GROWTH_KIB)
        );
        let _ = writeln!(
            out,
            "| open files | {} | {} | {} | {} | {} ({}) |\n",
            first.map_or(0, |s| s.fds),
            fds.baseline,
            fds.peak,
            last.map_or(0, |s| s.fds),
            fds.growth(),
            MAX_FD_GROWTH
        );
        let period = (self.duration / TIMELINE_ROWS).max(Duration::from_secs(5));
        let _ = writeln!(out, "| time | RSS | open files |\n|--:|--:|--:|");
        let mut next = Duration::ZERO;
        for sample in &self.samples {
            // Samples come a few milliseconds after their due time: a row per period, on a
            // grid, and the last one.
            if sample.at + TICK_SLACK >= next || std::ptr::eq(sample, last.unwrap_or(sample)) {
                let _ = writeln!(
                    out,
                    "| {} s | {} | {} |",
                    sample.at.as_secs(),
                    mib(sample.rss_kib),
                    sample.fds
                );
                while next <= sample.at + TICK_SLACK {
                    next += period;
                }
            }
        }
        out.push('\n');
    }

    fn answer_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| beacon nodes' calls | answered | `VALID` / payload | `SYNCING` | errors | p50 ms | p99 ms | max ms |\n|---|--:|--:|--:|--:|--:|--:|--:|"
        );
        for call in Call::ALL {
            let tally = &self.tally.calls[call as usize];
            let mut latencies = tally.latencies.clone();
            latencies.sort_unstable();
            let at = |q: f64| {
                let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
                latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                call.name(),
                latencies.len(),
                tally.ok,
                tally.syncing,
                tally.errors,
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
        out.push('\n');
        for sample in &self.tally.error_samples {
            let _ = writeln!(out, "- {sample}");
        }
        if !self.tally.error_samples.is_empty() {
            out.push('\n');
        }
    }

    fn delivery_tables(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| execution client | blocks received | missing at the end | out of order | received again | restarts | catch-up min / median / max |\n|---|--:|--:|--:|--:|--:|--:|"
        );
        for (index, delivery) in self.deliveries.iter().enumerate() {
            let (restarts, catch_up) = match index == self.victim {
                true => (self.catch_ups.len().to_string(), self.catch_up_summary()),
                false => ("0".to_owned(), "—".to_owned()),
            };
            let _ = writeln!(
                out,
                "| el-{index}{} | {} | {} | {} | {} | {restarts} | {catch_up} |",
                if index == 0 { " (primary)" } else { "" },
                delivery.received,
                delivery.missing.len(),
                delivery.out_of_order,
                delivery.twice
            );
        }
        out.push('\n');
        if self.catch_ups.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "| restart of el-{} | killed at | down for | caught up after | blocks received meanwhile |\n|--:|--:|--:|--:|--:|",
            self.victim
        );
        for (number, catch_up) in self.catch_ups.iter().enumerate() {
            let took = catch_up
                .took
                .map_or("not before the next kill".to_owned(), |t| {
                    format!("{:.2} s", t.as_secs_f64())
                });
            let _ = writeln!(
                out,
                "| {} | {} s | {:.1} s | {took} | {} |",
                number + 1,
                catch_up.at.as_secs(),
                catch_up.down.as_secs_f64(),
                catch_up.replayed
            );
        }
        out.push('\n');
    }

    fn catch_up_summary(&self) -> String {
        let mut took: Vec<Duration> = self.catch_ups.iter().filter_map(|c| c.took).collect();
        if took.is_empty() {
            return "—".to_owned();
        }
        took.sort_unstable();
        let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        format!(
            "{} / {} / {}",
            secs(took[0]),
            secs(took[took.len() / 2]),
            secs(took[took.len() - 1])
        )
    }
}

/// A value after the warm-up: where it started and its most.
struct Growth {
    baseline: u64,
    peak: u64,
}

impl Growth {
    fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }
}

fn delivery(blocks: &[Arc<Block>], receipts: &[Receipt]) -> Delivery {
    let mut seen = HashSet::new();
    let twice = receipts
        .iter()
        .filter(|r| !seen.insert(r.hash.as_str()))
        .count();
    Delivery {
        received: seen.len(),
        missing: blocks
            .iter()
            .filter(|b| !seen.contains(b.hash.as_str()))
            .map(|b| b.slot)
            .collect(),
        out_of_order: receipts.iter().filter(|r| !r.in_order).count(),
        twice,
    }
}

/// For each restart: how long until the client had every block answered to a beacon node before
/// that moment. It can only become true when a block arrives (or at the restart itself), so
/// those are the moments checked.
fn catch_ups(run: &Observed, receipts: &[Receipt]) -> Vec<CatchUp> {
    let (outages, started) = (&run.outages, run.started);
    let mut received: HashMap<&str, Instant> = HashMap::new();
    for receipt in receipts {
        received.entry(receipt.hash.as_str()).or_insert(receipt.at);
    }
    let mut answered: Vec<(Instant, &str)> = (run.first_answers.iter())
        .map(|(h, at)| (*at, h.as_str()))
        .collect();
    answered.sort_unstable();
    // The latest first receipt among the blocks answered so far (`None`: one is missing).
    let mut latest: Vec<Option<Instant>> = Vec::with_capacity(answered.len());
    for (_, hash) in &answered {
        let before = latest.last().copied().unwrap_or(Some(started));
        latest.push(
            before
                .zip(received.get(hash).copied())
                .map(|(a, b)| a.max(b)),
        );
    }
    let caught_up = |t: Instant| {
        let due = answered.partition_point(|(at, _)| *at < t);
        due == 0 || latest[due - 1].is_some_and(|last| last <= t)
    };
    let mut out = Vec::new();
    for (number, outage) in outages.iter().enumerate() {
        let Some(up) = outage.up_at else { continue };
        let until = outages.get(number + 1).map(|o| o.down_at);
        let moments = std::iter::once(up).chain(
            receipts
                .iter()
                .map(|r| r.at)
                .filter(|&at| at >= up && until.is_none_or(|until| at < until)),
        );
        let done = moments.into_iter().find(|&t| caught_up(t));
        let replayed = receipts
            .iter()
            .filter(|r| r.at >= up && done.is_some_and(|done| r.at <= done))
            .count();
        out.push(CatchUp {
            at: outage.down_at.saturating_duration_since(started),
            down: up.saturating_duration_since(outage.down_at),
            took: done.map(|done| done.saturating_duration_since(up)),
            replayed,
        });
    }
    out
}
