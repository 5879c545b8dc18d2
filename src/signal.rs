//! What each Unix signal means to the proxy: which ones the loop catches, which of them stop it
//! (draining first) and which are only logged.
//!
//! Uncaught, SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT kill a process at once: no log line, queued
//! payloads lost. Init systems and operators send them routinely (`systemctl reload`, a closed
//! terminal, a habit from nginx), so every one of them is caught. There is no configuration to
//! reload and no state to dump, so SIGHUP and SIGUSR1/2 are logged and otherwise ignored;
//! SIGQUIT stops gracefully like SIGTERM, as it does for nginx. This module decides; the event
//! loop registers the signals and acts.

use std::ffi::c_int;

use log::info;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

/// Every signal the event loop catches.
pub const HANDLED: [c_int; 6] = [SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2];

/// What a caught signal does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Stop accepting, deliver what is queued within the grace period, exit 0.
    Drain,
    /// Log it and carry on.
    Ignore,
}

/// What `signal` does.
pub fn disposition(signal: c_int) -> Disposition {
    match signal {
        SIGINT | SIGTERM | SIGQUIT => Disposition::Drain,
        _ => Disposition::Ignore,
    }
}

/// The conventional name of a caught signal, for logs.
pub fn name(signal: c_int) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// Logs a signal that is deliberately ignored, saying what would stop the proxy instead.
pub fn log_ignored(signal: c_int) {
    info!(
        signal = name(signal);
        "received {}: ignored (there is no configuration to reload); SIGTERM, SIGINT or SIGQUIT stop the proxy",
        name(signal)
    );
}

/// Whether `signal` is one to ignore; if so, it is logged.
pub fn ignored(signal: c_int) -> bool {
    let ignore = disposition(signal) == Disposition::Ignore;
    if ignore {
        log_ignored(signal);
    }
    ignore
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_drain_and_the_rest_are_ignored() {
        let drained: Vec<&str> = HANDLED
            .iter()
            .filter(|&&s| disposition(s) == Disposition::Drain)
            .map(|&s| name(s))
            .collect();
        assert_eq!(drained, ["SIGINT", "SIGTERM", "SIGQUIT"]);
        for signal in [SIGHUP, SIGUSR1, SIGUSR2] {
            assert_eq!(disposition(signal), Disposition::Ignore, "{}", name(signal));
        }
    }

    #[test]
    fn every_handled_signal_has_a_name() {
        for signal in HANDLED {
            assert_ne!(name(signal), "signal");
        }
    }
}
