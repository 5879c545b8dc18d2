//! The process's logger: one line per event on stderr, as text or as one JSON object per line,
//! written so that a broken log pipe can never take the proxy down.
//!
//! Each line is formatted whole, then handed to the kernel with a single `write` (a line under
//! `PIPE_BUF`, 4 KiB, therefore arrives whole even when another process shares the pipe). A
//! write that fails — the log shipper died and the pipe is closed (`EPIPE`: Rust ignores
//! `SIGPIPE`), the disk is full — drops that line and counts it in
//! [`write_failures`], which `/metrics` exposes; nothing panics. What this module does not do:
//! buffer, retry later, or make a blocked (full, unread) pipe non-blocking: a log reader that
//! stops reading without closing still stalls the writer, as with any logger on stderr.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{self, VisitSource, VisitValue};
use log::{LevelFilter, Log, Metadata, Record};

/// Writes attempted for one line before it is dropped. One is the rule; more are needed only
/// when a signal interrupts the write or the kernel takes part of a line over `PIPE_BUF`.
pub const MAX_WRITES_PER_LINE: usize = 8;

/// The keys every JSON line starts with; an event field of the same name is written as
/// `field_<name>` so it cannot shadow them.
pub const RESERVED_KEYS: [&str; 4] = ["ts", "level", "target", "msg"];

/// Lines dropped because stderr refused them. Global because the logger is: `log` allows one
/// logger per process.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How each line is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `2026-01-02T03:04:05.678Z INFO  [target] message`, for people.
    Text,
    /// `{"ts":…,"level":…,"target":…,"msg":…,<fields>}`, for Loki, ELK and `jq`.
    Json,
}

/// Why `--log-format` was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownFormat;

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected text or json")
    }
}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Format, UnknownFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat),
        }
    }
}

/// The logger installed by [`init`].
#[derive(Debug)]
pub struct Logger {
    level: LevelFilter,
    format: Format,
}

/// Installs the logger for the whole process; a second call changes nothing.
pub fn init(level: LevelFilter, format: Format) {
    if log::set_boxed_logger(Box::new(Logger { level, format })).is_ok() {
        log::set_max_level(level);
    }
}

/// How many log lines were dropped because writing them failed.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::Relaxed)
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(self.format, record, SystemTime::now());
        if write_line(&mut io::stderr().lock(), line.as_bytes()).is_err() {
            WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// One record as a complete line, newline included.
pub fn format_line(format: Format, record: &Record<'_>, at: SystemTime) -> String {
    let mut line = String::with_capacity(128);
    let ts = Timestamp::of(at);
    let target = if record.target().is_empty() {
        record.module_path().unwrap_or_default()
    } else {
        record.target()
    };
    match format {
        Format::Text => {
            let level = record.level().as_str();
            let _ = write!(line, "{ts} {level:<5} [{target}] {}", record.args());
        }
        Format::Json => {
            line.push_str("{\"ts\":");
            json_string(&mut line, &ts.to_string());
            line.push_str(",\"level\":");
            json_string(&mut line, record.level().as_str());
            line.push_str(",\"target\":");
            json_string(&mut line, target);
            line.push_str(",\"msg\":");
            json_string(&mut line, &record.args().to_string());
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            line.push('}');
        }
    }
    line.push('\n');
    line
}

/// Writes `line` with one `write` call when the kernel takes it whole (the rule), finishing a
/// short write with at most [`MAX_WRITES_PER_LINE`] calls in all; any error drops the line.
pub fn write_line(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    let mut rest = line;
    for _ in 0..MAX_WRITES_PER_LINE {
        match out.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) if written >= rest.len() => return Ok(()),
            Ok(written) => rest = &rest[written..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::ErrorKind::WriteZero.into())
}

/// A UTC time as `2026-01-02T03:04:05.678Z`, computed without a calendar crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    unix_millis: u64,
}

impl Timestamp {
    /// The timestamp of `at`; a clock before 1970 prints as the epoch.
    pub fn of(at: SystemTime) -> Timestamp {
        let unix_millis = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp { unix_millis }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix_millis / 1000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            self.unix_millis % 1000
        )
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar, after Howard
/// Hinnant's `civil_from_days` (eras of 400 years, March-based years so leap days come last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `text` as a JSON string literal (quotes and escapes from `serde_json`).
fn json_string(out: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Appends each event field as `,"key":value`.
struct JsonFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let key = key.as_str();
        self.0.push(',');
        if RESERVED_KEYS.contains(&key) {
            json_string(self.0, &format!("field_{key}"));
        } else {
            json_string(self.0, key);
        }
        self.0.push(':');
        value.visit(JsonValue(self.0))
    }
}

/// Writes one field value: numbers, booleans and null as themselves, everything else as a
/// string of its `Display` form.
struct JsonValue<'a>(&'a mut String);

impl<'v> VisitValue<'v> for JsonValue<'_> {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        json_string(self.0, &value.to_string());
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        if value.is_finite() {
            let _ = write!(self.0, "{value}");
        } else {
            json_string(self.0, &value.to_string());
        }
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.0.push_str(if value { "true" } else { "false" });
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        json_string(self.0, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use log::Level;

    fn at(unix_millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(unix_millis)
    }

    /// Formats one record built with `log`'s own builder, fields included.
    fn line(
        format: Format,
        fields: &[(&str, kv::Value<'_>)],
        message: fmt::Arguments<'_>,
    ) -> String {
        let record = Record::builder()
            .level(Level::Info)
            .target("sync_proxy::tracker")
            .key_values(&fields)
            .args(message)
            .build();
        format_line(format, &record, at(1_767_323_045_678))
    }

    /// A writer that fails, or takes at most `chunk` bytes per call.
    struct Sink {
        written: Vec<u8>,
        chunk: usize,
        error: Option<io::ErrorKind>,
        calls: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if let Some(kind) = self.error {
                return Err(kind.into());
            }
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(chunk: usize, error: Option<io::ErrorKind>) -> Sink {
        Sink {
            written: Vec::new(),
            chunk,
            error,
            calls: 0,
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(Timestamp::of(at(0)).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::of(at(1_767_323_045_678)).to_string(),
            "2026-01-02T03:04:05.678Z"
        );
        // Leap day, and the last millisecond of a leap year.
        assert_eq!(
            Timestamp::of(at(951_782_400_000)).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::of(at(1_735_689_599_999)).to_string(),
            "2024-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::of(UNIX_EPOCH - Duration::from_secs(5)).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn text_line_keeps_the_familiar_layout() {
        let text = line(
            Format::Text,
            &[("beacon", kv::Value::from("bn-1"))],
            format_args!("following beacon: bn-1"),
        );
        assert_eq!(
            text,
            "2026-01-02T03:04:05.678Z INFO  [sync_proxy::tracker] following beacon: bn-1\n"
        );
    }

    #[test]
    fn json_line_carries_fields_as_keys() {
        let text = line(
            Format::Json,
            &[
                ("beacon", kv::Value::from("bn-\"1\"")),
                ("slot", kv::Value::from(1002u64)),
                ("live", kv::Value::from(true)),
                ("msg", kv::Value::from("shadow")),
                ("ratio", kv::Value::from(f64::NAN)),
                ("gone", kv::ToValue::to_value(&None::<u64>)),
                ("why", kv::Value::from_display(&"a\nb")),
            ],
            format_args!("following \"{}\"", "bn-1"),
        );
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["ts"], "2026-01-02T03:04:05.678Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "sync_proxy::tracker");
        assert_eq!(value["msg"], "following \"bn-1\"");
        assert_eq!(value["beacon"], "bn-\"1\"");
        assert_eq!(value["slot"], 1002);
        assert_eq!(value["live"], true);
        assert_eq!(value["field_msg"], "shadow");
        assert_eq!(value["ratio"], "NaN");
        assert_eq!(value["gone"], serde_json::Value::Null);
        assert_eq!(value["why"], "a\nb");
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), RESERVED_KEYS.len() + 7);
    }

    #[test]
    fn write_line_takes_one_write_when_the_kernel_takes_the_line() {
        let mut out = sink(usize::MAX, None);
        write_line(&mut out, b"one line\n").unwrap();
        assert_eq!(out.calls, 1);
        assert_eq!(out.written, b"one line\n");
    }

    #[test]
    fn write_line_finishes_a_short_write() {
        let mut out = sink(4, None);
        write_line(&mut out, b"0123456789\n").unwrap();
        assert_eq!(out.written, b"0123456789\n");
        assert_eq!(out.calls, 3);
    }

    #[test]
    fn write_line_gives_up_within_its_budget() {
        let mut out = sink(1, None);
        let line = [b'x'; MAX_WRITES_PER_LINE + 1];
        assert!(write_line(&mut out, &line).is_err());
        assert_eq!(out.calls, MAX_WRITES_PER_LINE);
    }

    #[test]
    fn write_line_reports_a_closed_pipe_without_panicking() {
        let mut out = sink(usize::MAX, Some(io::ErrorKind::BrokenPipe));
        let error = write_line(&mut out, b"lost\n").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(out.calls, 1);
        let mut interrupted = sink(usize::MAX, Some(io::ErrorKind::Interrupted));
        assert!(write_line(&mut interrupted, b"x\n").is_err());
        assert_eq!(interrupted.calls, MAX_WRITES_PER_LINE);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse(), Ok(Format::Json));
        assert_eq!(" Text ".parse(), Ok(Format::Text));
        assert_eq!("logfmt".parse::<Format>(), Err(UnknownFormat));
    }
}
