//! Validated configuration: turns the raw strings of [`crate::cli::Args`] into typed settings
//! (addresses, durations, limits, secrets), or one error naming the flag and the value.
//!
//! Host names of execution clients are resolved here, once, at start-up: the event loop never
//! blocks on DNS. Secrets are read here and never printed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use log::LevelFilter;

use crate::cli::Args;
use crate::identity::{self, Cidr};
use crate::jwt::Secret;
use crate::logger;
use crate::network::{Chain, Network};
use crate::tracker::TrackerConfig;

/// Most execution clients plus chained proxies: sets of them are kept in a `u64` bit mask, and
/// nobody drives more than a handful from one beacon-node group.
pub const MAX_UPSTREAMS: usize = 64;

/// How the beacon node's answer is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// The primary execution client's answer (direct deployment).
    Primary,
    /// A non-committal answer as soon as the request is queued (nginx mirror deployment).
    Immediate,
    /// The status most execution clients agree on, never `VALID` against an `INVALID`.
    Majority,
}

impl AckMode {
    /// The mode as `--ack` spells it.
    pub fn name(self) -> &'static str {
        match self {
            AckMode::Primary => "primary",
            AckMode::Immediate => "immediate",
            AckMode::Majority => "majority",
        }
    }
}

/// What an upstream is: an execution client, or another sync-proxy fed fire-and-forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// An execution client (Engine API server).
    ExecutionClient,
    /// A chained sync-proxy.
    Proxy,
}

/// One upstream: where it is and how to talk to it.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Execution client or chained proxy.
    pub kind: UpstreamKind,
    /// The URL as logs, `/status` and metrics show it: see [`display_url`]; unique among the
    /// upstreams.
    pub url: Box<str>,
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: Box<str>,
    /// Request path (`/` unless the URL names one).
    pub path: Box<str>,
    /// The secret this upstream's tokens are signed with, if any.
    pub jwt_secret: Option<Secret>,
}

/// Everything the proxy runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address beacon nodes connect to.
    pub listen: SocketAddr,
    /// Execution clients then chained proxies; the first execution client is the preferred primary.
    pub upstreams: Vec<UpstreamConfig>,
    /// Answer mode.
    pub ack: AckMode,
    /// Overrides every per-method timeout when set.
    pub request_timeout: Option<Duration>,
    /// Overrides the timeout of requests to chained proxies when set.
    pub proxy_request_timeout: Option<Duration>,
    /// TCP connect timeout to upstreams.
    pub connect_timeout: Duration,
    /// Grace the primary has to give a final verdict before another upstream's answers.
    pub hedge_after: Duration,
    /// Largest request or answer body.
    pub max_body_bytes: usize,
    /// Largest HTTP head.
    pub max_header_bytes: usize,
    /// Most beacon-node connections.
    pub max_connections: usize,
    /// Time for a request head to arrive.
    pub header_timeout: Duration,
    /// Time for a request body to arrive after its head.
    pub body_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Most answer bytes owed to beacon nodes, unsent, all connections together.
    pub max_unsent_answer_bytes: usize,
    /// Most requests queued per upstream.
    pub queue_max: usize,
    /// Most body bytes queued per upstream.
    pub queue_max_bytes: usize,
    /// Most payload bytes kept for catch-up.
    pub catch_up_max_bytes: usize,
    /// Time allowed to drain queues at shutdown.
    pub shutdown_grace: Duration,
    /// Slot arithmetic of the tracked chain.
    pub chain: Chain,
    /// Name of the chain for logs (`custom` for explicit genesis settings).
    pub chain_name: Box<str>,
    /// Beacon-node selection settings.
    pub tracker: TrackerConfig,
    /// Peers whose forwarding headers are believed (loopback unless `--trusted-proxy none`).
    pub trusted_proxies: Vec<Cidr>,
    /// Secret inbound tokens are verified with.
    pub jwt_secret: Option<Secret>,
    /// Log verbosity.
    pub log_level: LevelFilter,
    /// Log line layout.
    pub log_format: logger::Format,
    /// This process's name in `Via` headers (`sync-proxy-<random>`), to detect forwarding loops.
    pub instance: Box<str>,
}

/// A flag with a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--max-body`.
    pub flag: &'static str,
    /// The offending value (never a secret: secret files are named by path).
    pub value: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.flag, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Default listen address: the Go original's port, loopback only until told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:25590";
/// Default body limit: geth's own Engine API limit (128 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 128 * 1024 * 1024;
/// Default head limit: beacon nodes send a few hundred bytes; nginx adds forwarding headers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default connection limit: a few beacon nodes and nginx workers need far fewer.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default bound on answer bytes owed to beacon nodes that do not read them: a hundred full-size
/// (2 MB) answers, far beyond what beacon nodes reading their answers ever leave unsent, and
/// small enough for a small VM; without it 256 connections x 16 pipelined requests x 2 MB would
/// be 8 GiB.
pub const DEFAULT_MAX_UNSENT_ANSWER_BYTES: usize = 256 * 1024 * 1024;
/// Default per-upstream queue length: over a slot's worth of calls from several beacon nodes.
pub const DEFAULT_QUEUE_MAX: usize = 64;
/// Default per-upstream queued bytes: ~30 full 2 MB payloads, bounded so a dead execution
/// client cannot grow the proxy's memory.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Hedging grace of `getPayload`: the consensus clients wait 1–2 s for a payload in all.
pub const GET_PAYLOAD_HEDGE: Duration = Duration::from_millis(500);

/// Default hedging grace: execution clients validate a mainnet payload in ~50–500 ms (p99 near
/// 1 s for heavy blocks), so 1 s rarely cuts a healthy primary short, and a hung primary then
/// costs 1 s of the 4 s a validator has to attest, with 7 s left before the 8 s consensus
/// clients wait.
pub const DEFAULT_HEDGE_AFTER: Duration = Duration::from_secs(1);

/// Default catch-up window bytes: the 32 most recent payloads of typical size (100–500 KB),
/// without holding 32 worst-case 2 MB payloads on a small VM once the queues are empty.
pub const DEFAULT_CATCH_UP_MAX_BYTES: usize = 16 * 1024 * 1024;

impl Config {
    /// Validates raw arguments into a configuration.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let listen =
            parse_socket_addr("--listen", args.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
        let jwt_secret = match &args.jwt_secret {
            Some(path) => Some(load_secret("--jwt-secret", path)?),
            None => None,
        };
        if args.el.is_empty() {
            return Err(error(
                "--el",
                "",
                "at least one execution client is required",
            ));
        }
        let mut upstreams = Vec::new();
        for url in &args.el {
            upstreams.push(parse_upstream(
                "--el",
                url,
                UpstreamKind::ExecutionClient,
                jwt_secret.as_ref(),
            )?);
        }
        for url in &args.proxy {
            upstreams.push(parse_upstream(
                "--proxy",
                url,
                UpstreamKind::Proxy,
                jwt_secret.as_ref(),
            )?);
        }
        name_apart(&mut upstreams);
        if upstreams.len() > MAX_UPSTREAMS {
            return Err(error(
                "--el",
                &upstreams.len().to_string(),
                &format!("at most {MAX_UPSTREAMS} execution clients and proxies"),
            ));
        }
        reject_self_loop(listen, &upstreams)?;
        let (chain, chain_name) = parse_chain(args)?;
        let defaults = TrackerConfig::default();
        let tracker = TrackerConfig {
            beacon_timeout: optional(&args.beacon_timeout, "--beacon-timeout", |v| {
                parse_duration("--beacon-timeout", v, Unit::Seconds)
            })?
            .unwrap_or(defaults.beacon_timeout),
            switch_margin_slots: optional(&args.switch_margin, "--switch-margin", |v| {
                parse_u64("--switch-margin", v)
            })?
            .unwrap_or(defaults.switch_margin_slots),
            max_lag_slots: optional(&args.max_lag, "--max-lag", |v| parse_u64("--max-lag", v))?
                .unwrap_or(defaults.max_lag_slots),
        };
        let trusted_proxies = parse_trusted(&args.trusted_proxy)?;
        Ok(Config {
            listen,
            upstreams,
            ack: match args.ack.as_deref() {
                None | Some("primary") => AckMode::Primary,
                Some("immediate") => AckMode::Immediate,
                Some("majority") => AckMode::Majority,
                Some(other) => {
                    return Err(error(
                        "--ack",
                        other,
                        "expected primary, immediate or majority",
                    ));
                }
            },
            request_timeout: optional(&args.request_timeout, "--request-timeout", |v| {
                positive_duration("--request-timeout", v, Unit::Millis)
            })?,
            proxy_request_timeout: optional(
                &args.proxy_request_timeout,
                "--proxy-request-timeout",
                |v| positive_duration("--proxy-request-timeout", v, Unit::Millis),
            )?,
            connect_timeout: duration_or(
                &args.connect_timeout,
                "--connect-timeout",
                Unit::Millis,
                Duration::from_secs(2),
            )?,
            hedge_after: duration_or(
                &args.hedge_after,
                "--hedge-after",
                Unit::Millis,
                DEFAULT_HEDGE_AFTER,
            )?,
            max_body_bytes: bytes_or(&args.max_body, "--max-body", DEFAULT_MAX_BODY_BYTES)?,
            max_header_bytes: bytes_or(&args.max_header, "--max-header", DEFAULT_MAX_HEADER_BYTES)?,
            max_connections: count_or(
                &args.max_connections,
                "--max-connections",
                DEFAULT_MAX_CONNECTIONS,
            )?,
            header_timeout: duration_or(
                &args.header_timeout,
                "--header-timeout",
                Unit::Seconds,
                Duration::from_secs(10),
            )?,
            body_timeout: duration_or(
                &args.body_timeout,
                "--body-timeout",
                Unit::Seconds,
                Duration::from_secs(60),
            )?,
            idle_timeout: duration_or(
                &args.idle_timeout,
                "--idle-timeout",
                Unit::Seconds,
                Duration::from_secs(120),
            )?,
            max_unsent_answer_bytes: match &args.max_unsent_answer_bytes {
                Some(v) => match parse_bytes("--max-unsent-answer-bytes", v)? {
                    0 => return Err(error("--max-unsent-answer-bytes", v, "must be at least 1")),
                    n => n,
                },
                None => DEFAULT_MAX_UNSENT_ANSWER_BYTES,
            },
            queue_max: count_or(&args.queue_max, "--queue-max", DEFAULT_QUEUE_MAX)?,
            queue_max_bytes: bytes_or(
                &args.queue_max_bytes,
                "--queue-max-bytes",
                DEFAULT_QUEUE_MAX_BYTES,
            )?,
            catch_up_max_bytes: bytes_or(
                &args.catch_up_max_bytes,
                "--catch-up-max-bytes",
                DEFAULT_CATCH_UP_MAX_BYTES,
            )?,
            shutdown_grace: match &args.shutdown_grace {
                Some(v) => parse_duration("--shutdown-grace", v, Unit::Seconds)?,
                None => Duration::from_secs(5),
            },
            chain,
            chain_name,
            tracker,
            trusted_proxies,
            jwt_secret,
            log_level: match args.log_level.as_deref() {
                None => LevelFilter::Info,
                Some(level) => parse_level(level)?,
            },
            log_format: match args.log_format.as_deref() {
                None => logger::Format::Text,
                Some(format) => format
                    .parse()
                    .map_err(|reason| error("--log-format", format, &format!("{reason}")))?,
            },
            instance: instance_name(),
        })
    }

    /// How long an upstream may take to answer `method`: `--request-timeout`, else the spec's
    /// value for the method.
    pub fn timeout_for(&self, method: crate::engine::Method) -> Duration {
        self.request_timeout
            .unwrap_or_else(|| method.default_timeout())
    }

    /// The longest a beacon node waits for its answer to `method`: just under the most patient
    /// consensus client's own timeout (ARCHITECTURE.md), and never past the upstream timeout.
    pub fn answer_deadline(&self, method: crate::engine::Method) -> Duration {
        method.answer_deadline().min(self.timeout_for(method))
    }

    /// How long the primary has to answer `method` before another upstream's final answer
    /// may go first; `None` for calls whose answers are not interchangeable.
    pub fn hedge_for(&self, method: crate::engine::Method) -> Option<Duration> {
        use crate::engine::Method;
        match method {
            Method::NewPayload(_) | Method::ForkchoiceUpdated(_) => Some(self.hedge_after),
            // A payload built by another execution client for the same call is as good, and a
            // proposer has 1–2 s in all.
            Method::GetPayload(_) => Some(self.hedge_after.min(GET_PAYLOAD_HEDGE)),
            _ => None,
        }
    }

    /// How long one upstream of `kind` may take to answer `method`: for a chained proxy
    /// `--proxy-request-timeout` when set, else as [`Config::timeout_for`].
    pub fn leg_timeout(&self, kind: UpstreamKind, method: crate::engine::Method) -> Duration {
        match (kind, self.proxy_request_timeout) {
            (UpstreamKind::Proxy, Some(timeout)) => timeout,
            _ => self.timeout_for(method),
        }
    }

    /// The execution clients (not the chained proxies), in configured order.
    pub fn execution_clients(&self) -> impl Iterator<Item = &UpstreamConfig> {
        self.upstreams
            .iter()
            .filter(|u| u.kind == UpstreamKind::ExecutionClient)
    }
}

/// A name unique to this process: std's randomly keyed hasher gives the randomness.
fn instance_name() -> Box<str> {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("sync-proxy-{:016x}", hasher.finish()).into()
}

/// Units a bare number is read in.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Seconds,
}

fn error(flag: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn optional<T>(
    value: &Option<String>,
    _flag: &'static str,
    parse: impl Fn(&str) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    value.as_deref().map(parse).transpose()
}

fn duration_or(
    value: &Option<String>,
    flag: &'static str,
    unit: Unit,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(v) => positive_duration(flag, v, unit),
        None => Ok(default),
    }
}

fn bytes_or(
    value: &Option<String>,
    flag: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        Some(v) => parse_bytes(flag, v),
        None => Ok(default),
    }
}

fn count_or(
    value: &Option<String>,
    flag: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match parse_u64(flag, v)? {
        0 => Err(error(flag, v, "must be at least 1")),
        n => usize::try_from(n).map_err(|_| error(flag, v, "too large")),
    }
}

fn parse_u64(flag: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| error(flag, value, "expected a whole number"))
}

/// `250`, `250ms`, `8s`, `2m`: a bare number is in the flag's own unit.
fn parse_duration(flag: &'static str, value: &str, unit: Unit) -> Result<Duration, ConfigError> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        error(
            flag,
            value,
            "expected a duration such as 500ms, 8s or a bare number",
        )
    })?;
    let duration = match (suffix, unit) {
        ("", Unit::Millis) | ("ms", _) => Duration::from_millis(number),
        ("", Unit::Seconds) | ("s", _) => Duration::from_secs(number),
        ("m", _) => Duration::from_secs(number.saturating_mul(60)),
        _ => {
            return Err(error(
                flag,
                value,
                "expected a duration such as 500ms, 8s or a bare number",
            ));
        }
    };
    Ok(duration)
}

fn positive_duration(flag: &'static str, value: &str, unit: Unit) -> Result<Duration, ConfigError> {
    let duration = parse_duration(flag, value, unit)?;
    if duration.is_zero() {
        return Err(error(flag, value, "must be greater than zero"));
    }
    Ok(duration)
}

/// `1048576`, `64KiB`, `2MB`, `128MiB`, `1G`: decimal and binary suffixes.
fn parse_bytes(flag: &'static str, value: &str) -> Result<usize, ConfigError> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let bad = || {
        error(
            flag,
            value,
            "expected a byte count such as 65536, 64KiB or 128MiB",
        )
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "KB" => 1000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = number.checked_mul(multiplier).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(error(flag, value, "must be greater than zero"));
    }
    usize::try_from(bytes).map_err(|_| bad())
}

/// Loopback plus the listed blocks; `none` alone trusts nobody (not even loopback).
fn parse_trusted(values: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    if values.len() == 1 && values[0].trim() == "none" {
        return Ok(Vec::new());
    }
    let mut trusted = identity::default_trusted();
    for value in values {
        trusted.push(
            value
                .parse::<Cidr>()
                .map_err(|reason| error("--trusted-proxy", value, &reason.to_string()))?,
        );
    }
    Ok(trusted)
}

fn parse_level(value: &str) -> Result<LevelFilter, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" | "fatal" | "panic" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(error(
            "--log-level",
            value,
            "expected error, warn, info, debug or trace",
        )),
    }
}

fn parse_socket_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse::<SocketAddr>().map_err(|_| {
        error(
            flag,
            value,
            "expected IP:PORT, e.g. 127.0.0.1:25590 or [::1]:25590",
        )
    })
}

fn load_secret(flag: &'static str, path: &str) -> Result<Secret, ConfigError> {
    Secret::load(Path::new(path)).map_err(|reason| error(flag, path, &reason.to_string()))
}

fn parse_chain(args: &Args) -> Result<(Chain, Box<str>), ConfigError> {
    match (&args.genesis_time, &args.seconds_per_slot) {
        (None, None) => {
            let name = args.network.as_deref().unwrap_or("mainnet");
            let network = name
                .parse::<Network>()
                .map_err(|reason| error("--network", name, &reason.to_string()))?;
            Ok((network.chain(), network.name().into()))
        }
        (Some(genesis), Some(seconds)) => {
            if let Some(name) = &args.network {
                return Err(error(
                    "--network",
                    name,
                    "give either --network or --genesis-time with --seconds-per-slot",
                ));
            }
            let genesis_time = parse_u64("--genesis-time", genesis)?;
            let seconds_per_slot = parse_u64("--seconds-per-slot", seconds)?;
            if seconds_per_slot == 0 {
                return Err(error("--seconds-per-slot", seconds, "must be at least 1"));
            }
            Ok((
                Chain {
                    genesis_time,
                    seconds_per_slot,
                },
                "custom".into(),
            ))
        }
        (Some(genesis), None) => Err(error(
            "--genesis-time",
            genesis,
            "needs --seconds-per-slot as well",
        )),
        (None, Some(seconds)) => Err(error(
            "--seconds-per-slot",
            seconds,
            "needs --genesis-time as well",
        )),
    }
}

/// Stands where a URL shown to operators had credentials or a path.
pub const REDACTED: &str = "…redacted…";

/// A URL as logs, `/status` and metrics show it: scheme, host and port only. User-info
/// (`user:pass@`) and any path or query beyond `/` become [`REDACTED`], since either may hold a
/// credential (an API key in the path, as hosted endpoints do); the `#jwt-secret=PATH` fragment
/// is cut off before this sees the URL.
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let path = if path.is_empty() || path == "/" {
        String::new()
    } else {
        format!("/{REDACTED}")
    };
    format!("{scheme}{host}{path}")
}

/// Upstreams whose shown URLs coincide (the same host and port, paths redacted) get ` (2)`,
/// ` (3)`… in configured order, so every metrics series and log line names one upstream.
fn name_apart(upstreams: &mut [UpstreamConfig]) {
    let shown: Vec<Box<str>> = upstreams.iter().map(|u| u.url.clone()).collect();
    for (index, (upstream, name)) in upstreams.iter_mut().zip(&shown).enumerate() {
        let earlier = shown[..index].iter().filter(|other| *other == name).count();
        if earlier > 0 {
            upstream.url = format!("{name} ({})", earlier + 1).into();
        }
    }
}

/// Parses `http://host:port[/path][#jwt-secret=PATH]` or `host:port`, resolving the host.
fn parse_upstream(
    flag: &'static str,
    value: &str,
    kind: UpstreamKind,
    default_secret: Option<&Secret>,
) -> Result<UpstreamConfig, ConfigError> {
    let (url, fragment) = match value.trim().split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (value.trim(), None),
    };
    // Errors and every later mention show the URL without what may be a credential.
    let shown = display_url(url);
    let jwt_secret = match fragment {
        None => default_secret.cloned(),
        Some(fragment) => match fragment.strip_prefix("jwt-secret=") {
            Some(path) if !path.is_empty() => Some(load_secret(flag, path)?),
            _ => {
                return Err(error(
                    flag,
                    &shown,
                    "the only URL fragment understood is #jwt-secret=PATH",
                ));
            }
        },
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(error(
            flag,
            &shown,
            "https is not supported: Engine API endpoints are plain HTTP with JWT; use http://",
        ));
    } else if url.contains("://") {
        return Err(error(
            flag,
            &shown,
            "expected http://host:port[/path] or host:port",
        ));
    } else {
        url
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(error(
            flag,
            &shown,
            "credentials in the URL are not supported; give the execution client's JWT secret as #jwt-secret=PATH",
        ));
    }
    if authority.is_empty() {
        return Err(error(
            flag,
            &shown,
            "expected http://host:port[/path] or host:port",
        ));
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let target = if has_port {
        authority.to_owned()
    } else if url.starts_with("http://") {
        format!("{authority}:80")
    } else {
        return Err(error(flag, &shown, "missing port, e.g. 127.0.0.1:8551"));
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| error(flag, &shown, &format!("cannot resolve host: {e}")))?
        .next()
        .ok_or_else(|| error(flag, &shown, "host resolves to no address"))?;
    Ok(UpstreamConfig {
        kind,
        url: shown.into(),
        addr,
        host: authority.into(),
        path: path.into(),
        jwt_secret,
    })
}

/// A proxy that lists itself as an upstream would feed itself forever.
fn reject_self_loop(listen: SocketAddr, upstreams: &[UpstreamConfig]) -> Result<(), ConfigError> {
    for upstream in upstreams {
        let same_port = upstream.addr.port() == listen.port();
        let same_host = upstream.addr.ip() == listen.ip()
            || (listen.ip().is_unspecified() && upstream.addr.ip().is_loopback());
        if same_port && same_host {
            let flag = match upstream.kind {
                UpstreamKind::ExecutionClient => "--el",
                UpstreamKind::Proxy => "--proxy",
            };
            return Err(error(
                flag,
                &upstream.url,
                "points at this proxy's own --listen address (a forwarding loop)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        let owned: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        crate::cli::parse(&owned, &|_| None).unwrap()
    }

    #[test]
    fn defaults_are_sane() {
        let config = Config::from_args(&args(&["--el", "127.0.0.1:8551"])).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.ack, AckMode::Primary);
        assert_eq!(config.max_body_bytes, 128 << 20);
        assert_eq!(config.max_unsent_answer_bytes, 256 << 20);
        assert_eq!(config.upstreams.len(), 1);
        assert_eq!(&*config.upstreams[0].path, "/");
        assert_eq!(&*config.chain_name, "mainnet");
    }

    #[test]
    fn urls_of_every_form_parse() {
        let config = Config::from_args(&args(&[
            "--el",
            "http://127.0.0.1:8551/engine",
            "--el",
            "http://[::1]:8552",
            "--el",
            "localhost:8553",
        ]))
        .unwrap();
        assert_eq!(&*config.upstreams[0].path, "/engine");
        assert_eq!(config.upstreams[1].addr, "[::1]:8552".parse().unwrap());
        assert_eq!(&*config.upstreams[1].host, "[::1]:8552");
        assert_eq!(config.upstreams[2].addr.port(), 8553);
    }

    #[test]
    fn display_url_keeps_scheme_host_and_port_only() {
        for (written, shown) in [
            ("http://127.0.0.1:8551", "http://127.0.0.1:8551"),
            ("http://127.0.0.1:8551/", "http://127.0.0.1:8551"),
            ("localhost:8553", "localhost:8553"),
            ("http://[::1]:8552", "http://[::1]:8552"),
            ("http://h:1/abc123secret", "http://h:1/…redacted…"),
            ("http://h:1/v3/abc123secret?x=1", "http://h:1/…redacted…"),
            ("http://h:1?key=abc123secret", "http://h:1/…redacted…"),
            ("http://user:abc123secret@h:1", "http://…redacted…@h:1"),
            ("user:abc123secret@h:1/p", "…redacted…@h:1/…redacted…"),
            ("ftp://u:abc123secret@h:1", "ftp://…redacted…@h:1"),
        ] {
            assert_eq!(display_url(written), shown, "{written}");
        }
    }

    /// Issue 11, item 8: a credential in a URL never reaches `Config`'s names nor an error.
    #[test]
    fn urls_with_credentials_are_shown_redacted() {
        let config = Config::from_args(&args(&[
            "--el",
            "http://127.0.0.1:8551/abc123secret",
            "--el",
            "http://127.0.0.1:8551/other-secret",
            "--el",
            "127.0.0.1:8552",
        ]))
        .unwrap();
        let names: Vec<&str> = config.upstreams.iter().map(|u| &*u.url).collect();
        assert_eq!(
            names,
            [
                "http://127.0.0.1:8551/…redacted…",
                "http://127.0.0.1:8551/…redacted… (2)",
                "127.0.0.1:8552"
            ]
        );
        assert_eq!(&*config.upstreams[0].path, "/abc123secret", "still sent");
        let err = Config::from_args(&args(&["--el", "http://user:abc123secret@127.0.0.1:1"]))
            .unwrap_err();
        assert!(!err.to_string().contains("abc123secret"), "{err}");
        assert!(err.to_string().contains("#jwt-secret"), "{err}");
        let err = Config::from_args(&args(&["--el", "http://127.0.0.1:1/abc123secret#frag"]))
            .unwrap_err();
        assert_eq!(err.value, "http://127.0.0.1:1/…redacted…");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--el", "127.0.0.1:1", "--max-body", "lots"], "--max-body"),
            (&["--el", "127.0.0.1:1", "--ack", "later"], "--ack"),
            (
                &["--el", "127.0.0.1:1", "--max-unsent-answer-bytes", "0"],
                "--max-unsent-answer-bytes",
            ),
            (&["--el", "127.0.0.1:1", "--listen", "nowhere"], "--listen"),
            (&["--el", "https://127.0.0.1:1"], "--el"),
            (&["--el", "127.0.0.1"], "--el"),
            (
                &["--el", "127.0.0.1:1", "--request-timeout", "0"],
                "--request-timeout",
            ),
            (
                &["--el", "127.0.0.1:1", "--log-level", "loud"],
                "--log-level",
            ),
            (&["--el", "127.0.0.1:1", "--network", "goerly"], "--network"),
            (
                &["--el", "127.0.0.1:1", "--log-format", "logfmt"],
                "--log-format",
            ),
            (
                &["--el", "127.0.0.1:1", "--genesis-time", "5"],
                "--genesis-time",
            ),
            (
                &["--el", "127.0.0.1:1", "--trusted-proxy", "10.0.0.0/33"],
                "--trusted-proxy",
            ),
            (
                &[
                    "--el",
                    "127.0.0.1:1",
                    "--jwt-secret",
                    "/nonexistent/jwt.hex",
                ],
                "--jwt-secret",
            ),
            (&["--el", "127.0.0.1:25590"], "--el"),
            (&[], "--el"),
        ];
        for (list, flag) in cases {
            let err = Config::from_args(&args(list)).unwrap_err();
            assert_eq!(err.flag, *flag, "{list:?}: {err}");
            assert!(err.to_string().starts_with(&format!("invalid {flag}")));
        }
    }

    #[test]
    fn sizes_and_durations_take_units() {
        assert_eq!(parse_bytes("--x", "64KiB").unwrap(), 65536);
        assert_eq!(parse_bytes("--x", "2MB").unwrap(), 2_000_000);
        assert_eq!(parse_bytes("--x", "1048576").unwrap(), 1 << 20);
        assert!(parse_bytes("--x", "99999999999G").is_err());
        assert_eq!(
            parse_duration("--x", "500ms", Unit::Seconds).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("--x", "8", Unit::Seconds).unwrap(),
            Duration::from_secs(8)
        );
        assert_eq!(
            parse_duration("--x", "8", Unit::Millis).unwrap(),
            Duration::from_millis(8)
        );
        assert!(parse_duration("--x", "8h", Unit::Millis).is_err());
    }

    #[test]
    fn proxy_request_timeout_applies_to_chained_proxies_only() {
        let method = crate::engine::Method::Other;
        let config = Config::from_args(&args(&[
            "--el",
            "127.0.0.1:1",
            "--request-timeout",
            "3000",
            "--proxy-request-timeout",
            "250",
        ]))
        .unwrap();
        assert_eq!(
            config.leg_timeout(UpstreamKind::Proxy, method),
            Duration::from_millis(250)
        );
        assert_eq!(
            config.leg_timeout(UpstreamKind::ExecutionClient, method),
            Duration::from_secs(3)
        );
        let defaults = Config::from_args(&args(&["--el", "127.0.0.1:1"])).unwrap();
        assert_eq!(
            defaults.leg_timeout(UpstreamKind::Proxy, method),
            defaults.timeout_for(method)
        );
    }

    #[test]
    fn explicit_chain_replaces_network() {
        let config = Config::from_args(&args(&[
            "--el",
            "127.0.0.1:1",
            "--genesis-time",
            "100",
            "--seconds-per-slot",
            "2",
        ]))
        .unwrap();
        assert_eq!(config.chain.genesis_time, 100);
        assert_eq!(config.chain.seconds_per_slot, 2);
    }
}
