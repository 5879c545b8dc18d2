//! Rate limits for log lines a peer can trigger at will: refused requests, refused connections,
//! disbelieved slot claims. Per topic and peer, the first occurrence is logged; later ones are
//! only counted, and one summary line per interval reports how many there were.
//!
//! A flood without a token once wrote 66,686 WARN lines in 10 s (0.8 MB/s). With this, a flood
//! from one peer costs two lines per interval at most, while the metrics still count every
//! occurrence (the caller counts them; this module only decides what is written). Pure: the
//! caller passes `now`, logs what [`LogLimiter::admit`] and [`LogLimiter::due`] say, and wakes
//! at [`LogLimiter::deadline`].

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a topic and peer stay quiet after a line: one summary per interval at most. Ten
/// seconds keeps an operator's view of an attack current while bounding a flood to a few
/// lines a minute per peer.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Most (topic, peer) pairs followed one by one. A flood from many addresses folds the rest into
/// one entry per topic ("other peers"), so the table stays bounded; 256 is far more distinct
/// peers than a deployment of a few beacon nodes and proxies has.
pub const MAX_LOG_KEYS: usize = 256;

/// Decides which occurrences of peer-triggered events are logged.
#[derive(Debug, Default)]
pub struct LogLimiter {
    entries: Vec<Entry>,
}

/// One summary line due: `count` occurrences of `topic` from `peer` were not logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// What happened (a metrics label, e.g. `unauthorized`).
    pub topic: &'static str,
    /// From whom; `None` for the peers beyond [`MAX_LOG_KEYS`].
    pub peer: Option<IpAddr>,
    /// How many occurrences were counted and not logged.
    pub count: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} more from ", self.topic, self.count)?;
        match self.peer {
            Some(peer) => write!(f, "{peer}")?,
            None => f.write_str("other peers")?,
        }
        write!(
            f,
            " in the last {} s, not logged one by one (metrics count every one)",
            LOG_INTERVAL.as_secs()
        )
    }
}

#[derive(Debug)]
struct Entry {
    topic: &'static str,
    peer: Option<IpAddr>,
    /// End of the current interval.
    until: Instant,
    /// Occurrences in this interval that were not logged.
    suppressed: u64,
}

impl LogLimiter {
    /// An empty limiter.
    pub fn new() -> LogLimiter {
        LogLimiter::default()
    }

    /// An occurrence of `topic` from `peer` at `now`: true when it is to be logged, false when
    /// it is only counted for the next summary.
    pub fn admit(&mut self, topic: &'static str, peer: IpAddr, now: Instant) -> bool {
        let known = |e: &&mut Entry| e.topic == topic && e.peer == Some(peer);
        if let Some(entry) = self.entries.iter_mut().find(known) {
            entry.suppressed += 1;
            return false;
        }
        let peer = if self.entries.len() < MAX_LOG_KEYS {
            Some(peer)
        } else {
            // The table is full of other peers: this one shares the topic's overflow entry.
            let overflow = |e: &&mut Entry| e.topic == topic && e.peer.is_none();
            if let Some(entry) = self.entries.iter_mut().find(overflow) {
                entry.suppressed += 1;
                return false;
            }
            None
        };
        self.entries.push(Entry {
            topic,
            peer,
            until: now + LOG_INTERVAL,
            suppressed: 0,
        });
        true
    }

    /// The summaries whose interval ended by `now`. A pair that was quiet for a whole interval
    /// is forgotten, so its next occurrence is logged again; one still busy starts a new
    /// interval.
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.entries.retain_mut(|entry| {
            if entry.until > now {
                return true;
            }
            if entry.suppressed == 0 {
                return false;
            }
            summaries.push(Summary {
                topic: entry.topic,
                peer: entry.peer,
                count: entry.suppressed,
            });
            entry.suppressed = 0;
            entry.until = now + LOG_INTERVAL;
            true
        });
        summaries
    }

    /// When [`LogLimiter::due`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn first_occurrence_is_logged_then_counted() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new();
        assert!(limiter.admit("unauthorized", ip(1), t0));
        for _ in 0..1000 {
            assert!(!limiter.admit("unauthorized", ip(1), t0));
        }
        assert!(limiter.admit("unauthorized", ip(2), t0), "another peer");
        assert!(limiter.admit("forwarding_loop", ip(1), t0), "another topic");
        assert_eq!(limiter.deadline(), Some(t0 + LOG_INTERVAL));
    }

    #[test]
    fn interval_end_summarises_the_count_once() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new();
        limiter.admit("unauthorized", ip(1), t0);
        limiter.admit("unauthorized", ip(2), t0);
        for _ in 0..41 {
            limiter.admit("unauthorized", ip(1), t0 + Duration::from_secs(1));
        }
        assert!(
            limiter
                .due(t0 + LOG_INTERVAL - Duration::from_millis(1))
                .is_empty()
        );
        let summaries = limiter.due(t0 + LOG_INTERVAL);
        assert_eq!(
            summaries,
            [Summary {
                topic: "unauthorized",
                peer: Some(ip(1)),
                count: 41
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "unauthorized: 41 more from 10.0.0.1 in the last 10 s, not logged one by one (metrics count every one)"
        );
        // ip(2) was quiet: forgotten, so its next occurrence is logged again.
        assert!(limiter.admit("unauthorized", ip(2), t0 + LOG_INTERVAL));
        // ip(1) is still followed: the flood goes on quietly until the next summary.
        assert!(!limiter.admit("unauthorized", ip(1), t0 + LOG_INTERVAL));
        assert_eq!(
            limiter.due(t0 + 2 * LOG_INTERVAL),
            [Summary {
                topic: "unauthorized",
                peer: Some(ip(1)),
                count: 1
            }]
        );
        assert!(limiter.due(t0 + 3 * LOG_INTERVAL).is_empty());
        assert!(limiter.admit("unauthorized", ip(1), t0 + 3 * LOG_INTERVAL));
    }

    #[test]
    fn many_peers_fold_into_one_entry_per_topic() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new();
        let peers = (0..=u16::MAX).map(|n| IpAddr::from([10, 1, (n >> 8) as u8, n as u8]));
        let logged = peers
            .filter(|p| limiter.admit("unauthorized", *p, t0))
            .count();
        assert_eq!(
            logged,
            MAX_LOG_KEYS + 1,
            "one line per followed peer, one for the rest"
        );
        assert_eq!(limiter.entries.len(), MAX_LOG_KEYS + 1);
        let summaries = limiter.due(t0 + LOG_INTERVAL);
        assert_eq!(
            summaries,
            [Summary {
                topic: "unauthorized",
                peer: None,
                count: 65536 - MAX_LOG_KEYS as u64 - 1
            }]
        );
        assert!(summaries[0].to_string().contains("from other peers"));
    }
}
