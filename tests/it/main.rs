//! The single integration-test binary: the built `sync-proxy` against mock execution clients
//! and test beacon nodes, all speaking real HTTP on loopback.

mod support;

mod answers;
mod auth;
mod beacon;
mod chain;
mod contrib;
mod docs;
mod failover;
mod framing;
mod keepalive;
mod limits;
mod logging;
mod metrics;
mod nginx;
mod proxy;
mod ready;
mod shutdown;
mod startup;
mod ui;
