//! Helpers of the end-to-end proxy benchmark (`benches/proxy.rs`): a minimal blocking HTTP/1.1
//! reader, a fast mock execution client, the load generator, child-process guards, nginx
//! configurations and the Markdown report. Loopback only; every loop is bounded in count and
//! time.

pub mod callgrind;
pub mod chart;
pub mod http;
pub mod load;
pub mod mock_el;
pub mod nginx;
pub mod procs;
pub mod report;
