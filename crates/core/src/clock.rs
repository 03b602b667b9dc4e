//! The clock port: wall time for signatures and the journal, monotonic time for deadlines.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Wall-clock source. The system clock in production; a settable one in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in the station's time zone (SNAP timestamps carry the local offset).
    fn now(&self) -> jiff::Zoned;

    /// Time since an arbitrary fixed point, never going back: what every duration (a stage's
    /// time, a deadline) is measured with, so that a wall-clock step cannot bend it. The
    /// default is the process's monotonic clock.
    fn monotonic(&self) -> std::time::Duration {
        static ANCHOR: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ANCHOR.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// The system clock in a fixed time zone (Indonesia: `Asia/Jakarta`, `Asia/Makassar`,
/// `Asia/Jayapura`).
#[derive(Clone, Debug)]
pub struct SystemClock {
    tz: jiff::tz::TimeZone,
}

impl SystemClock {
    /// A system clock reporting in `tz`.
    pub fn new(tz: jiff::tz::TimeZone) -> Self {
        SystemClock { tz }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> jiff::Zoned {
        jiff::Timestamp::now().to_zoned(self.tz.clone())
    }
}

/// A clock that only moves when told to; for tests of expiry and schedules.
#[derive(Clone, Debug)]
pub struct ManualClock {
    unix_ms: Arc<AtomicI64>,
    tz: jiff::tz::TimeZone,
}

impl ManualClock {
    /// A manual clock starting at `start`.
    pub fn new(start: jiff::Timestamp, tz: jiff::tz::TimeZone) -> Self {
        ManualClock {
            unix_ms: Arc::new(AtomicI64::new(start.as_millisecond())),
            tz,
        }
    }

    /// Move the clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.unix_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    /// Moves with [`ManualClock::advance_ms`] only.
    fn monotonic(&self) -> std::time::Duration {
        let ms = self.unix_ms.load(Ordering::SeqCst);
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    fn now(&self) -> jiff::Zoned {
        let ms = self.unix_ms.load(Ordering::SeqCst);
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
    }
}
