//! The loop's clock: read once per iteration and passed down, so handlers never read the time
//! themselves and tests can pass any time they like.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic and wall-clock time of one loop iteration.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic time, for deadlines.
    pub now: Instant,
    /// Wall-clock seconds since the Unix epoch, for slots and JWT `iat`.
    pub unix_secs: u64,
}

impl Clock {
    /// Reads both clocks.
    pub fn read() -> Clock {
        Clock {
            now: Instant::now(),
            // A clock before 1970 is a broken host; slot 0 and stale tokens are the safe outcome.
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}
