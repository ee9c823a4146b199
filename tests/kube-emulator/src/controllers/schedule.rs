//! Cron schedules as CronJobs write them: the standard five fields
//! (minute, hour, day of month, month, day of week) with `*`, `?`, lists,
//! ranges, steps and month/day names, and the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and
//! `@hourly`, with the semantics of the robfig/cron parser Kubernetes
//! uses: when both day fields are restricted a day matching either runs.
//!
//! A small parser of our own rather than the `cron`/`croner` crates: those
//! take six or seven fields or differ on the day-field rule, and this
//! one works on the Unix minutes the controller already has.

use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::Timestamp;

/// A parsed schedule, evaluated in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month or day-of-week field was `*` (or `?`): then both
    /// day fields must match, otherwise either may.
    any_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A bound on the search for the next run (a schedule such as
/// `0 0 30 2 *` never runs).
const SEARCH_MINUTES: i64 = 5 * 366 * 24 * 60;

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"))
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {text}",
                fields.len()
            ));
        }
        let (days, day_star) = field(fields[2], 1, 31, &[])?;
        let (weekdays, weekday_star) = field(fields[4], 0, 6, &WEEKDAYS)?;
        Ok(Schedule {
            minutes: field(fields[0], 0, 59, &[])?.0,
            hours: field(fields[1], 0, 23, &[])?.0,
            days,
            months: field(fields[3], 1, 12, &MONTHS)?.0,
            weekdays,
            any_day: day_star || weekday_star,
        })
    }
}

/// The bits a field sets, and whether it was a bare `*`/`?` (or `*/1`).
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("bad step in {part:?}"))?;
                if step == 0 {
                    return Err(format!("step of 0 in {part:?}"));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            star |= step.unwrap_or(1) == 1;
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, names, min)?, value(high, names, min)?)
        } else {
            let single = value(range, names, min)?;
            // `N/step` means N through the maximum.
            (single, if step.is_some() { max } else { single })
        };
        if start < min || end > max || start > end {
            return Err(format!("{part:?} is out of range ({min}-{max})"));
        }
        let step = step.unwrap_or(1);
        let mut at = start;
        while at <= end {
            bits |= 1 << at;
            at += step;
        }
    }
    Ok((bits, star))
}

fn value(text: &str, names: &[&str], first: u32) -> Result<u32, String> {
    if let Some(index) = names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(u32::try_from(index).unwrap_or(0) + first);
    }
    text.parse()
        .map_err(|_| format!("failed to parse {text:?}"))
}

impl Schedule {
    /// Whether the schedule fires at Unix minute `minute`.
    fn fires(&self, minute: i64) -> Fires {
        let Ok(time) = Timestamp::from_second(minute * 60) else {
            return Fires::Never;
        };
        let at = time.to_zoned(TimeZone::UTC);
        let bit = |bits: u64, value: i64| bits & (1 << value) != 0;
        if !bit(self.months, i64::from(at.month())) {
            return Fires::NotThisDay;
        }
        let day = bit(self.days, i64::from(at.day()));
        let weekday = bit(
            self.weekdays,
            i64::from(at.weekday().to_sunday_zero_offset()),
        );
        let day_matches = if self.any_day {
            day && weekday
        } else {
            day || weekday
        };
        if !day_matches {
            return Fires::NotThisDay;
        }
        if !bit(self.hours, i64::from(at.hour())) {
            return Fires::NotThisHour;
        }
        if bit(self.minutes, i64::from(at.minute())) {
            Fires::Yes
        } else {
            Fires::NotThisMinute
        }
    }

    /// The first time the schedule fires after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut minute = after.as_second().div_euclid(60) + 1;
        let limit = minute + SEARCH_MINUTES;
        while minute < limit {
            minute = match self.fires(minute) {
                Fires::Yes => return Timestamp::from_second(minute * 60).ok(),
                Fires::Never => return None,
                Fires::NotThisDay => (minute.div_euclid(1440) + 1) * 1440,
                Fires::NotThisHour => (minute.div_euclid(60) + 1) * 60,
                Fires::NotThisMinute => minute + 1,
            };
        }
        None
    }

    /// The latest time the schedule fired after `after` and at or before
    /// `now`, and how many times it fired in that span (capped).
    pub fn most_recent(&self, after: Timestamp, now: Timestamp) -> (Option<Timestamp>, usize) {
        let mut latest = None;
        let mut missed = 0;
        let mut at = after;
        while let Some(next) = self.next_after(at) {
            if next > now {
                break;
            }
            latest = Some(next);
            missed += 1;
            at = next;
            if missed > 100 {
                // As the real controller: too many missed runs are not
                // searched one by one; the most recent one is found directly.
                let mut minute = now.as_second().div_euclid(60);
                let first = at.as_second().div_euclid(60);
                while minute > first {
                    if self.fires(minute) == Fires::Yes {
                        latest = Timestamp::from_second(minute * 60).ok();
                        break;
                    }
                    minute -= 1;
                }
                break;
            }
        }
        (latest, missed)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Fires {
    Yes,
    Never,
    NotThisDay,
    NotThisHour,
    NotThisMinute,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let schedule: Schedule = schedule.parse().unwrap();
        schedule.next_after(at(after)).unwrap().to_string()
    }

    #[test]
    fn standard_fields() {
        assert_eq!(
            next("*/5 * * * *", "2026-01-01T00:03:10Z"),
            "2026-01-01T00:05:00Z"
        );
        assert_eq!(
            next("*/1 * * * *", "2026-01-01T00:03:00Z"),
            "2026-01-01T00:04:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-01-01T03:00:00Z"),
            "2026-01-02T02:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-03-01T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", "2026-01-03T00:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
        assert_eq!(
            next("15,45 * * * *", "2026-01-01T00:20:00Z"),
            "2026-01-01T00:45:00Z"
        );
    }

    #[test]
    fn descriptors() {
        assert_eq!(
            next("@hourly", "2026-01-01T00:20:00Z"),
            "2026-01-01T01:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-01-01T00:20:00Z"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-01-01T00:20:00Z"),
            "2026-01-04T00:00:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * *", "2026-01-01T00:00:00Z"),
            "2026-01-13T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* * * * 7",
            "*/0 * * * *",
            "@every 5m",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        assert_eq!(
            "0 0 30 2 *"
                .parse::<Schedule>()
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn most_recent_of_missed_runs() {
        let schedule: Schedule = "*/10 * * * *".parse().unwrap();
        let (latest, missed) =
            schedule.most_recent(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:35:00Z"));
        assert_eq!(latest.unwrap().to_string(), "2026-01-01T00:30:00Z");
        assert_eq!(missed, 3);
    }
}
