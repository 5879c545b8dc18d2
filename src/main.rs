//! The `sync-proxy` binary: flags → validated configuration → the event loop. A bad flag stops
//! start-up with one line on stderr naming it, and exit code 2.
//!
//! Messages go out with `writeln!` and the result ignored, never `println!`/`eprintln!`: those
//! panic when the stream is closed (`sync-proxy … | head`), and a release build aborts on panic.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::process::ExitCode;

use sync_proxy::cli::{self, Command};
use sync_proxy::config::Config;
use sync_proxy::logger;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, origins) = match cli::parse_with_origins(&args, &|var| std::env::var(var).ok()) {
        Ok(parsed) => parsed,
        Err((message, code)) => {
            if code == 0 {
                let _ = writeln!(io::stdout(), "{message}");
            } else {
                let first = message.lines().next().unwrap_or("invalid arguments");
                let _ = writeln!(io::stderr(), "sync-proxy: {first}");
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    if let Some(Command::Version(_)) = &args.command {
        let _ = writeln!(io::stdout(), "{}", sync_proxy::version::describe());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Demo(demo)) = &args.command {
        logger::init(log::LevelFilter::Info, logger::Format::Text);
        return match sync_proxy::demo::run(demo) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(io::stderr(), "sync-proxy demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(io::stderr(), "sync-proxy: {}", origins.explain(&e));
            return ExitCode::from(2);
        }
    };
    logger::init(config.log_level, config.log_format);
    match sync_proxy::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "sync-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
