//! End-to-end benchmark of the `sync-proxy` binary, side by side in one run with the floor (the
//! load generator talking to a mock execution client directly) and with nginx (`proxy_pass`
//! to a keep-alive upstream, and `proxy_pass` plus `mirror` to sync-proxy as in DESIGN.md's
//! appendix): added latency (p50, p99; per round, rounds interleaved across setups, median with
//! the lowest and highest round), requests/s, CPU per request, fan-out to 1/3/8 ELs, a 2 MB
//! `newPayload`, instructions per request under callgrind, 1,000 idle keep-alive connections,
//! a hung primary EL, peak RSS and binary size, and a table of issue 10's targets. Prints
//! Markdown (for the README) and writes it to `target/bench-proxy.md`; child logs, `/metrics`
//! and callgrind profiles go to `target/bench-proxy-logs/`.
//!
//! `cargo bench --bench proxy` (about a minute), or with `-- --quick` or
//! `SYNC_PROXY_BENCH_QUICK=1` (about 25 s, a CI smoke run with fewer samples). With `valgrind`
//! on `PATH` it also counts instructions under callgrind (sync-proxy and nginx, marginal per
//! request); `SYNC_PROXY_BENCH_ONLY=instructions` runs only that part, and
//! `SYNC_PROXY_BENCH_BINARY=target/profiling/sync-proxy` measures a build with symbols, whose
//! profiles (`target/bench-proxy-logs/callgrind.*.out`) `callgrind_annotate` can read. nginx rows need
//! `nginx` on `PATH` (or `SYNC_PROXY_BENCH_NGINX=/path/to/nginx`; `=off` skips them).
//! `SYNC_PROXY_BENCH_MUSL=/path` names the static build to compare (default:
//! `target/x86_64-unknown-linux-musl/release/sync-proxy`, if it was built).
//!
//! Everything runs on 127.0.0.1; every loop is bounded in count and time; every child is killed
//! at the end, also on panic. It measures the binary Cargo builds for this benchmark (the bench
//! profile, i.e. the release settings); it is not a micro-benchmark of modules (see `rpc.rs`,
//! `jwt.rs`, `tracker.rs`).

mod support;

use std::cell::RefCell;
use std::fs;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use support::callgrind;
use support::chart;
use support::load::{self, Client, Request};
use support::mock_el::MockEl;
use support::nginx::{self, Mirror, Server};
use support::procs::{self, Proc, TempDir};
use support::report::{
    Hung, Idle, Instructions, LargePath, Measured, Method, Report, Setup, Spread,
};

/// The binary under test, built by Cargo for this benchmark.
const SYNC_PROXY: &str = env!("CARGO_BIN_EXE_sync-proxy");

/// The statically linked build the project ships, relative to a target directory.
const MUSL_BINARY: &str = "x86_64-unknown-linux-musl/release/sync-proxy";

/// Transactions in the large `newPayload`, and hex digits of each: about 2 MB of body, as in
/// `rpc.rs`.
const LARGE_TRANSACTIONS: usize = 2_000;
const LARGE_TRANSACTION_HEX_BYTES: usize = 1_000;

/// Extra mock ELs for the widest fan-out (8 ELs = the shared one plus these).
const EXTRA_ELS: usize = 7;

/// Time the proxies get after start to probe their ELs before idle RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Pause after each throughput run, so queued deliveries (immediate ack, slow fan-out legs)
/// drain before the next setup is measured.
const DRAIN: Duration = Duration::from_millis(300);

/// Errors after which a setup is left out of the remaining latency rounds: it is broken, and
/// the run must end in bounded time anyway.
const MAX_SETUP_ERRORS: u64 = 20;

/// `client_body_buffer_size` of the tuned nginx: a 2 MB body stays in memory.
const NGINX_BODY_BUFFER: &str = "4m";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--inspect-count") {
        let count = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(1);
        return inspect_only(count);
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("SYNC_PROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
    // `cargo test --benches` runs this without `--bench`: no minute-long run there.
    if !args.iter().any(|a| a == "--bench") && !quick {
        println!(
            "proxy benchmark: run it with `cargo bench --bench proxy` (add `-- --quick` for a smoke run)"
        );
        return;
    }
    if let Err(e) = run(&Settings::new(quick)) {
        eprintln!("proxy benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// How much to measure: the full run or the CI smoke run.
struct Settings {
    quick: bool,
    /// Latency is measured in rounds that visit every setup in turn, so background load on the
    /// shared machine hits all setups alike.
    latency_rounds: usize,
    latency_per_round: usize,
    /// Upper bound of one setup's share of one round.
    round_time_cap: Duration,
    warm_up_calls: usize,
    throughput_connections: usize,
    /// Throughput is measured in rounds across setups too; the median round is reported.
    throughput_rounds: usize,
    throughput_time: Duration,
    max_per_connection: u64,
    large_rounds: usize,
    large_per_round: usize,
    inspect_small_runs: usize,
    inspect_large_runs: usize,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                quick,
                latency_rounds: 5,
                latency_per_round: 200,
                round_time_cap: Duration::from_secs(1),
                warm_up_calls: 50,
                throughput_connections: 8,
                throughput_rounds: 1,
                throughput_time: Duration::from_millis(1_000),
                max_per_connection: 50_000,
                large_rounds: 2,
                large_per_round: 5,
                inspect_small_runs: 1_000,
                inspect_large_runs: 5,
            }
        } else {
            Settings {
                quick,
                latency_rounds: 20,
                latency_per_round: 500,
                round_time_cap: Duration::from_secs(2),
                warm_up_calls: 200,
                throughput_connections: 8,
                throughput_rounds: 3,
                throughput_time: Duration::from_secs(1),
                max_per_connection: 200_000,
                large_rounds: 6,
                large_per_round: 10,
                inspect_small_runs: 10_000,
                inspect_large_runs: 30,
            }
        }
    }
}

/// A sync-proxy started for the run.
struct SyncProxy {
    /// Base name of its log and metrics files.
    file: String,
    addr: SocketAddr,
    /// Index into the run's processes.
    proc: usize,
}

/// The running children and where their files go.
struct Lab {
    procs: Vec<Proc>,
    sync_proxies: Vec<SyncProxy>,
    log_dir: PathBuf,
}

impl Lab {
    /// Starts a sync-proxy on a fresh loopback port in front of `els`.
    fn start_sync_proxy(
        &mut self,
        file: &str,
        program: &Path,
        els: &[SocketAddr],
        ack: &str,
    ) -> io::Result<(usize, SocketAddr)> {
        self.start_sync_proxy_with(file, program, els, ack, &[])
    }

    /// [`Lab::start_sync_proxy`] with extra command-line arguments.
    fn start_sync_proxy_with(
        &mut self,
        file: &str,
        program: &Path,
        els: &[SocketAddr],
        ack: &str,
        extra: &[&str],
    ) -> io::Result<(usize, SocketAddr)> {
        let addr = procs::free_addr()?;
        let args = sync_proxy_args(addr, els, ack, extra);
        let log = self.log_dir.join(format!("{file}.log"));
        let mut proc = Proc::spawn(file, program, &args, &log)?;
        proc.wait_listening(addr)?;
        self.procs.push(proc);
        let index = self.procs.len() - 1;
        self.sync_proxies.push(SyncProxy {
            file: file.to_owned(),
            addr,
            proc: index,
        });
        Ok((index, addr))
    }

    fn push(&mut self, proc: Proc) -> usize {
        self.procs.push(proc);
        self.procs.len() - 1
    }

    fn cpu_times(&self, indexes: &[usize]) -> Vec<Duration> {
        indexes.iter().map(|&i| self.procs[i].cpu_time()).collect()
    }

    /// Queue drops of every sync-proxy, by file name.
    fn drops(&self) -> Vec<(String, Option<u64>)> {
        self.sync_proxies
            .iter()
            .map(|p| (p.file.clone(), queue_drops(p.addr)))
            .collect()
    }
}

/// The binary under test: Cargo's build for this benchmark, or `SYNC_PROXY_BENCH_BINARY` (for
/// example `target/profiling/sync-proxy`, whose symbols make the callgrind profiles readable).
fn sync_proxy_binary() -> PathBuf {
    std::env::var_os("SYNC_PROXY_BENCH_BINARY")
        .map_or_else(|| PathBuf::from(SYNC_PROXY), PathBuf::from)
}

/// The command line of a sync-proxy listening on `addr` in front of `els`.
fn sync_proxy_args(addr: SocketAddr, els: &[SocketAddr], ack: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        addr.to_string(),
        "--ack".to_owned(),
        ack.to_owned(),
        // The default level, as operators run it.
        "--log-level".to_owned(),
        "info".to_owned(),
    ];
    for el in els {
        args.push("--el".to_owned());
        args.push(format!("http://{el}"));
    }
    args.extend(extra.iter().map(|&a| a.to_owned()));
    args
}

fn run(settings: &Settings) -> io::Result<()> {
    let started = Instant::now();
    let load_average = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let binary = sync_proxy_binary();
    let target_dir = binary
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let log_dir = target_dir.join("bench-proxy-logs");
    fs::create_dir_all(&log_dir)?;
    let temp = TempDir::new("sync-proxy-bench")?;
    let musl = match std::env::var_os("SYNC_PROXY_BENCH_MUSL") {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => [
            target_dir.join(MUSL_BINARY),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(MUSL_BINARY),
        ]
        .into_iter()
        .find(|path| path.is_file()),
    };
    let nginx_binary = match std::env::var("SYNC_PROXY_BENCH_NGINX") {
        Ok(choice) if choice == "off" => None,
        Ok(path) => Some(PathBuf::from(path)),
        Err(_) => procs::which("nginx"),
    };
    progress(&format!(
        "{}; binary {}; musl build {}; nginx {}",
        if settings.quick {
            "quick run"
        } else {
            "full run"
        },
        binary.display(),
        musl.as_ref()
            .map_or("not found".to_owned(), |p| p.display().to_string()),
        nginx_binary
            .as_ref()
            .map_or("not found".to_owned(), |p| p.display().to_string())
    ));

    // Mock ELs: one shared by every setup, one behind the immediate-ack proxy (in the mirror
    // deployment sync-proxy drives other ELs than nginx's), and extras for fan-out.
    let el = MockEl::start()?;
    let el_behind_mirror = MockEl::start()?;
    let extra_els = (0..EXTRA_ELS)
        .map(|_| MockEl::start())
        .collect::<io::Result<Vec<_>>>()?;
    let els = |count: usize| -> Vec<SocketAddr> {
        std::iter::once(el.addr())
            .chain(extra_els.iter().map(MockEl::addr))
            .take(count)
            .collect()
    };

    let mut small = Request::fork_choice();
    let mut large = Request::new_payload(LARGE_TRANSACTIONS, LARGE_TRANSACTION_HEX_BYTES);
    let instructions = match callgrind::valgrind() {
        Some(valgrind) => measure_instructions(
            settings,
            &valgrind,
            nginx_binary.as_deref(),
            el.addr(),
            (&log_dir, temp.path()),
            &mut small,
            &mut large,
        ),
        None => Instructions {
            notes: vec!["callgrind figures skipped: `valgrind` is not on PATH".to_owned()],
            ..Instructions::default()
        },
    };
    if std::env::var("SYNC_PROXY_BENCH_ONLY").is_ok_and(|v| v == "instructions") {
        println!(
            "small {:?}: sync-proxy {:?} crowded {:?} nginx {:?}; large {:?}: sync-proxy {:?} nginx {:?}; inspect/byte {:?}; {:?}",
            instructions.small_counts,
            instructions.sync_proxy_small,
            instructions.sync_proxy_small_crowded,
            instructions.nginx_small,
            instructions.large_counts,
            instructions.sync_proxy_large,
            instructions.nginx_large,
            instructions.inspect_per_byte,
            instructions.notes
        );
        return Ok(());
    }

    let mut lab = Lab {
        procs: Vec::new(),
        sync_proxies: Vec::new(),
        log_dir: log_dir.clone(),
    };
    let (primary, primary_addr) =
        lab.start_sync_proxy("sync-proxy-primary-1el", &binary, &els(1), "primary")?;
    let (immediate, immediate_addr) = lab.start_sync_proxy(
        "sync-proxy-immediate",
        &binary,
        &[el_behind_mirror.addr()],
        "immediate",
    )?;
    let (fan3, fan3_addr) =
        lab.start_sync_proxy("sync-proxy-primary-3el", &binary, &els(3), "primary")?;
    let (fan8, fan8_addr) =
        lab.start_sync_proxy("sync-proxy-primary-8el", &binary, &els(8), "primary")?;
    let musl_proxy = match &musl {
        Some(path) => {
            Some(lab.start_sync_proxy("sync-proxy-musl-primary-1el", path, &els(1), "primary")?)
        }
        None => None,
    };

    let mut setups = vec![
        Setup::new(
            "direct (floor): load generator → mock EL",
            el.addr(),
            vec![],
            None,
        ),
        Setup::new(
            "sync-proxy `--ack primary` → 1 EL",
            primary_addr,
            vec![primary],
            Some(primary_addr),
        ),
        Setup::new(
            "sync-proxy `--ack immediate` (answers SYNCING at once)",
            immediate_addr,
            vec![immediate],
            Some(immediate_addr),
        ),
    ];
    let mut measured = vec![
        Measured::new("sync-proxy `--ack primary`, 1 EL", primary),
        Measured::new("sync-proxy `--ack primary`, 3 ELs", fan3),
        Measured::new("sync-proxy `--ack primary`, 8 ELs", fan8),
        Measured::new("sync-proxy `--ack immediate` (mirror target)", immediate),
    ];
    if let Some((index, addr)) = musl_proxy {
        setups.push(Setup::new(
            "sync-proxy `--ack primary` → 1 EL, static musl build",
            addr,
            vec![index],
            Some(addr),
        ));
        measured.push(Measured::new(
            "sync-proxy `--ack primary`, 1 EL, musl",
            index,
        ));
    }
    let mut large_paths = vec![
        LargePath::new("direct → mock EL", el.addr(), vec![]),
        LargePath::new("sync-proxy → 1 EL", primary_addr, vec![primary]),
        LargePath::new("sync-proxy → 3 ELs", fan3_addr, vec![fan3]),
        LargePath::new("sync-proxy → 8 ELs", fan8_addr, vec![fan8]),
    ];

    let mut notes = Vec::new();
    match &nginx_binary {
        Some(nginx_binary) => {
            let (stock, tuned) = (procs::free_addr()?, procs::free_addr()?);
            let servers = proxy_pass_servers(stock, tuned);
            let dir = temp.path().join("nginx-proxy-pass");
            let plain = lab.push(nginx::start(
                nginx_binary,
                "nginx-proxy-pass",
                &dir,
                el.addr(),
                &servers,
            )?);
            let (appendix, keepalive) = (procs::free_addr()?, procs::free_addr()?);
            let servers = [
                Server {
                    listen: appendix,
                    mirror: Some(Mirror {
                        target: immediate_addr,
                        keepalive: false,
                    }),
                    body_buffer: None,
                },
                Server {
                    listen: keepalive,
                    mirror: Some(Mirror {
                        target: immediate_addr,
                        keepalive: true,
                    }),
                    body_buffer: None,
                },
            ];
            let dir = temp.path().join("nginx-mirror");
            let mirror = lab.push(nginx::start(
                nginx_binary,
                "nginx-mirror",
                &dir,
                el.addr(),
                &servers,
            )?);
            setups.push(Setup::new(
                "nginx `proxy_pass` (keepalive upstream)",
                stock,
                vec![plain],
                None,
            ));
            setups.push(Setup::new(
                "nginx `proxy_pass` + `mirror` → sync-proxy immediate (appendix config)",
                appendix,
                vec![mirror, immediate],
                Some(immediate_addr),
            ));
            setups.push(Setup::new(
                "nginx `proxy_pass` + `mirror`, keepalive to sync-proxy",
                keepalive,
                vec![mirror, immediate],
                Some(immediate_addr),
            ));
            measured.push(Measured::new("nginx `proxy_pass`", plain));
            measured.push(Measured::new("nginx `proxy_pass` + `mirror`", mirror));
            large_paths.push(LargePath::new(
                "nginx `proxy_pass`, stock config",
                stock,
                vec![plain],
            ));
            large_paths.push(LargePath::new(
                &format!("nginx `proxy_pass`, `client_body_buffer_size {NGINX_BODY_BUFFER}`"),
                tuned,
                vec![plain],
            ));
        }
        None => {
            println!("nginx: skipped");
            notes.push("nginx: skipped (not on PATH, or `SYNC_PROXY_BENCH_NGINX=off`)".to_owned());
        }
    }
    let main_rows = setups.len();
    setups.push(Setup::new("3 ELs", fan3_addr, vec![fan3], Some(fan3_addr)));
    setups.push(Setup::new("8 ELs", fan8_addr, vec![fan8], Some(fan8_addr)));

    thread::sleep(SETTLE);
    for m in &mut measured {
        m.idle_kib = lab.procs[m.proc].peak_rss_kib();
    }

    progress(&format!(
        "latency ({}-byte forkchoiceUpdatedV3)",
        small.body_bytes()
    ));
    let latency_drops = measure_latency(settings, &lab, &mut setups, &mut small);
    if latency_drops.iter().any(|(_, drops)| *drops != Some(0)) {
        let listed: Vec<String> = latency_drops
            .iter()
            .map(|(file, drops)| {
                format!("{file} {}", drops.map_or("?".to_owned(), |d| d.to_string()))
            })
            .collect();
        notes.push(format!(
            "requests sync-proxy dropped from full EL queues during the sequential latency runs: {}",
            listed.join(", ")
        ));
    }

    progress(&format!(
        "throughput ({} connections, {:?} per setup)",
        settings.throughput_connections, settings.throughput_time
    ));
    measure_throughput(settings, &lab, &mut setups, &small);
    for m in &mut measured {
        m.small_kib = lab.procs[m.proc].peak_rss_kib();
    }

    progress(&format!("{}-byte newPayloadV4", large.body_bytes()));
    measure_large(settings, &lab, &mut large_paths, &mut large);
    thread::sleep(SETTLE);
    for m in &mut measured {
        m.large_kib = lab.procs[m.proc].peak_rss_kib();
    }
    let inspect = [
        (
            small.body_bytes(),
            inspect_cost(small.body(), settings.inspect_small_runs),
        ),
        (
            large.body_bytes(),
            inspect_cost(large.body(), settings.inspect_large_runs),
        ),
    ];

    progress(&format!("{IDLE_CONNECTIONS} idle connections"));
    let idle = match measure_idle(settings, &mut lab, &binary, el.addr(), &mut small) {
        Ok(idle) => Some(idle),
        Err(e) => {
            notes.push(format!("idle connections scenario failed: {e}"));
            None
        }
    };
    progress("primary EL hung");
    let hung = match measure_hung(settings, &mut lab, &binary, el.addr()) {
        Ok(hung) => Some(hung),
        Err(e) => {
            notes.push(format!("hung primary scenario failed: {e}"));
            None
        }
    };
    let musl_idle_kib = measured
        .iter()
        .find(|m| m.label.contains("musl"))
        .map(|m| m.idle_kib);

    notes.extend(collect_notes(&mut lab, temp.path())?);
    let el_served =
        el.served() + el_behind_mirror.served() + extra_els.iter().map(MockEl::served).sum::<u64>();
    let method = Method {
        quick: settings.quick,
        latency_rounds: settings.latency_rounds,
        latency_per_round: settings.latency_per_round,
        connections: settings.throughput_connections,
        throughput_rounds: settings.throughput_rounds,
        throughput_time: settings.throughput_time,
        large_rounds: settings.large_rounds,
        large_per_round: settings.large_per_round,
        load_average,
    };
    let musl_name = musl.as_ref().map(|path| {
        if path.ends_with(MUSL_BINARY) {
            format!("target/{MUSL_BINARY}")
        } else {
            path.display().to_string()
        }
    });
    let report = Report {
        method: &method,
        setups: &setups,
        main_rows,
        large_paths: &large_paths,
        measured: &measured,
        small_bytes: small.body_bytes(),
        large_bytes: large.body_bytes(),
        inspect: &inspect,
        binary: &binary,
        musl: musl.as_deref().zip(musl_name),
        nginx_binary: nginx_binary.as_deref(),
        notes: &notes,
        instructions: &instructions,
        idle,
        hung,
        musl_idle_kib,
    };
    let markdown = report.markdown();
    drop(lab);
    print!("{markdown}");
    let out = target_dir.join("bench-proxy.md");
    fs::write(&out, &markdown)?;
    write_charts(&target_dir, &setups[..main_rows], &large_paths)?;
    progress(&format!(
        "wrote {}; logs and /metrics in {} ({el_served} requests answered by mock ELs, {:.0} s)",
        out.display(),
        log_dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The latency distributions behind the tables, as SVG charts beside `bench-proxy.md`: the
/// README shows them (copied to `benches/results/`) next to the table of the same run.
fn write_charts(target_dir: &Path, setups: &[Setup], large_paths: &[LargePath]) -> io::Result<()> {
    let micros = |samples: &load::Samples| -> Vec<f64> {
        samples.nanos.iter().map(|&n| n as f64 / 1e3).collect()
    };
    let small: Vec<(String, Vec<f64>)> = setups
        .iter()
        .map(|s| (plain(&s.label), micros(&s.latency)))
        .collect();
    let large: Vec<(String, Vec<f64>)> = large_paths
        .iter()
        .map(|p| (plain(&p.label), micros(&p.samples)))
        .collect();
    for (file, title, rows) in [
        (
            "bench-proxy-latency.svg",
            "engine_forkchoiceUpdatedV3 with attributes, sequential on one connection: latency",
            &small,
        ),
        (
            "bench-proxy-latency-2mb.svg",
            "2 MB engine_newPayloadV4, sequential on one connection: latency",
            &large,
        ),
    ] {
        let series: Vec<chart::Series<'_>> = rows
            .iter()
            .map(|(label, micros)| chart::Series { label, micros })
            .collect();
        let path = target_dir.join(file);
        fs::write(&path, chart::latency_cdf(title, &series))?;
        progress(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// nginx `proxy_pass` as shipped (bodies over 16 KiB spooled to a file) on `stock`, and with a
/// body buffer large enough for a 2 MB payload on `tuned`.
fn proxy_pass_servers(stock: SocketAddr, tuned: SocketAddr) -> [Server; 2] {
    [
        Server {
            listen: stock,
            mirror: None,
            body_buffer: None,
        },
        Server {
            listen: tuned,
            mirror: None,
            body_buffer: Some(NGINX_BODY_BUFFER),
        },
    ]
}

/// A table label without its Markdown.
fn plain(label: &str) -> String {
    label.replace("**", "").replace('`', "")
}

/// Sequential requests on one keep-alive connection per setup, in rounds across setups;
/// returns the queue drops of each sync-proxy during the measured rounds.
fn measure_latency(
    settings: &Settings,
    lab: &Lab,
    setups: &mut [Setup],
    request: &mut Request,
) -> Vec<(String, Option<u64>)> {
    let mut clients: Vec<Client> = setups.iter().map(|s| Client::new(s.addr)).collect();
    for client in &mut clients {
        let _ = load::latency(
            client,
            request,
            settings.warm_up_calls,
            settings.round_time_cap,
        );
    }
    let before = lab.drops();
    for _ in 0..settings.latency_rounds {
        for (setup, client) in setups.iter_mut().zip(&mut clients) {
            if setup.latency.errors >= MAX_SETUP_ERRORS {
                continue;
            }
            let samples = load::latency(
                client,
                request,
                settings.latency_per_round,
                settings.round_time_cap,
            );
            setup.rounds.push(samples.clone());
            setup.latency.extend(samples);
        }
    }
    let after = lab.drops();
    before
        .into_iter()
        .zip(after)
        .map(|((file, b), (_, a))| (file, a.zip(b).map(|(a, b)| a.saturating_sub(b))))
        .collect()
}

/// N connections per setup, one setup at a time, with the CPU of its proxies around it.
fn measure_throughput(settings: &Settings, lab: &Lab, setups: &mut [Setup], template: &Request) {
    for _ in 0..settings.throughput_rounds {
        for setup in setups.iter_mut() {
            let drops_before = setup.sync_proxy.and_then(queue_drops);
            let before = lab.cpu_times(&setup.procs);
            let mut after = Vec::new();
            let round = load::throughput(
                setup.addr,
                template,
                settings.throughput_connections,
                settings.throughput_time,
                settings.max_per_connection,
                || {},
                || after = lab.cpu_times(&setup.procs),
            );
            setup.rates.push(round.per_second());
            setup.throughput.completed += round.completed;
            setup.throughput.errors += round.errors;
            setup.throughput.elapsed += round.elapsed;
            for ((total, after), before) in setup.cpu_times.iter_mut().zip(&after).zip(&before) {
                *total += after.saturating_sub(*before);
            }
            thread::sleep(DRAIN);
            let drops = setup
                .sync_proxy
                .and_then(queue_drops)
                .zip(drops_before)
                .map(|(a, b)| a.saturating_sub(b));
            setup.drops = setup.drops.zip(drops).map(|(total, d)| total + d);
        }
    }
}

/// The 2 MB payload, sequential on one connection per path, in rounds across paths.
fn measure_large(settings: &Settings, lab: &Lab, paths: &mut [LargePath], request: &mut Request) {
    let mut clients: Vec<Client> = paths.iter().map(|p| Client::new(p.addr)).collect();
    for client in &mut clients {
        let _ = load::latency(client, request, 2, settings.round_time_cap);
    }
    for _ in 0..settings.large_rounds {
        for (path, client) in paths.iter_mut().zip(&mut clients) {
            if path.samples.errors >= MAX_SETUP_ERRORS {
                continue;
            }
            let before: Duration = lab.cpu_times(&path.procs).iter().sum();
            let samples = load::latency(
                client,
                request,
                settings.large_per_round,
                settings.round_time_cap,
            );
            path.rounds.push(samples.clone());
            path.samples.extend(samples);
            let after: Duration = lab.cpu_times(&path.procs).iter().sum();
            path.cpu_time += after.saturating_sub(before);
        }
    }
}

/// Median time of `sync_proxy::rpc::inspect` on `body`: the JSON part of the proxy's work.
fn inspect_cost(body: &[u8], runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let _ = black_box(sync_proxy::rpc::inspect(black_box(body)));
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// Checks after the run: children that died, `/metrics` of each sync-proxy (saved), warnings
/// and errors in the logs, nginx's error logs (copied next to the others).
fn collect_notes(lab: &mut Lab, temp: &Path) -> io::Result<Vec<String>> {
    let mut notes = Vec::new();
    for proc in &mut lab.procs {
        if !proc.running() {
            notes.push(format!(
                "a child exited during the run; see {}",
                proc.log().display()
            ));
        }
    }
    for proxy in &lab.sync_proxies {
        match http_get(proxy.addr, "/metrics") {
            Ok(text) => fs::write(
                lab.log_dir.join(format!("{}.metrics.txt", proxy.file)),
                text,
            )?,
            Err(e) => notes.push(format!("{}: GET /metrics failed: {e}", proxy.file)),
        }
        let text = fs::read_to_string(lab.procs[proxy.proc].log()).unwrap_or_default();
        let warnings = text.lines().filter(|l| l.contains(" WARN ")).count();
        let errors = text.lines().filter(|l| l.contains(" ERROR ")).count();
        // One warning at start is expected: no --jwt-secret.
        if warnings > 1 || errors > 0 {
            notes.push(format!(
                "{}.log: {warnings} warnings, {errors} errors",
                proxy.file
            ));
        }
    }
    for dir in ["nginx-proxy-pass", "nginx-mirror"] {
        if let Ok(text) = fs::read_to_string(temp.join(dir).join("error.log")) {
            fs::write(lab.log_dir.join(format!("{dir}.error.log")), &text)?;
            let buffered = text
                .lines()
                .filter(|l| l.contains("buffered to a temporary file"))
                .count();
            let other = text.lines().count() - buffered;
            if buffered + other > 0 {
                notes.push(format!(
                    "{dir}.error.log: {buffered} \"request body is buffered to a temporary file\", {other} other lines"
                ));
            }
        }
    }
    Ok(notes)
}

/// Sum of `sync_proxy_upstream_dropped_total` over a sync-proxy's ELs.
fn queue_drops(addr: SocketAddr) -> Option<u64> {
    let text = http_get(addr, "/metrics").ok()?;
    let mut total = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("sync_proxy_upstream_dropped_total"))
    {
        total += line.rsplit(' ').next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// One `GET` with `Connection: close`; returns the body as text.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(io::Error::other(format!("GET {path}: unexpected answer"))),
    }
}

fn progress(message: &str) {
    eprintln!("proxy bench: {message}");
}

/// Longest a callgrind run may take to send its requests.
const CALLGRIND_TIME_CAP: Duration = Duration::from_secs(180);

/// Runs every server under callgrind twice with `counts` requests each, and the inspection of
/// the large body in this benchmark's own binary (`--inspect-count`).
fn measure_instructions(
    settings: &Settings,
    valgrind: &Path,
    nginx_binary: Option<&Path>,
    el: SocketAddr,
    (out_dir, temp): (&Path, &Path),
    small: &mut Request,
    large: &mut Request,
) -> Instructions {
    let mut figures = Instructions {
        small_counts: if settings.quick {
            (200, 600)
        } else {
            (1_000, 3_000)
        },
        large_counts: if settings.quick { (2, 6) } else { (4, 12) },
        ..Instructions::default()
    };
    let binary = sync_proxy_binary();
    let start_sync_proxy = |out: &Path| -> io::Result<(Proc, SocketAddr)> {
        let addr = procs::free_addr()?;
        let args = sync_proxy_args(addr, &[el], "primary", &["--max-connections", "4000"]);
        let log = out.with_extension("log");
        let mut proc = callgrind::spawn(valgrind, "sync-proxy", &binary, &args, out, &log)?;
        proc.wait_listening(addr)?;
        Ok((proc, addr))
    };
    let (stock, tuned) = match (procs::free_addr(), procs::free_addr()) {
        (Ok(stock), Ok(tuned)) => (stock, tuned),
        _ => return figures,
    };
    let start_nginx = |nginx: &Path, out: &Path| -> io::Result<Proc> {
        let servers = proxy_pass_servers(stock, tuned);
        let dir = temp.join("nginx-callgrind");
        nginx::start_with(
            nginx,
            "nginx-callgrind",
            &dir,
            el,
            &servers,
            Some((valgrind, out)),
        )
    };
    let mut notes = Vec::new();
    progress("callgrind: sync-proxy, small request");
    match marginal(
        figures.small_counts,
        small,
        &start_sync_proxy,
        out_dir,
        "sync-proxy-small",
    ) {
        Ok(v) => figures.sync_proxy_small = Some(v),
        Err(e) => figures_note(&mut notes, "sync-proxy small", &e),
    }
    progress(&format!(
        "callgrind: sync-proxy, small request with {IDLE_CONNECTIONS} idle connections open"
    ));
    let idle = RefCell::new(Vec::new());
    let crowded = |out: &Path| -> io::Result<(Proc, SocketAddr)> {
        let (proc, addr) = start_sync_proxy(out)?;
        let mut clients = idle.borrow_mut();
        clients.clear();
        let mut request = Request::fork_choice();
        for _ in 0..IDLE_CONNECTIONS {
            let mut client = Client::new(addr);
            let id = request.stamp();
            if !client.call(&request, &id)? {
                return Err(io::Error::other("an idle connection's call failed"));
            }
            clients.push(client);
        }
        Ok((proc, addr))
    };
    match marginal(
        figures.small_counts,
        small,
        &crowded,
        out_dir,
        "sync-proxy-crowded",
    ) {
        Ok(v) => figures.sync_proxy_small_crowded = Some(v),
        Err(e) => figures_note(&mut notes, "sync-proxy small, idle connections open", &e),
    }
    idle.borrow_mut().clear();
    progress("callgrind: sync-proxy, 2 MB request");
    match marginal(
        figures.large_counts,
        large,
        &start_sync_proxy,
        out_dir,
        "sync-proxy-large",
    ) {
        Ok(v) => figures.sync_proxy_large = Some(v),
        Err(e) => figures_note(&mut notes, "sync-proxy 2 MB", &e),
    }
    progress("callgrind: sync-proxy, 2 MB request to 3 and 8 ELs");
    match fan_out_instructions(valgrind, el, figures.large_counts, large, out_dir) {
        Ok(fan_out) => figures.sync_proxy_large_fan_out = fan_out,
        Err(e) => figures_note(&mut notes, "sync-proxy 2 MB fan-out", &e),
    }
    if let Some(nginx) = nginx_binary {
        progress("callgrind: nginx, small and 2 MB requests");
        let start = |out: &Path| start_nginx(nginx, out).map(|proc| (proc, stock));
        match marginal(figures.small_counts, small, &start, out_dir, "nginx-small") {
            Ok(v) => figures.nginx_small = Some(v),
            Err(e) => figures_note(&mut notes, "nginx small", &e),
        }
        let start = |out: &Path| start_nginx(nginx, out).map(|proc| (proc, tuned));
        match marginal(figures.large_counts, large, &start, out_dir, "nginx-large") {
            Ok(v) => figures.nginx_large = Some(v),
            Err(e) => figures_note(&mut notes, "nginx 2 MB", &e),
        }
    }
    progress("callgrind: rpc::inspect on the 2 MB body");
    match inspect_instructions(valgrind, out_dir) {
        Ok(total) => figures.inspect_per_byte = Some(total / large.body_bytes() as f64),
        Err(e) => figures_note(&mut notes, "inspect", &e),
    }
    figures.notes = notes;
    figures
}

/// Marginal instructions of a 2 MB request through sync-proxy to 3 and to 8 ELs (the first is
/// `el`, the others fresh mock ELs): the user-space part of fan-out.
fn fan_out_instructions(
    valgrind: &Path,
    el: SocketAddr,
    counts: (usize, usize),
    large: &mut Request,
    out_dir: &Path,
) -> io::Result<[Option<f64>; 2]> {
    let extra = (0..EXTRA_ELS)
        .map(|_| MockEl::start())
        .collect::<io::Result<Vec<_>>>()?;
    let binary = sync_proxy_binary();
    let mut figures = [None, None];
    for (figure, count) in figures.iter_mut().zip([3, 8]) {
        let els: Vec<SocketAddr> = std::iter::once(el)
            .chain(extra.iter().map(MockEl::addr))
            .take(count)
            .collect();
        let start = |out: &Path| -> io::Result<(Proc, SocketAddr)> {
            let addr = procs::free_addr()?;
            let args = sync_proxy_args(addr, &els, "primary", &[]);
            let log = out.with_extension("log");
            let mut proc = callgrind::spawn(valgrind, "sync-proxy", &binary, &args, out, &log)?;
            proc.wait_listening(addr)?;
            Ok((proc, addr))
        };
        let name = format!("sync-proxy-large-{count}el");
        *figure = Some(marginal(counts, large, &start, out_dir, &name)?);
    }
    Ok(figures)
}

fn figures_note(notes: &mut Vec<String>, what: &str, error: &io::Error) {
    notes.push(format!("callgrind {what}: {error}"));
}

/// (I(more) − I(fewer)) / (more − fewer) for a server `start` launches under callgrind.
fn marginal(
    counts: (usize, usize),
    request: &mut Request,
    start: &dyn Fn(&Path) -> io::Result<(Proc, SocketAddr)>,
    out_dir: &Path,
    name: &str,
) -> io::Result<f64> {
    let mut totals = [0u64; 2];
    for (total, count) in totals.iter_mut().zip([counts.0, counts.1]) {
        let out = out_dir.join(format!("callgrind.{name}.{count}.out"));
        // A run whose server does not stop in time (a loaded machine) is run once more.
        *total = match callgrind_run(count, request, start, &out) {
            Ok(total) => total,
            Err(_) => callgrind_run(count, request, start, &out)?,
        };
    }
    Ok((totals[1] as f64 - totals[0] as f64) / (counts.1 - counts.0) as f64)
}

/// One server under callgrind, `count` requests, its total instructions.
fn callgrind_run(
    count: usize,
    request: &mut Request,
    start: &dyn Fn(&Path) -> io::Result<(Proc, SocketAddr)>,
    out: &Path,
) -> io::Result<u64> {
    let (proc, addr) = start(out)?;
    let mut client = Client::new(addr);
    let samples = load::latency(&mut client, request, count, CALLGRIND_TIME_CAP);
    drop(client);
    if samples.nanos.len() != count {
        return Err(io::Error::other(format!(
            "{} of {count} requests answered",
            samples.nanos.len()
        )));
    }
    callgrind::stop(proc, out)
}

/// Instructions of one `rpc::inspect` of the large body: this binary under callgrind with
/// `--inspect-count 1` and `--inspect-count 5`, a quarter of the difference.
fn inspect_instructions(valgrind: &Path, out_dir: &Path) -> io::Result<f64> {
    let me = std::env::current_exe()?;
    let mut totals = [0u64; 2];
    for (total, count) in totals.iter_mut().zip([1, 5]) {
        let out = out_dir.join(format!("callgrind.inspect.{count}.out"));
        let status = std::process::Command::new(valgrind)
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&me)
            .args(["--inspect-count", &count.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("{status}")));
        }
        *total = callgrind::total(&out)?;
    }
    Ok((totals[1] as f64 - totals[0] as f64) / 4.0)
}

/// `--inspect-count N`: inspects the large body N times and exits (run under callgrind).
fn inspect_only(count: usize) {
    let large = Request::new_payload(LARGE_TRANSACTIONS, LARGE_TRANSACTION_HEX_BYTES);
    for _ in 0..count {
        let _ = black_box(sync_proxy::rpc::inspect(black_box(large.body())));
    }
}

/// Idle keep-alive beacon connections opened in the idle scenario.
const IDLE_CONNECTIONS: usize = 1_000;

/// Two sync-proxies in front of the same EL, one with [`IDLE_CONNECTIONS`] idle keep-alive
/// connections (each sent one call first, as a beacon node does): the RSS they add, and a
/// busy client's latency on both in interleaved rounds.
fn measure_idle(
    settings: &Settings,
    lab: &mut Lab,
    binary: &Path,
    el: SocketAddr,
    request: &mut Request,
) -> io::Result<Idle> {
    let limit = ["--max-connections", "4000"];
    let (_, quiet_addr) =
        lab.start_sync_proxy_with("sync-proxy-quiet", binary, &[el], "primary", &limit)?;
    let (crowded, crowded_addr) =
        lab.start_sync_proxy_with("sync-proxy-crowded", binary, &[el], "primary", &limit)?;
    let mut quiet = Client::new(quiet_addr);
    let mut busy = Client::new(crowded_addr);
    for client in [&mut quiet, &mut busy] {
        let _ = load::latency(
            client,
            request,
            settings.warm_up_calls,
            settings.round_time_cap,
        );
    }
    thread::sleep(SETTLE);
    let rss_before_kib = lab.procs[crowded].rss_kib();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let mut client = Client::new(crowded_addr);
        let id = request.stamp();
        if !client.call(request, &id)? {
            return Err(io::Error::other("an idle connection's call failed"));
        }
        idle.push(client);
    }
    thread::sleep(SETTLE);
    let rss_after_kib = lab.procs[crowded].rss_kib();
    let (mut quiet_rounds, mut crowded_rounds) = (Vec::new(), Vec::new());
    for _ in 0..settings.latency_rounds {
        for (client, rounds) in [
            (&mut quiet, &mut quiet_rounds),
            (&mut busy, &mut crowded_rounds),
        ] {
            rounds.push(load::latency(
                client,
                request,
                settings.latency_per_round,
                settings.round_time_cap,
            ));
        }
    }
    drop(idle);
    let errors = |rounds: &[load::Samples]| rounds.iter().map(|r| r.errors).sum();
    Ok(Idle {
        connections: IDLE_CONNECTIONS,
        rounds: settings.latency_rounds,
        rss_before_kib,
        rss_after_kib,
        quiet_p50: Spread::of_rounds(&quiet_rounds, 50.0),
        quiet_p99: Spread::of_rounds(&quiet_rounds, 99.0),
        quiet_errors: errors(&quiet_rounds),
        crowded_p50: Spread::of_rounds(&crowded_rounds, 50.0),
        crowded_p99: Spread::of_rounds(&crowded_rounds, 99.0),
        crowded_errors: errors(&crowded_rounds),
    })
}

/// sync-proxy `--ack primary` whose primary EL never answers an Engine API call, with a
/// healthy second EL: the answer times a beacon node sees for `newPayload`.
fn measure_hung(
    settings: &Settings,
    lab: &mut Lab,
    binary: &Path,
    good_el: SocketAddr,
) -> io::Result<Hung> {
    let hung_el = MockEl::start_hung()?;
    let els = [hung_el.addr(), good_el];
    let (_, addr) =
        lab.start_sync_proxy_with("sync-proxy-hung-primary", binary, &els, "primary", &[])?;
    thread::sleep(SETTLE);
    let mut request = Request::new_payload(0, 0);
    let mut client = Client::new(addr);
    let requests = if settings.quick { 5 } else { 20 };
    let samples = load::latency(&mut client, &mut request, requests, HUNG_TIME_CAP);
    Ok(Hung {
        hedge_after: "1 s",
        requests,
        bytes: request.body_bytes(),
        samples,
    })
}

/// Longest the hung-primary scenario may take.
const HUNG_TIME_CAP: Duration = Duration::from_secs(90);
