//! Time: the wall clock in milliseconds, and the injectable [`Clock`] that
//! windows and outage timers read so tests and benches can move time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch on the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A number above every one this process handed out before, and above
/// those of earlier runs while fewer than 1,000 are taken per millisecond
/// (it follows the wall clock in thousandths of a millisecond): the order
/// in which ordered deliveries were made, across restarts.
pub fn next_sequence() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let floor = now_ms().saturating_mul(1000);
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let next = floor.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that moves only when told to (tests, benchmarks).
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now_ms))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Time as the seed writes it (`2025-12-15T10:30:00Z`).
pub fn rfc3339_seconds(ms: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
}

/// Milliseconds since the Unix epoch (negative before 1970) of any RFC 3339
/// time: `Z` or an offset (`+05:00`), with or without fractions. The text
/// itself is kept as the producer wrote it; this is for ordering only.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_rfc3339_time_is_read_offsets_fractions_and_before_1970() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2025-01-01T00:00:00+05:00"),
            parse_rfc3339_ms("2024-12-31T19:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2025-12-15T10:30:00.25-01:30").unwrap()
                - parse_rfc3339_ms("2025-12-15T12:00:00Z").unwrap(),
            250
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(
            parse_rfc3339_ms(&rfc3339_seconds(1_765_794_600_000)),
            Ok(1_765_794_600_000)
        );
        for bad in [
            "2025-01-01",
            "2025-01-01T00:00:00",
            "2025-13-01T00:00:00Z",
            "yesterday",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad}");
        }
    }
}
