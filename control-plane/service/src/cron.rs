//! Cron expressions in a time zone: when a schedule's next run falls due.
//!
//! POSIX cron (five fields: minute hour day-of-month month day-of-week, Sunday
//! is 0 or 7), with an optional sixth field in front for seconds, and aliases
//! such as `@daily`. Times are evaluated in an IANA time zone, so `0 2 * * *`
//! in `Europe/Berlin` stays at 02:00 local time across daylight-saving changes.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Parses both; the error names what is wrong and what is expected.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, String> {
        let cron = Cron::from_str(expression.trim()).map_err(|e| {
            format!(
                "cron expression '{expression}' is invalid: {e} (five fields: minute hour \
                 day-of-month month day-of-week, or six with seconds first; e.g. '0 2 * * *')"
            )
        })?;
        let zone = Tz::from_str(time_zone.trim()).map_err(|_| {
            format!("unknown time zone '{time_zone}' (an IANA name such as UTC or Europe/Berlin)")
        })?;
        let schedule = Self { cron, zone };
        // A pattern that never matches (30 February) is refused now, not at the
        // first run.
        if schedule.next_after(0).is_none() {
            return Err(format!(
                "cron expression '{expression}' names no time that exists"
            ));
        }
        Ok(schedule)
    }

    /// The first run strictly after `after_ms` (Unix milliseconds); None if the
    /// expression names no later time.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
        let local = after.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The shortest time between two consecutive runs among the next `runs`
    /// after `after_ms` (None if fewer than two runs remain). A minute holds at
    /// most 60 runs, so 200 runs see every gap of a pattern with seconds.
    pub fn shortest_gap(&self, after_ms: i64, runs: usize) -> Option<std::time::Duration> {
        let mut previous = self.next_after(after_ms)?;
        let mut shortest: Option<i64> = None;
        for _ in 1..runs {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            let gap = next - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            previous = next;
        }
        shortest.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64))
    }

    /// In words ("At 02:00 AM"), for listings.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn five_fields_in_a_zone_keep_local_time_across_dst() {
        let nightly = CronSchedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: 02:00 CET is 01:00 UTC.
        assert_eq!(
            nightly.next_after(ms("2026-01-10T12:00:00Z")),
            Some(ms("2026-01-11T01:00:00Z"))
        );
        // Summer: 02:00 CEST is 00:00 UTC.
        assert_eq!(
            nightly.next_after(ms("2026-07-10T12:00:00Z")),
            Some(ms("2026-07-11T00:00:00Z"))
        );
        let utc = CronSchedule::parse("30 6 * * 1-5", "UTC").unwrap();
        // Saturday 2026-11-28 → Monday 2026-11-30 06:30.
        assert_eq!(
            utc.next_after(ms("2026-11-28T00:00:00Z")),
            Some(ms("2026-11-30T06:30:00Z"))
        );
    }

    #[test]
    fn seconds_and_aliases() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        assert_eq!(
            every_second.next_after(2_000),
            Some(3_000),
            "strictly after"
        );
        let daily = CronSchedule::parse("@daily", "UTC").unwrap();
        assert_eq!(
            daily.next_after(ms("2026-11-26T10:00:00Z")),
            Some(ms("2026-11-27T00:00:00Z"))
        );
    }

    #[test]
    fn the_shortest_gap_between_runs_is_found() {
        let gap = |cron: &str| {
            CronSchedule::parse(cron, "UTC")
                .unwrap()
                .shortest_gap(ms("2026-11-28T00:00:00Z"), 200)
        };
        use std::time::Duration;
        assert_eq!(gap("* * * * * *"), Some(Duration::from_secs(1)));
        assert_eq!(gap("*/15 * * * *"), Some(Duration::from_secs(900)));
        // Two seconds of each minute, a second apart.
        assert_eq!(gap("0,1 * * * * *"), Some(Duration::from_secs(1)));
        assert_eq!(gap("* * * * *"), Some(Duration::from_secs(60)));
        assert_eq!(gap("@daily"), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn bad_input_is_named() {
        let e = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("'61 * * * *' is invalid"), "{e}");
        let e = CronSchedule::parse("every night", "UTC").unwrap_err();
        assert!(e.contains("five fields"), "{e}");
        let e = CronSchedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("unknown time zone 'Mars/Olympus'"), "{e}");
        let e = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(e.contains("no time that exists"), "{e}");
    }
}
