//! `/metrics` against a strict reading of the Prometheus text exposition format (0.0.4), and its
//! cardinality under a flood of beacon-node identities.
//!
//! The parser here is deliberately stricter than Prometheus itself: only `# HELP` and `# TYPE`
//! comments, one of each per family and before its samples, families contiguous, metric and
//! label names from the allowed alphabets, label values with exactly the three escapes, no
//! duplicate series, counters named `_total`, histograms with sorted cumulative buckets ending
//! in `+Inf` that match `_count`, and `_sum`.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::mock_el::MockEl;
use crate::support::{Client, ProxyProcess, get, new_payload, unix_now};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// One metric family: its type, help and samples in order.
#[derive(Clone, Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// `{a="x",b="y\"z"}` → pairs, with escapes undone; the rest of the line after `}`.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut rest = text.strip_prefix('{').ok_or("labels start with {")?;
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or(format!("label without =\": {rest}"))?;
        if !is_label_name(name) {
            return Err(format!("label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let Some((at, c)) = chars.next() else {
                return Err(format!("unterminated value of {name}"));
            };
            match c {
                '"' => break at,
                '\n' => return Err("raw newline in a label value".to_owned()),
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {name}")),
                },
                c => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else if !rest.starts_with('}') {
            return Err(format!("after a label: {rest}"));
        }
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("value {text:?}")),
    }
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base)?.kind == "histogram").then_some(base)
    })
}

/// Parses and checks a whole exposition; returns the families.
fn parse_strict(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("no final newline".to_owned());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}: {line}", number + 1);
        if line.is_empty() {
            return Err(at("empty line".to_owned()));
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let (keyword, rest) = comment
                .split_once(' ')
                .ok_or_else(|| at("comment".into()))?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err(at(format!("metric name {name:?}")));
            }
            if finished.contains(name) {
                return Err(at("family declared again after its samples".into()));
            }
            if current.as_deref() != Some(name) {
                if let Some(done) = current.take() {
                    finished.insert(done);
                }
                current = Some(name.to_owned());
            }
            let family = families.entry(name.to_owned()).or_default();
            if !family.samples.is_empty() {
                return Err(at("HELP/TYPE after samples".into()));
            }
            match keyword {
                "HELP" if family.help.is_none() => family.help = Some(tail.to_owned()),
                "TYPE" if family.kind.is_empty() => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) {
                        return Err(at(format!("type {tail:?}")));
                    }
                    family.kind = tail.to_owned();
                }
                _ => return Err(at(format!("second or unknown {keyword}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("only # HELP and # TYPE comments".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let fields: Vec<&str> = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("space before the value".into()))?
            .split(' ')
            .collect();
        let value = match fields.as_slice() {
            [value] | [value, _] => parse_value(value).map_err(at)?,
            _ => return Err(at("value [timestamp]".into())),
        };
        let family_name = family_of(name, &families)
            .ok_or_else(|| at("sample of an undeclared family".into()))?
            .to_owned();
        if current.as_deref() != Some(family_name.as_str()) {
            return Err(at("sample away from its family's block".into()));
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !series.insert(format!("{name}{key_labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        let family = families.get_mut(&family_name).expect("found above");
        if family.kind.is_empty() {
            return Err(at("sample before its TYPE".into()));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, family) in &families {
        if family.help.is_none() {
            return Err(format!("{name}: no HELP"));
        }
        check_family(name, family)?;
    }
    Ok(families)
}

/// Type-specific rules: counter names and values, histogram buckets.
fn check_family(name: &str, family: &Family) -> Result<(), String> {
    match family.kind.as_str() {
        "counter" => {
            if !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
            for sample in &family.samples {
                // NaN and negative values are both wrong for a counter.
                let counts = sample.value.is_finite() && sample.value >= 0.0;
                if sample.name != name || !counts {
                    return Err(format!("counter sample {sample:?}"));
                }
            }
        }
        "gauge" => {
            if let Some(sample) = family.samples.iter().find(|s| s.name != name) {
                return Err(format!("gauge {name} has sample {}", sample.name));
            }
        }
        "histogram" => check_histogram(name, family)?,
        other => return Err(format!("{name}: the proxy exposes no {other}")),
    }
    Ok(())
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let bucket_name = format!("{name}_bucket");
    let buckets: Vec<(f64, f64)> = family
        .samples
        .iter()
        .filter(|s| s.name == bucket_name)
        .map(|s| {
            let le = s.labels.iter().find(|(n, _)| n == "le").map(|(_, v)| v);
            let le = le.ok_or(format!("bucket without le: {s:?}"))?;
            Ok((parse_value(le)?, s.value))
        })
        .collect::<Result<_, String>>()?;
    let last = buckets.last().ok_or(format!("{name}: no buckets"))?;
    if last.0 != f64::INFINITY {
        return Err(format!("{name}: last bucket is not +Inf"));
    }
    if !buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    {
        return Err(format!(
            "{name}: buckets not sorted and cumulative: {buckets:?}"
        ));
    }
    let single = |suffix: &str| {
        let wanted = format!("{name}{suffix}");
        let found: Vec<&Sample> = family.samples.iter().filter(|s| s.name == wanted).collect();
        match found.as_slice() {
            [sample] => Ok(sample.value),
            _ => Err(format!("{name}: {} {suffix} samples", found.len())),
        }
    };
    let count = single("_count")?;
    single("_sum")?;
    if count != last.1 {
        return Err(format!("{name}: _count {count} != +Inf bucket {}", last.1));
    }
    Ok(())
}

#[test]
fn strict_parser_rejects_what_prometheus_would_misread() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    assert!(parse_strict(good).is_ok(), "{:?}", parse_strict(good));
    for bad in [
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"\\t\"} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",x=\"2\"} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
        "# HELP b A.\n# TYPE b gauge\nc 1\n",
        "# HELP 1b A.\n# TYPE 1b gauge\n1b 1\n",
        "# HELP b A.\n# TYPE b gauge\n# TYPE b gauge\nb 1\n",
        "# HELP b A.\n# TYPE b gauge\nb{__x=\"1\"} 1\n",
        "# HELP b A.\n# TYPE b gauge\n# a comment\nb 1\n",
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        "# HELP b A.\n# TYPE b gauge\n# HELP c C.\n# TYPE c gauge\nb 1\n",
    ] {
        assert!(parse_strict(bad).is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn metrics_pass_the_strict_check_with_traffic() {
    let els = [MockEl::start("el-0"), MockEl::start("el-1")];
    let proxy = ProxyProcess::start(&["--el", &els[0].url(), "--el", &els[1].url()]);
    let fresh = get(proxy.addr(), "/metrics");
    assert_eq!(
        fresh.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    parse_strict(&fresh.text()).unwrap_or_else(|e| panic!("{e}\n{}", fresh.text()));
    let mut beacon = Client::connect(proxy.addr());
    for (i, path) in ["/bn-1", "/bn-2", "/bn-1"].iter().enumerate() {
        beacon.post(path, &new_payload(i as u64, 0x60 + i as u8, unix_now()), "");
        beacon.read_response();
    }
    beacon.post("/", b"{not json", "");
    beacon.read_response();
    let text = get(proxy.addr(), "/metrics").text();
    let families = parse_strict(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let answers = &families["sync_proxy_answer_seconds"];
    assert!(
        answers
            .samples
            .iter()
            .any(|s| s.name.ends_with("_count") && s.value >= 4.0)
    );
    let followed = &families["sync_proxy_beacon_followed"].samples;
    assert!(
        followed
            .iter()
            .any(|s| s.labels == [("beacon".into(), "bn-1".into())] && s.value == 1.0)
    );
}

#[test]
fn a_thousand_beacon_identities_keep_the_series_bounded() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let baseline = get(proxy.addr(), "/metrics").text().lines().count();
    let mut beacon = Client::connect(proxy.addr());
    // The same block from 1,000 identities on one keep-alive connection: one reaches the
    // execution client, the rest are answered from the proxy's memory.
    let payload = new_payload(1, 0x77, unix_now());
    for i in 0..1000 {
        beacon.post(&format!("/bn-{i}"), &payload, "");
        assert_eq!(beacon.read_response().status, 200);
    }
    let text = get(proxy.addr(), "/metrics").text();
    let families = parse_strict(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut beacon_labels = BTreeSet::new();
    for family in families.values() {
        for sample in &family.samples {
            for (name, value) in &sample.labels {
                if name == "beacon" {
                    beacon_labels.insert(value.clone());
                }
            }
        }
    }
    // 16 own labels and "other" (the tracker remembers 64 of the 1,000).
    assert_eq!(beacon_labels.len(), 17, "{beacon_labels:?}");
    assert!(beacon_labels.contains("other"));
    assert!(
        beacon_labels.contains("bn-0"),
        "the followed one keeps its label"
    );
    let lines = text.lines().count();
    assert!(
        lines < baseline + 3 * 17 + 8,
        "{lines} lines (from {baseline} without beacon nodes)"
    );
    let tracked = &families["sync_proxy_beacons_tracked"].samples[0];
    assert_eq!(tracked.value, 64.0);
}
