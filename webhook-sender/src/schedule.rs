//! When a delivery is attempted again, and when it is given up.
//!
//! The schedule lists the delay before each attempt: the first is made that
//! long after the event (immediately by default), each next one that long
//! after the previous failure; after the last, the delivery is exhausted.
//! An endpoint that answers 429, 502, 503 or 504 with `Retry-After` is
//! waited for as it asks instead (up to [`MAX_RETRY_AFTER`]).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// The longest `Retry-After` honoured: an endpoint cannot park a delivery
/// for longer than the schedule's usual span.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Delays before each attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self(vec![
            Duration::ZERO,
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600),
        ])
    }
}

impl RetrySchedule {
    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// The delay before attempt `attempt` (1-based); `None` past the last.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.0.get(index).copied()
    }
}

impl FromStr for RetrySchedule {
    type Err = ScheduleParseError;

    /// Comma-separated durations: `0s,5s,5m,30m,2h,5h,10h,10h`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .map(|entry| {
                humantime::parse_duration(entry)
                    .map_err(|error| ScheduleParseError(format!("{entry:?}: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err(ScheduleParseError("no attempts".to_owned()));
        }
        Ok(Self(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let delays: Vec<String> = self
            .0
            .iter()
            .map(|delay| humantime::format_duration(*delay).to_string())
            .collect();
        f.write_str(&delays.join(","))
    }
}

/// A schedule that is not a list of durations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected comma-separated durations like 0s,5s,5m: {0}")]
pub struct ScheduleParseError(String);

/// Whether a status lets the endpoint say when to come back.
pub fn honours_retry_after(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A `Retry-After` value: seconds, or an HTTP date, relative to `now`;
/// capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate(value)?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP/1.1
/// requires senders to use.
fn httpdate(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|name| name == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let mut clock = time.split(':').map(|part| part.parse::<u64>().ok());
    let (hours, minutes, seconds) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=31).contains(&day) || year < 1970 || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let since_epoch = days * 86_400 + hours * 3600 + minutes * 60 + seconds;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch))
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let (year, month) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_eight_attempts_over_a_day() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        assert_eq!(schedule.delay_before(1), Some(Duration::ZERO));
        assert_eq!(schedule.delay_before(2), Some(Duration::from_secs(5)));
        assert_eq!(schedule.delay_before(8), Some(Duration::from_secs(36_000)));
        assert_eq!(schedule.delay_before(9), None);
        assert_eq!(schedule.delay_before(0), None);
        assert_eq!(schedule.to_string(), "0s,5s,5m,30m,2h,5h,10h,10h");
        assert_eq!(
            schedule.to_string().parse::<RetrySchedule>().unwrap(),
            schedule
        );
    }

    #[test]
    fn a_compressed_schedule_parses_and_garbage_does_not() {
        let schedule: RetrySchedule = "0s, 200ms, 1s".parse().unwrap();
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.delay_before(2), Some(Duration::from_millis(200)));
        let error = "0s,soon".parse::<RetrySchedule>().unwrap_err().to_string();
        assert!(error.contains("\"soon\""), "{error}");
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        assert_eq!(parse_retry_after("9999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("tomorrow", now), None);
        assert!(honours_retry_after(StatusCode::TOO_MANY_REQUESTS));
        assert!(!honours_retry_after(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
