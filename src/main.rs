//! The `sync-proxy` binary: flags → validated configuration → the event loop. A bad flag stops
//! start-up with one line on stderr naming it, and exit code 2.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use sync_proxy::cli::{self, Command};
use sync_proxy::config::Config;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match cli::parse(&args, &|var| std::env::var(var).ok()) {
        Ok(args) => args,
        Err((message, code)) => {
            if code == 0 {
                println!("{message}");
            } else {
                eprintln!(
                    "sync-proxy: {}",
                    message.lines().next().unwrap_or("invalid arguments")
                );
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    if let Some(Command::Demo(demo)) = &args.command {
        init_logging(log::LevelFilter::Info);
        return match sync_proxy::demo::run(demo) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sync-proxy demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sync-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_level);
    match sync_proxy::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    // Timestamps in UTC: the host's offset is not known in a static musl binary.
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_utc_timestamps()
        .init();
}
