//! `contrib/` stays true to the binary: every metric the Grafana dashboard queries exists in a
//! live `/metrics`; the systemd unit's and the container recipe's settings configure a valid
//! proxy. (`systemd-analyze verify` checks the unit's own syntax in `.ci/run`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sync_proxy::cli;
use sync_proxy::config::Config;

use crate::support::mock_el::MockEl;
use crate::support::{ProxyProcess, forkchoice, get, new_payload, post_with, unix_now};

fn contrib(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every string under a key named `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(text) if k == key => out.push(text.clone()),
                    _ => strings_under(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

/// Identifiers in a PromQL expression that name a sync-proxy metric.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("sync_proxy_"))
        .map(str::to_owned)
        .collect()
}

/// Label names a PromQL expression or legend groups or prints by: `by (a, b)`, `{{a}}`.
fn label_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in text.split("by (").skip(1) {
        let list = part.split(')').next().unwrap_or("");
        names.extend(list.split(',').map(|n| n.trim().to_owned()));
    }
    for part in text.split("{{").skip(1) {
        names.push(part.split("}}").next().unwrap_or("").trim().to_owned());
    }
    names
}

/// The sample names and label names of a `/metrics` text.
fn exposed(metrics: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut samples = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        samples.insert(line[..name_end].to_owned());
        if let Some(set) = line[name_end..].strip_prefix('{') {
            for pair in set.split("\",") {
                if let Some((name, _)) = pair.split_once('=') {
                    labels.insert(name.trim().to_owned());
                }
            }
        }
    }
    (samples, labels)
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_proxy_exposes() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    // Traffic, so per-beacon and per-method series exist.
    post_with(proxy.addr(), "/bn-1", &new_payload(1, 0x51, unix_now()), "");
    post_with(proxy.addr(), "/bn-1", &forkchoice(2, 0x51, None), "");
    let (samples, labels) = exposed(&get(proxy.addr(), "/metrics").text());

    let dashboard: Value =
        serde_json::from_str(&contrib("grafana/sync-proxy.json")).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    strings_under(&dashboard, "definition", &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut legends = Vec::new();
    strings_under(&dashboard, "legendFormat", &mut legends);
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a query of something else: {expr}");
        queried.extend(names);
    }
    let missing: Vec<&String> = queried.iter().filter(|m| !samples.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
    // Labels Prometheus adds itself are fine; every other label must be one we expose.
    let grouped: BTreeSet<String> = exprs
        .iter()
        .chain(&legends)
        .flat_map(|text| label_names(text))
        .filter(|name| name != "instance" && name != "job")
        .collect();
    let unknown: Vec<&String> = grouped.iter().filter(|l| !labels.contains(*l)).collect();
    assert!(unknown.is_empty(), "labels /metrics lacks: {unknown:?}");
    // Every family the proxy exposes is on the dashboard, so a new metric is not forgotten.
    let families: BTreeSet<String> = samples
        .iter()
        .map(|s| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| s.strip_suffix(suffix))
                .unwrap_or(s)
                .to_owned()
        })
        .collect();
    let unshown: Vec<&String> = families
        .iter()
        .filter(|family| !queried.iter().any(|q| q.starts_with(family.as_str())))
        .collect();
    assert!(unshown.is_empty(), "metrics no panel shows: {unshown:?}");
}

/// `KEY=VALUE` settings of lines starting with `prefix` (`Environment=`, `ENV `).
fn settings(text: &str, prefix: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|setting| setting.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// Writes a 32-byte hex secret for each `LoadCredential=name:path` into `dir`, as systemd would.
fn credentials(unit: &str, dir: &Path) -> usize {
    let mut count = 0;
    for (_, spec) in settings(unit, "LoadCredential") {
        let name = spec.split(':').next().unwrap_or_default();
        std::fs::write(dir.join(name), "0x".to_owned() + &"ab".repeat(32)).unwrap();
        count += 1;
    }
    count
}

/// Validates the configuration `env` (and `args`) give, as the binary would at start-up.
fn configure(args: &[String], env: &[(String, String)]) -> Result<Config, String> {
    let lookup = |var: &str| {
        env.iter()
            .find(|(key, _)| key == var)
            .map(|(_, value)| value.clone())
    };
    let (args, origins) = cli::parse_with_origins(args, &lookup).map_err(|(m, _)| m)?;
    Config::from_args(&args).map_err(|e| origins.explain(&e))
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sync-proxy-contrib-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn systemd_unit_is_sandboxed_and_configures_a_valid_proxy() {
    let unit = contrib("systemd/sync-proxy.service");
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ExecStart=/usr/local/bin/sync-proxy\n",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    // The secrets come from the credentials directory (%d), never from a path the dynamic user
    // would have to read.
    let dir = scratch_dir("systemd");
    assert_eq!(credentials(&unit, &dir), 3);
    let env: Vec<(String, String)> = settings(&unit, "Environment=")
        .into_iter()
        .map(|(key, value)| (key, value.replace("%d", &dir.to_string_lossy())))
        .collect();
    assert!(
        env.iter().all(|(key, _)| key.starts_with("SYNC_PROXY_")),
        "{env:?}"
    );
    let config = configure(&[], &env).unwrap_or_else(|e| panic!("the unit's settings: {e}"));
    assert_eq!(config.upstreams.len(), 2);
    assert!(config.jwt_secret.is_some());
    assert!(config.upstreams.iter().all(|u| u.jwt_secret.is_some()));
    assert_eq!(config.log_format, sync_proxy::logger::Format::Json);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_recipe_ships_the_static_binary_listening_beyond_loopback() {
    let recipe = contrib("container/Containerfile");
    assert!(recipe.lines().any(|l| l == "FROM scratch"), "{recipe}");
    assert!(recipe.contains("COPY sync-proxy /usr/local/bin/sync-proxy"));
    assert!(recipe.contains("ENTRYPOINT [\"/usr/local/bin/sync-proxy\"]"));
    let env = settings(&recipe, "ENV ");
    let args = ["--el".to_owned(), "127.0.0.1:8551".to_owned()];
    let config = configure(&args, &env).unwrap_or_else(|e| panic!("the recipe's settings: {e}"));
    assert!(config.listen.ip().is_unspecified(), "{}", config.listen);
}
