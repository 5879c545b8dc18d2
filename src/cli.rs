//! Command-line flags as the user typed them: `argh` definitions, environment variables
//! (`SYNC_PROXY_*`) and the Go original's flag names folded in before parsing.
//!
//! Values stay raw strings here; [`crate::config`] validates them into typed settings, so every
//! complaint about a value names the flag it came from. Nothing here touches the network.

use argh::FromArgs;

/// sync-proxy: follows the best of several Ethereum beacon nodes and drives many execution
/// clients over the Engine API.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Args {
    // The help text lives in `description`: in a doc comment `[::1]` would be a broken link.
    #[argh(
        option,
        description = "address to listen on for beacon nodes (default 127.0.0.1:25590; IPv6 as [::1]:25590)"
    )]
    pub listen: Option<String>,

    /// execution client URL, repeatable; the first healthy one answers. http://host:port[/path]
    /// or host:port; append #jwt-secret=PATH to give it its own secret
    #[argh(option)]
    pub el: Vec<String>,

    /// further sync-proxy URL, repeatable: every request is also sent there, fire-and-forget
    #[argh(option)]
    pub proxy: Vec<String>,

    /// whose answer the beacon node gets: primary (default), immediate (nginx mirror) or majority
    #[argh(option)]
    pub ack: Option<String>,

    /// timeout for every request to an execution client, in ms (default: per method, 1-10 s as
    /// the Engine API specification says)
    #[argh(option)]
    pub request_timeout: Option<String>,

    /// TCP connect timeout to an execution client, in ms (default 2000)
    #[argh(option)]
    pub connect_timeout: Option<String>,

    /// largest request or answer body, in bytes; K/KiB/M/MiB/G suffixes allowed (default 128MiB)
    #[argh(option)]
    pub max_body: Option<String>,

    /// largest HTTP head, in bytes (default 16KiB)
    #[argh(option)]
    pub max_header: Option<String>,

    /// most beacon-node connections open at once (default 256)
    #[argh(option)]
    pub max_connections: Option<String>,

    /// time allowed for a request head to arrive, in s (default 10)
    #[argh(option)]
    pub header_timeout: Option<String>,

    /// time allowed for a request body to arrive after its head, in s (default 60)
    #[argh(option)]
    pub body_timeout: Option<String>,

    /// time an idle keep-alive beacon-node connection is kept, in s (default 120)
    #[argh(option)]
    pub idle_timeout: Option<String>,

    /// most requests queued per execution client (default 64)
    #[argh(option)]
    pub queue_max: Option<String>,

    /// most body bytes queued per execution client; suffixes allowed (default 64MiB)
    #[argh(option)]
    pub queue_max_bytes: Option<String>,

    /// most payload bytes kept to catch up an execution client that was down or fell behind;
    /// suffixes allowed (default 16MiB)
    #[argh(option)]
    pub catch_up_max_bytes: Option<String>,

    /// time allowed on SIGTERM/SIGINT/SIGQUIT to deliver what is queued, in s (default 5)
    #[argh(option)]
    pub shutdown_grace: Option<String>,

    /// chain whose slots are tracked: mainnet (default), sepolia, holesky, hoodi
    #[argh(option)]
    pub network: Option<String>,

    /// beacon chain genesis time in unix seconds (with --seconds-per-slot, instead of --network)
    #[argh(option)]
    pub genesis_time: Option<String>,

    /// seconds per slot (with --genesis-time, instead of --network)
    #[argh(option)]
    pub seconds_per_slot: Option<String>,

    /// a beacon node is live while its last request is younger than this, in s (default 12)
    #[argh(option)]
    pub beacon_timeout: Option<String>,

    /// switch to a beacon node ahead of the followed one by more than this many slots (default 1)
    #[argh(option)]
    pub switch_margin: Option<String>,

    /// leave a followed beacon node that lags the wall clock by more than this many slots while
    /// another is nearer (default 4)
    #[argh(option)]
    pub max_lag: Option<String>,

    /// address or CIDR whose X-Forwarded-For / X-Real-IP is believed, repeatable, in addition to
    /// loopback; `none` believes nobody
    #[argh(option)]
    pub trusted_proxy: Vec<String>,

    /// path of the 32-byte hex JWT secret beacon nodes sign with (and default for execution
    /// clients); without it inbound requests are not authenticated
    #[argh(option)]
    pub jwt_secret: Option<String>,

    /// log level: error, warn, info (default), debug, trace
    #[argh(option)]
    pub log_level: Option<String>,

    /// log line layout: text (default) or json (one object per line, event fields as keys)
    #[argh(option)]
    pub log_format: Option<String>,

    #[argh(subcommand)]
    /// what to run instead of the proxy
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    /// Run the built-in demo.
    Demo(DemoArgs),
}

/// Runs the real proxy on loopback with built-in execution clients and beacon nodes, printing
/// each decision, and exits by itself.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// seconds per simulated slot (default 1)
    #[argh(option, default = "1")]
    pub slot_seconds: u64,
}

/// A flag, the environment variables that can set it, and whether it repeats.
struct EnvFlag {
    flag: &'static str,
    vars: &'static [&'static str],
    repeated: bool,
}

/// Every flag settable from the environment. `SYNC_PROXY_*` are ours; the others are the Go
/// original's, kept so a deployment can switch without rewriting its unit file.
const ENV_FLAGS: &[EnvFlag] = &[
    env("--listen", &["SYNC_PROXY_LISTEN", "PROXY_LISTEN_ADDR"]),
    repeated("--el", &["SYNC_PROXY_EL"]),
    repeated("--proxy", &["SYNC_PROXY_PROXY"]),
    env("--ack", &["SYNC_PROXY_ACK"]),
    env(
        "--request-timeout",
        &["SYNC_PROXY_REQUEST_TIMEOUT", "BUILDER_TIMEOUT_MS"],
    ),
    env("--connect-timeout", &["SYNC_PROXY_CONNECT_TIMEOUT"]),
    env("--max-body", &["SYNC_PROXY_MAX_BODY"]),
    env("--max-header", &["SYNC_PROXY_MAX_HEADER"]),
    env("--max-connections", &["SYNC_PROXY_MAX_CONNECTIONS"]),
    env("--header-timeout", &["SYNC_PROXY_HEADER_TIMEOUT"]),
    env("--body-timeout", &["SYNC_PROXY_BODY_TIMEOUT"]),
    env("--idle-timeout", &["SYNC_PROXY_IDLE_TIMEOUT"]),
    env("--queue-max", &["SYNC_PROXY_QUEUE_MAX"]),
    env("--queue-max-bytes", &["SYNC_PROXY_QUEUE_MAX_BYTES"]),
    env("--catch-up-max-bytes", &["SYNC_PROXY_CATCH_UP_MAX_BYTES"]),
    env("--shutdown-grace", &["SYNC_PROXY_SHUTDOWN_GRACE"]),
    env("--network", &["SYNC_PROXY_NETWORK"]),
    env("--genesis-time", &["SYNC_PROXY_GENESIS_TIME"]),
    env("--seconds-per-slot", &["SYNC_PROXY_SECONDS_PER_SLOT"]),
    env("--beacon-timeout", &["SYNC_PROXY_BEACON_TIMEOUT"]),
    env("--switch-margin", &["SYNC_PROXY_SWITCH_MARGIN"]),
    env("--max-lag", &["SYNC_PROXY_MAX_LAG"]),
    repeated("--trusted-proxy", &["SYNC_PROXY_TRUSTED_PROXY"]),
    env("--jwt-secret", &["SYNC_PROXY_JWT_SECRET"]),
    env("--log-level", &["SYNC_PROXY_LOG_LEVEL", "LOG_LEVEL"]),
    env("--log-format", &["SYNC_PROXY_LOG_FORMAT"]),
];

/// The Go original's flag names (it accepted `-flag`, `--flag` and `-flag=value`) and ours.
const LEGACY_FLAGS: &[(&str, &str)] = &[
    ("addr", "--listen"),
    ("builders", "--el"),
    ("proxies", "--proxy"),
    ("request-timeout", "--request-timeout"),
    ("loglevel", "--log-level"),
];

/// `BEACON_EXPIRY_MS` is in milliseconds while `--beacon-timeout` is in seconds; the value is
/// passed on with its unit so nothing is lost.
const LEGACY_BEACON_EXPIRY_VAR: &str = "BEACON_EXPIRY_MS";

/// Parses the process arguments (without the program name) and environment into [`Args`].
///
/// On failure returns the message to print and the exit code (0 for `--help`).
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Args, (String, i32)> {
    let mut argv = translate_legacy(args);
    append_environment(&mut argv, env);
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    Args::from_args(&["sync-proxy"], &strs).map_err(|exit| {
        let code = if exit.status.is_ok() { 0 } else { 2 };
        (exit.output.trim_end().to_owned(), code)
    })
}

const fn env(flag: &'static str, vars: &'static [&'static str]) -> EnvFlag {
    EnvFlag {
        flag,
        vars,
        repeated: false,
    }
}

const fn repeated(flag: &'static str, vars: &'static [&'static str]) -> EnvFlag {
    EnvFlag {
        flag,
        vars,
        repeated: true,
    }
}

/// Rewrites the Go original's flags into ours: `-addr X`, `--addr=X` → `--listen X`,
/// `-builders a,b` → `--el a --el b`.
fn translate_legacy(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let (name, inline) = split_flag(arg);
        let Some(&(_, ours)) = LEGACY_FLAGS
            .iter()
            .find(|(legacy, _)| Some(*legacy) == name)
        else {
            out.push(arg.clone());
            continue;
        };
        // Our own `--request-timeout` has the same name: only `-request-timeout` and the
        // `=value` form need rewriting, but rewriting both is harmless.
        let value = match inline {
            Some(value) => Some(value.to_owned()),
            None => iter.next().cloned(),
        };
        let Some(value) = value else {
            out.push(ours.to_owned());
            continue;
        };
        if ours == "--el" || ours == "--proxy" {
            for url in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                out.push(ours.to_owned());
                out.push(url.to_owned());
            }
        } else {
            out.push(ours.to_owned());
            out.push(value);
        }
    }
    out
}

/// `-addr`, `--addr`, `-addr=x`, `--addr=x` → (`addr`, inline value).
fn split_flag(arg: &str) -> (Option<&str>, Option<&str>) {
    let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
        return (None, None);
    };
    match body.split_once('=') {
        Some((name, value)) => (Some(name), Some(value)),
        None => (Some(body), None),
    }
}

/// Adds flags from the environment for every flag not given on the command line.
fn append_environment(argv: &mut Vec<String>, env: &dyn Fn(&str) -> Option<String>) {
    // Flags after a subcommand belong to it; environment flags go before it.
    let insert_at = argv.iter().position(|a| a == "demo").unwrap_or(argv.len());
    let mut extra = Vec::new();
    for flag in ENV_FLAGS {
        if argv.iter().any(|a| a == flag.flag) {
            continue;
        }
        let Some(value) = flag.vars.iter().find_map(|var| env(var)) else {
            continue;
        };
        if flag.repeated {
            for item in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                extra.push(flag.flag.to_owned());
                extra.push(item.to_owned());
            }
        } else {
            extra.push(flag.flag.to_owned());
            extra.push(value);
        }
    }
    if !argv.iter().any(|a| a == "--beacon-timeout")
        && !extra.iter().any(|a| a == "--beacon-timeout")
    {
        if let Some(ms) = env(LEGACY_BEACON_EXPIRY_VAR) {
            extra.push("--beacon-timeout".to_owned());
            extra.push(format!("{}ms", ms.trim()));
        }
    }
    argv.splice(insert_at..insert_at, extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flags_parse_as_given() {
        let args = parse(
            &strings(&["--listen", "[::1]:1", "--el", "a:1", "--el", "b:2"]),
            &no_env,
        )
        .unwrap();
        assert_eq!(args.listen.as_deref(), Some("[::1]:1"));
        assert_eq!(args.el, ["a:1", "b:2"]);
    }

    #[test]
    fn legacy_flags_translate() {
        let args = parse(
            &strings(&[
                "-addr",
                "0.0.0.0:1",
                "-builders=http://a:1, http://b:2",
                "-loglevel",
                "debug",
                "-request-timeout",
                "2000",
                "--proxies",
                "c:3",
            ]),
            &no_env,
        )
        .unwrap();
        assert_eq!(args.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(args.el, ["http://a:1", "http://b:2"]);
        assert_eq!(args.proxy, ["c:3"]);
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert_eq!(args.request_timeout.as_deref(), Some("2000"));
    }

    #[test]
    fn environment_fills_missing_flags_only() {
        let env = |var: &str| match var {
            "SYNC_PROXY_LISTEN" => Some("127.0.0.1:9".to_owned()),
            "SYNC_PROXY_EL" => Some("x:1,y:2".to_owned()),
            "LOG_LEVEL" => Some("warn".to_owned()),
            "BEACON_EXPIRY_MS" => Some("6000".to_owned()),
            _ => None,
        };
        let args = parse(&strings(&["--listen", "127.0.0.1:8"]), &env).unwrap();
        assert_eq!(args.listen.as_deref(), Some("127.0.0.1:8"));
        assert_eq!(args.el, ["x:1", "y:2"]);
        assert_eq!(args.log_level.as_deref(), Some("warn"));
        assert_eq!(args.beacon_timeout.as_deref(), Some("6000ms"));
    }

    #[test]
    fn unknown_flag_fails_with_exit_code_2() {
        let (message, code) = parse(&strings(&["--nope"]), &no_env).unwrap_err();
        assert_eq!(code, 2);
        assert!(message.contains("--nope"), "{message}");
    }

    #[test]
    fn help_exits_0() {
        let (_, code) = parse(&strings(&["--help"]), &no_env).unwrap_err();
        assert_eq!(code, 0);
    }

    #[test]
    fn demo_subcommand_parses() {
        let args = parse(&strings(&["demo"]), &no_env).unwrap();
        assert!(matches!(args.command, Some(Command::Demo(_))));
    }
}
