//! Time as protocol cores see it.
//!
//! Cores never read a clock. Their caller passes `now` as an [`Instant`]: nanoseconds since an
//! origin the caller chose (process start in a node, zero in a simulation). Wall-clock times
//! that travel between peers (envelope timestamps, ttl expiry, block times) are
//! [`Timestamp`]s: milliseconds since the Unix epoch.
//!
//! Arithmetic saturates rather than wraps or panics: a peer's absurd timestamp must not crash
//! the receiver.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on a monotonic clock, in nanoseconds since an origin chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(0);
    /// The largest representable instant (about 584 years after the origin).
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Self)
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    /// Saturates at [`Instant::MAX`].
    fn add(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(Self::MAX)
    }
}

impl Sub<Duration> for Instant {
    type Output = Self;
    /// Saturates at [`Instant::ZERO`].
    fn sub(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_sub(nanos))
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({:?})", Duration::from_nanos(self.0))
    }
}

/// Wall-clock time: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Self = Self(0);

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Converts a [`std::time::SystemTime`] the caller read (times before the epoch become
    /// the epoch).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let millis = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(millis)
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whether something created at `self` with time-to-live `ttl` has expired at `now`.
    /// It expires at exactly `self + ttl`.
    pub fn is_expired(self, ttl: Duration, now: Self) -> bool {
        now >= self.saturating_add(ttl)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!((t + Duration::from_millis(3)).as_nanos(), 8_000_000);
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::MAX + Duration::from_nanos(1), Instant::MAX);
        assert_eq!(t + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(t.saturating_since(Instant::ZERO), Duration::from_millis(5));
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
    }

    #[test]
    fn ttl_expiry_is_inclusive_at_the_boundary() {
        let created = Timestamp(1_000);
        let ttl = Duration::from_millis(500);
        assert!(!created.is_expired(ttl, Timestamp(1_499)));
        assert!(created.is_expired(ttl, Timestamp(1_500)));
        assert!(!Timestamp(u64::MAX - 1).is_expired(Duration::MAX, Timestamp(u64::MAX - 1)));
        assert_eq!(Timestamp(1_234).to_string(), "1.234s");
    }

    #[test]
    fn system_time_before_epoch_is_epoch() {
        let before = std::time::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(Timestamp::from_system_time(before), Timestamp::UNIX_EPOCH);
        let after = std::time::UNIX_EPOCH + Duration::from_millis(42);
        assert_eq!(Timestamp::from_system_time(after), Timestamp(42));
    }
}
