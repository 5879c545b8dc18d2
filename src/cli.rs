//! Command-line flags as the user typed them: `argh` definitions, environment variables
//! (`SYNC_PROXY_*`) and the Go original's flag names folded in before parsing.
//!
//! Values stay raw strings here; [`crate::config`] validates them into typed settings, so every
//! complaint about a value names the flag it came from. Nothing here touches the network.

use argh::FromArgs;

use crate::config::ConfigError;

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

    /// how long the primary execution client has to give a final verdict on a payload or fork
    /// choice before another's final verdict answers, in ms (default 1000)
    #[argh(option)]
    pub hedge_after: Option<String>,

    /// timeout for every request to a chained proxy (--proxy), in ms (default: as
    /// --request-timeout)
    #[argh(option)]
    pub proxy_request_timeout: Option<String>,

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

    /// most answer bytes held for beacon nodes that do not read them, all connections together;
    /// beyond it no new request is read and the connections owing most are closed (default
    /// 256MiB)
    #[argh(option)]
    pub max_unsent_answer_bytes: Option<String>,

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
    /// Print the version and build facts.
    Version(VersionArgs),
}

/// Prints the version, git commit, target triple and build profile, and exits.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}

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
    env(
        "--proxy-request-timeout",
        &["SYNC_PROXY_PROXY_REQUEST_TIMEOUT"],
    ),
    env("--connect-timeout", &["SYNC_PROXY_CONNECT_TIMEOUT"]),
    env("--max-body", &["SYNC_PROXY_MAX_BODY"]),
    env("--max-header", &["SYNC_PROXY_MAX_HEADER"]),
    env("--max-connections", &["SYNC_PROXY_MAX_CONNECTIONS"]),
    env("--header-timeout", &["SYNC_PROXY_HEADER_TIMEOUT"]),
    env("--body-timeout", &["SYNC_PROXY_BODY_TIMEOUT"]),
    env("--idle-timeout", &["SYNC_PROXY_IDLE_TIMEOUT"]),
    env(
        "--max-unsent-answer-bytes",
        &["SYNC_PROXY_MAX_UNSENT_ANSWER_BYTES"],
    ),
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
    ("proxy-request-timeout", "--proxy-request-timeout"),
    ("loglevel", "--log-level"),
];

/// The Go original's boolean `-json` (also `-json=false`): JSON log lines.
const LEGACY_JSON_FLAG: &str = "json";

/// Spellings of the help flag besides argh's own `--help` (Go's flag package takes these).
const HELP_FLAGS: [&str; 2] = ["help", "h"];

/// Spellings of the version flag; each runs the `version` subcommand.
const VERSION_FLAGS: [&str; 3] = ["--version", "-version", "-V"];

/// Subcommands: environment flags go before them, since flags after one belong to it.
const SUBCOMMANDS: [&str; 2] = ["demo", "version"];

/// Turns an environment variable's text into a flag's value.
type Translate = fn(&str) -> String;

/// The Go original's environment variables whose value needs translating, and the flag each
/// sets. `BEACON_EXPIRY_MS` is in milliseconds while `--beacon-timeout` is in seconds, so the
/// value is passed on with its unit; `LOG_JSON` is a switch (Go: any non-empty value).
const LEGACY_ENV: &[(&str, &str, Translate)] = &[
    ("BEACON_EXPIRY_MS", "--beacon-timeout", |ms| {
        format!("{}ms", ms.trim())
    }),
    ("LOG_JSON", "--log-format", |switch| {
        String::from(if is_false(switch) { "text" } else { "json" })
    }),
];

/// Where a flag's value came from when it was not on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOrigin {
    /// The flag it set, e.g. `--beacon-timeout`.
    pub flag: &'static str,
    /// The variable, e.g. `BEACON_EXPIRY_MS`.
    pub var: &'static str,
    /// The variable's value as the operator wrote it.
    pub raw: String,
}

/// The flags that came from the environment, so errors can name what the operator wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins(Vec<EnvOrigin>);

impl Origins {
    /// The origin of `flag`, when the environment set it.
    pub fn of(&self, flag: &str) -> Option<&EnvOrigin> {
        self.0.iter().find(|o| o.flag == flag)
    }

    /// `error` as the operator should read it: a value from the environment is named by its
    /// variable and the text it holds (`invalid BEACON_EXPIRY_MS "abc": …`), not by the flag and
    /// the translated value it became.
    pub fn explain(&self, error: &ConfigError) -> String {
        let Some(origin) = self.of(error.flag) else {
            return error.to_string();
        };
        let item = if origin.raw.trim() == error.value.trim() || origin.var == "BEACON_EXPIRY_MS" {
            String::new()
        } else {
            // One item of a comma-separated list, or a part of the value.
            format!(" ({:?})", error.value)
        };
        format!(
            "invalid {} {:?}{item}: {}",
            origin.var, origin.raw, error.reason
        )
    }
}

/// Parses the process arguments (without the program name) and environment into [`Args`].
///
/// On failure returns the message to print and the exit code (0 for `--help`).
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Args, (String, i32)> {
    parse_with_origins(args, env).map(|(args, _)| args)
}

/// Like [`parse`], also telling which flags came from which environment variables.
pub fn parse_with_origins(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Args, Origins), (String, i32)> {
    // `--version` anywhere wins over everything else, as it does for most tools.
    if args.iter().any(|a| VERSION_FLAGS.contains(&a.as_str())) {
        let args = Args {
            command: Some(Command::Version(VersionArgs {})),
            ..Args::default()
        };
        return Ok((args, Origins::default()));
    }
    let mut argv = translate(args);
    let origins = append_environment(&mut argv, env);
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let args = Args::from_args(&["sync-proxy"], &strs).map_err(|exit| {
        let code = if exit.status.is_ok() { 0 } else { 2 };
        (exit.output.trim_end().to_owned(), code)
    })?;
    Ok((args, origins))
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

/// `0`, `false`, `no`, `off` (any case): an explicit "no" for a switch variable.
fn is_false(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// Rewrites what argh does not take into what it does: the Go original's flags (`-addr X`,
/// `--addr=X` → `--listen X`; `-builders a,b` → `--el a --el b`; `-json` → `--log-format
/// json`; `-help`), and our own flags written `--flag=value`, as unit files often do.
fn translate(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = split_flag(arg);
        let Some(name) = name else {
            out.push(arg.clone());
            continue;
        };
        if HELP_FLAGS.contains(&name) && inline.is_none() {
            out.push("--help".to_owned());
            continue;
        }
        if name == LEGACY_JSON_FLAG {
            let json = inline.is_none_or(|value| !is_false(value));
            out.push("--log-format".to_owned());
            out.push(String::from(if json { "json" } else { "text" }));
            continue;
        }
        let Some(&(_, ours)) = LEGACY_FLAGS.iter().find(|(legacy, _)| *legacy == name) else {
            match inline {
                Some(value) if arg.starts_with("--") => {
                    out.push(format!("--{name}"));
                    out.push(value.to_owned());
                }
                _ => out.push(arg.clone()),
            }
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

/// Adds flags from the environment for every flag not given on the command line; returns
/// where each came from.
fn append_environment(argv: &mut Vec<String>, env: &dyn Fn(&str) -> Option<String>) -> Origins {
    // Flags after a subcommand belong to it; environment flags go before it.
    let insert_at = argv
        .iter()
        .position(|a| SUBCOMMANDS.contains(&a.as_str()))
        .unwrap_or(argv.len());
    let mut extra = Vec::new();
    let mut origins = Origins::default();
    for flag in ENV_FLAGS {
        if argv.iter().any(|a| a == flag.flag) {
            continue;
        }
        let Some((var, value)) = flag
            .vars
            .iter()
            .find_map(|var| env(var).map(|value| (*var, value)))
        else {
            continue;
        };
        if flag.repeated {
            for item in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                extra.push(flag.flag.to_owned());
                extra.push(item.to_owned());
            }
        } else {
            extra.push(flag.flag.to_owned());
            extra.push(value.clone());
        }
        origins.0.push(EnvOrigin {
            flag: flag.flag,
            var,
            raw: value,
        });
    }
    for &(var, flag, convert) in LEGACY_ENV {
        if argv.iter().chain(&extra).any(|a| a == flag) {
            continue;
        }
        let Some(raw) = env(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        extra.push(flag.to_owned());
        extra.push(convert(&raw));
        origins.0.push(EnvOrigin { flag, var, raw });
    }
    argv.splice(insert_at..insert_at, extra);
    origins
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
    fn our_flags_take_the_equals_form() {
        let args = parse(
            &strings(&[
                "--el=http://127.0.0.1:1#jwt-secret=/run/el.hex",
                "--listen=[::1]:9",
                "--el",
                "b:2",
                "--log-level=debug",
            ]),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            args.el,
            ["http://127.0.0.1:1#jwt-secret=/run/el.hex", "b:2"]
        );
        assert_eq!(args.listen.as_deref(), Some("[::1]:9"));
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        let (message, code) = parse(&strings(&["--frobnicate=1"]), &no_env).unwrap_err();
        assert_eq!(code, 2);
        assert!(message.contains("--frobnicate"), "{message}");
    }

    #[test]
    fn go_json_switch_and_proxy_timeout_translate() {
        let json = parse(&strings(&["-json"]), &no_env).unwrap();
        assert_eq!(json.log_format.as_deref(), Some("json"));
        let text = parse(&strings(&["--json=false"]), &no_env).unwrap();
        assert_eq!(text.log_format.as_deref(), Some("text"));
        let timeout = parse(&strings(&["-proxy-request-timeout", "750"]), &no_env).unwrap();
        assert_eq!(timeout.proxy_request_timeout.as_deref(), Some("750"));
        let timeout = parse(&strings(&["-proxy-request-timeout=750"]), &no_env).unwrap();
        assert_eq!(timeout.proxy_request_timeout.as_deref(), Some("750"));
    }

    #[test]
    fn go_help_spellings_exit_0_with_usage() {
        for flag in ["-help", "-h", "--help"] {
            let (message, code) = parse(&strings(&[flag]), &no_env).unwrap_err();
            assert_eq!(code, 0, "{flag}");
            assert!(message.contains("--el"), "{flag}: {message}");
        }
    }

    #[test]
    fn log_json_variable_is_a_switch() {
        for (value, expected) in [
            ("1", Some("json")),
            ("true", Some("json")),
            ("yes", Some("json")),
            ("0", Some("text")),
            ("false", Some("text")),
            ("", None),
        ] {
            let env = |var: &str| (var == "LOG_JSON").then(|| value.to_owned());
            let args = parse(&[], &env).unwrap();
            assert_eq!(args.log_format.as_deref(), expected, "LOG_JSON={value:?}");
        }
        let env = |var: &str| match var {
            "LOG_JSON" => Some("1".to_owned()),
            "SYNC_PROXY_LOG_FORMAT" => Some("text".to_owned()),
            _ => None,
        };
        assert_eq!(
            parse(&[], &env).unwrap().log_format.as_deref(),
            Some("text")
        );
        let args = parse(&strings(&["--log-format", "text"]), &|var: &str| {
            (var == "LOG_JSON").then(|| "1".to_owned())
        })
        .unwrap();
        assert_eq!(args.log_format.as_deref(), Some("text"), "the flag wins");
    }

    /// The start-up error for this environment, as main prints it.
    fn environment_error(vars: &[(&str, &str)]) -> String {
        let env = |var: &str| {
            vars.iter()
                .find(|(name, _)| *name == var)
                .map(|(_, value)| (*value).to_owned())
        };
        let command_line = if env("SYNC_PROXY_EL").is_some() {
            Vec::new()
        } else {
            strings(&["--el", "127.0.0.1:1"])
        };
        let (args, origins) = parse_with_origins(&command_line, &env).unwrap();
        let error = crate::config::Config::from_args(&args).unwrap_err();
        origins.explain(&error)
    }

    #[test]
    fn environment_errors_name_the_variable_and_its_value() {
        let expiry = environment_error(&[("BEACON_EXPIRY_MS", "abc")]);
        assert!(
            expiry.starts_with("invalid BEACON_EXPIRY_MS \"abc\": "),
            "{expiry}"
        );
        assert!(!expiry.contains("abcms"), "{expiry}");
        let ack = environment_error(&[("SYNC_PROXY_ACK", "bogus")]);
        assert_eq!(
            ack,
            "invalid SYNC_PROXY_ACK \"bogus\": expected primary, immediate or majority"
        );
        let el = environment_error(&[("SYNC_PROXY_EL", "127.0.0.1:1, ftp://x:2")]);
        assert!(
            el.starts_with("invalid SYNC_PROXY_EL \"127.0.0.1:1, ftp://x:2\" (\"ftp://x:2\"): "),
            "{el}"
        );
        let level = environment_error(&[("LOG_LEVEL", "loud")]);
        assert!(level.starts_with("invalid LOG_LEVEL \"loud\": "), "{level}");
    }

    #[test]
    fn command_line_errors_still_name_the_flag() {
        let (args, origins) = parse_with_origins(
            &strings(&["--el", "127.0.0.1:1", "--ack", "bogus"]),
            &|var: &str| (var == "SYNC_PROXY_ACK").then(|| "immediate".to_owned()),
        )
        .unwrap();
        assert_eq!(
            origins.of("--ack"),
            None,
            "the flag was given, the variable unused"
        );
        let error = crate::config::Config::from_args(&args).unwrap_err();
        assert!(
            origins
                .explain(&error)
                .starts_with("invalid --ack \"bogus\""),
            "{}",
            origins.explain(&error)
        );
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
    fn version_flag_and_subcommand_parse() {
        for list in [
            &["--version"][..],
            &["-V"],
            &["-version"],
            &["version"],
            &["--el", "x:1", "--version"],
        ] {
            let args = parse(&strings(list), &no_env).unwrap();
            assert_eq!(
                args.command,
                Some(Command::Version(VersionArgs {})),
                "{list:?}"
            );
        }
        let env = |var: &str| (var == "SYNC_PROXY_EL").then(|| "a:1".to_owned());
        let args = parse(&strings(&["version"]), &env).unwrap();
        assert_eq!(
            args.el,
            ["a:1"],
            "environment flags go before the subcommand"
        );
    }

    #[test]
    fn demo_subcommand_parses() {
        let args = parse(&strings(&["demo"]), &no_env).unwrap();
        assert!(matches!(args.command, Some(Command::Demo(_))));
    }
}
