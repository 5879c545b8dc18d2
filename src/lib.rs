//! sync-proxy: lets a group of Ethereum beacon nodes drive a group of execution clients over the
//! Engine API, redundantly, from one single-threaded `mio` event loop.
//!
//! The binary is a thin shell over [`run`]; tests, fuzz targets and benchmarks link the same
//! modules. Pure modules (HTTP codec, JSON-RPC inspection, JWT, beacon tracking, routing,
//! exchanges) take bytes and time in and return decisions; every decision sits in the sans-IO
//! [`core`]; only [`event_loop`] (with [`connections`], [`inbound`] and [`outbound`]) touches
//! sockets. `ARCHITECTURE.md` draws the data flow.

#![forbid(unsafe_code)]
// The library exists for this binary, its tests, fuzz targets and benchmarks, not for other
// crates: its documentation is built with `--document-private-items` (`.ci/run`), where links
// from public items into the crate-private modules resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod config;
pub(crate) mod connections;
pub(crate) mod core;
pub mod demo;
pub mod engine;
pub(crate) mod event_log;
pub(crate) mod event_loop;
pub(crate) mod exchange;
pub(crate) mod execution_client;
pub(crate) mod handler;
pub mod http;
pub(crate) mod identity;
pub mod inbound;
pub mod jwt;
pub(crate) mod log_limit;
pub mod logger;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod network;
pub mod outbound;
pub(crate) mod readiness;
pub(crate) mod recent;
pub mod request;
pub(crate) mod router;
pub mod rpc;
pub(crate) mod signal;
pub mod sim;
pub(crate) mod status;
pub mod time;
pub(crate) mod timer;
pub mod tracker;
pub(crate) mod ui;
pub mod version;

use std::io;

use log::{info, warn};

use crate::config::{Config, UpstreamKind};
use crate::event_loop::Proxy;

/// Runs the proxy with `config` until a signal stops it.
pub fn run(config: Config) -> io::Result<()> {
    let listen = config.listen;
    let mut proxy = Proxy::bind(config.clone()).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on --listen {listen}: {e}"))
    })?;
    log_startup(&config, &proxy);
    proxy.run()?;
    info!("stopped");
    Ok(())
}

fn log_startup(config: &Config, proxy: &Proxy) {
    info!(
        "sync-proxy {} ({}) listening on {} (--ack {}, network {})",
        version::VERSION,
        version::COMMIT,
        proxy.local_addr(),
        config.ack.name(),
        config.chain_name
    );
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let role = match (upstream.kind, index) {
            (UpstreamKind::ExecutionClient, 0) => "execution client (preferred primary)",
            (UpstreamKind::ExecutionClient, _) => "execution client",
            (UpstreamKind::Proxy, _) => "chained proxy",
        };
        let auth = match &upstream.jwt_secret {
            Some(_) => "signs its own tokens",
            None => "passes the beacon node's Authorization on",
        };
        info!("{role}: {} ({}; {auth})", upstream.url, upstream.addr);
    }
    if config.jwt_secret.is_none() {
        warn!(
            "inbound JWT authentication is OFF (no --jwt-secret): anyone who can reach {} can drive the execution clients",
            proxy.local_addr()
        );
    }
}
