//! nginx as the benchmark's reference proxy: a generated configuration in a temp dir, one
//! process (`master_process off`, `daemon off`), listening on loopback only, killed on drop.
//!
//! Two shapes: plain `proxy_pass` to a keep-alive upstream (what a BN→EL reverse proxy is), and
//! the same plus `mirror` subrequests to sync-proxy as in DESIGN.md's appendix (the original
//! deployment). It does not tune nginx beyond that: stock buffers, timeouts and limits.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::procs::Proc;

/// Idle keep-alive connections nginx keeps per upstream: more than the load's 8 connections.
const UPSTREAM_KEEPALIVE: usize = 16;

/// A mirror target of a generated configuration.
pub struct Mirror {
    /// Where the mirrored requests go (a sync-proxy with `--ack immediate`).
    pub target: SocketAddr,
    /// Keep-alive connections to the target; the appendix has none (a connection per request).
    pub keepalive: bool,
}

/// A `server` of a generated configuration.
pub struct Server {
    /// Where nginx listens.
    pub listen: SocketAddr,
    /// `mirror` subrequests of every request, if any.
    pub mirror: Option<Mirror>,
    /// `client_body_buffer_size`, if not nginx's default (16 KiB: bigger bodies go to a temp
    /// file).
    pub body_buffer: Option<&'static str>,
}

/// Starts nginx with one server per entry of `servers`, each proxying to `execution_client`;
/// `dir` holds the configuration, pid file, temp files and error log.
pub fn start(
    nginx: &Path,
    name: &str,
    dir: &Path,
    execution_client: SocketAddr,
    servers: &[Server],
) -> io::Result<Proc> {
    start_with(nginx, name, dir, execution_client, servers, None)
}

/// [`start`], optionally under callgrind: `(valgrind, profile file)`.
pub fn start_with(
    nginx: &Path,
    name: &str,
    dir: &Path,
    execution_client: SocketAddr,
    servers: &[Server],
    callgrind: Option<(&Path, &Path)>,
) -> io::Result<Proc> {
    fs::create_dir_all(dir)?;
    let config_path = dir.join("nginx.conf");
    fs::write(&config_path, config(dir, execution_client, servers))?;
    let args = vec![
        "-p".to_owned(),
        dir.display().to_string(),
        "-c".to_owned(),
        config_path.display().to_string(),
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
    ];
    let log = dir.join("stderr.log");
    let mut proc = match callgrind {
        Some((valgrind, out)) => super::callgrind::spawn(valgrind, name, nginx, &args, out, &log)?,
        None => Proc::spawn(name, nginx, &args, &log)?,
    };
    for server in servers {
        proc.wait_listening(server.listen)?;
    }
    Ok(proc)
}

fn config(dir: &Path, execution_client: SocketAddr, servers: &[Server]) -> String {
    let dir = dir.display();
    let mut text = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # geth's Engine API body limit, as sync-proxy's default.
    client_max_body_size 128m;
    upstream execution_client {{
        server {execution_client};
        keepalive {UPSTREAM_KEEPALIVE};
    }}
"
    );
    for (index, server) in servers.iter().enumerate() {
        let mut mirror_directive = String::new();
        let mut mirror_location = String::new();
        if let Some(mirror) = &server.mirror {
            let location = format!("/sync_proxy_{index}");
            mirror_directive = format!("mirror {location};");
            let target = mirror.target;
            if mirror.keepalive {
                let _ = writeln!(
                    text,
                    "    upstream sync_proxy_{index} {{ server {target}; keepalive {UPSTREAM_KEEPALIVE}; }}"
                );
                mirror_location = format!(
                    "location = {location} {{
            internal;
            proxy_pass http://sync_proxy_{index}$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_connect_timeout 100ms;
            proxy_read_timeout 100ms;
        }}"
                );
            } else {
                // As in DESIGN.md's appendix: a new connection per mirrored request.
                mirror_location = format!(
                    "location = {location} {{
            internal;
            proxy_pass http://{target}$request_uri;
            proxy_connect_timeout 100ms;
            proxy_read_timeout 100ms;
        }}"
                );
            }
        }
        let body_buffer = server.body_buffer.map_or(String::new(), |size| {
            format!("client_body_buffer_size {size};")
        });
        let _ = write!(
            text,
            "    server {{
        listen {listen};
        {body_buffer}
        location / {{
            {mirror_directive}
            proxy_pass http://execution_client;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        {mirror_location}
    }}
",
            listen = server.listen
        );
    }
    text.push_str("}\n");
    text
}
