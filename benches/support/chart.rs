//! An SVG chart of latency distributions, written by the benchmark itself (no plotting
//! dependency): one curve per setup, latency on a logarithmic axis against the fraction of
//! requests answered within it, on a scale that gives p50–p90, p90–p99 and p99–p99.9 equal
//! room, so the body of each distribution and its tail read at once. The README shows the chart the
//! benchmark wrote beside the table from the same run.

use std::fmt::Write as _;

/// Plot area and margins, in SVG user units (the chart scales with its container).
const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
/// Room under the plot for the axis labels, before the legend.
const AXIS: f64 = 56.0;
/// Height of a legend row.
const LEGEND_ROW: f64 = 17.0;
/// The fraction axis ends at p99.9: `-log10(1 - p)` from 0 to 3.
const TAIL_DECADES: f64 = 3.0;

/// Line colours, distinguishable in colour and in grey scale, one per setup in order.
const COLOURS: [&str; 8] = [
    "#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c", "#8c564b", "#444444",
];

/// Points drawn per curve: enough for a smooth line, few enough for a small file.
const POINTS: usize = 200;

/// One setup's latencies, in microseconds, in any order.
pub struct Series<'a> {
    /// The legend's label.
    pub label: &'a str,
    /// Samples in microseconds.
    pub micros: &'a [f64],
}

/// The SVG document: the cumulative distribution of each series on a log-scaled latency axis.
/// Series without samples are left out; the axis spans the smallest to the largest sample.
pub fn latency_cdf(title: &str, series: &[Series<'_>]) -> String {
    let mut sorted: Vec<(&str, Vec<f64>)> = series
        .iter()
        .map(|s| {
            let mut v: Vec<f64> = s
                .micros
                .iter()
                .copied()
                .filter(|x| x.is_finite() && *x > 0.0)
                .collect();
            v.sort_by(f64::total_cmp);
            (s.label, v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    sorted.truncate(COLOURS.len());
    let lo = sorted
        .iter()
        .map(|(_, v)| v[0])
        .fold(f64::INFINITY, f64::min);
    // The axis ends where the plot does, at p99.9: a single outlier does not squeeze the rest.
    let tail = 1.0 - 10f64.powf(-TAIL_DECADES);
    let hi = sorted
        .iter()
        .map(|(_, v)| v[((tail * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1])
        .fold(0.0, f64::max);
    let (lo, hi) = decade_bounds(lo, hi);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PLOT_HEIGHT;
    let height = TOP + plot_h + AXIS + sorted.len() as f64 * LEGEND_ROW + 8.0;
    let x = |us: f64| LEFT + (us.log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_w;
    // 0 at the bottom, p50 at 0.3 decades, p90 at 1, p99 at 2, p99.9 at the top.
    let y = |fraction: f64| {
        let tail = -(1.0 - fraction).max(10f64.powf(-TAIL_DECADES)).log10();
        TOP + (1.0 - tail / TAIL_DECADES) * plot_h
    };

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r##"<rect width="{WIDTH}" height="{height:.0}" fill="#ffffff"/><text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>"##,
        escape(title)
    );
    // Grid: every decade and its 2x and 5x, labelled at decades; quartiles and p99 across.
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        for (factor, label) in [(1.0, true), (2.0, false), (5.0, false)] {
            let at = tick * factor;
            if at > hi * 1.0001 {
                break;
            }
            let px = x(at);
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#{}" stroke-width="1"/>"##,
                TOP + plot_h,
                if label { "cccccc" } else { "eeeeee" }
            );
            let _ = write!(
                svg,
                r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                TOP + plot_h + 16.0,
                micros_label(at)
            );
        }
        tick *= 10.0;
    }
    for (fraction, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
    ] {
        let py = y(fraction);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">latency (log scale), fraction of requests answered within it</text>"##,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 34.0
    );
    for (i, (label, samples)) in sorted.iter().enumerate() {
        let colour = COLOURS[i];
        let mut path = String::new();
        let n = samples.len();
        // Points evenly spaced on the tail scale, up to the last percentile the samples hold.
        let top = (n as f64).log10().min(TAIL_DECADES);
        for step in 0..=POINTS {
            let fraction = 1.0 - 10f64.powf(-(step as f64 / POINTS as f64) * top);
            let index = ((fraction * n as f64).ceil() as usize).clamp(1, n) - 1;
            let command = if step == 0 { 'M' } else { 'L' };
            let _ = write!(
                path,
                "{command}{:.1},{:.1} ",
                x(samples[index]),
                y(fraction)
            );
        }
        let _ = write!(
            svg,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.trim_end()
        );
        // Legend under the axis label, one setup a row.
        let lx = LEFT;
        let ly = TOP + plot_h + AXIS + i as f64 * LEGEND_ROW;
        let _ = write!(
            svg,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{} (n={n})</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 24.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The powers of ten around `lo..=hi` (1 µs to 10 µs when there is nothing to show).
fn decade_bounds(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi >= lo) {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

fn micros_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{} ms", us / 1_000.0)
    } else {
        format!("{us} µs")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
