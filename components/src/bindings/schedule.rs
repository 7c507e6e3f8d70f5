//! Cron schedules as Dapr's cron binding reads them: six fields with
//! seconds (`*/15 * * * * *`), five without (seconds then 0), ranges,
//! steps, lists, month and weekday names, `?` for any, the descriptors
//! `@yearly` … `@hourly`, and `@every <duration>`. Times are UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{civil_from_days, days_from_civil};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Fires at the given fields.
    Cron(Fields),
    /// Fires every interval after the start.
    Every(Duration),
}

/// Allowed values of each field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    sec: u64,
    min: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Both day fields restricted: a day matches if either does (cron's rule).
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(s: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    // Sunday may be written 7.
    let v = if names.len() == 7 && v == 7 { 0 } else { v };
    if v < lo || v > hi {
        return Err(format!("{v} is outside {lo}-{hi}"));
    }
    Ok(v)
}

fn field(spec: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a, lo, hi, names, base)?, value(b, lo, hi, names, base)?),
                // `5/10` means from 5 to the end in steps of 10.
                None if part.contains('/') => (value(r, lo, hi, names, base)?, hi),
                None => {
                    let v = value(r, lo, hi, names, base)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(format!("range {range} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// Parses a schedule.
pub fn parse(text: &str) -> Result<Schedule, String> {
    let t = text.trim();
    let bad = |why: String| format!("schedule {text:?}: {why}");
    if let Some(d) = t.strip_prefix("@every") {
        let d = crate::parse_duration(d.trim())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad("@every needs a positive duration such as 15s or 1h30m".into()))?;
        return Ok(Schedule::Every(d));
    }
    let expanded = match t {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        d if d.starts_with('@') => return Err(bad("unknown descriptor".into())),
        other => other,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let parts: Vec<&str> = match parts.len() {
        6 => parts,
        5 => std::iter::once("0").chain(parts).collect(),
        n => return Err(bad(format!("{n} fields; expected 6 (with seconds) or 5"))),
    };
    let f = |i: usize, lo, hi, names: &[&str], base, what: &str| {
        field(parts[i], lo, hi, names, base).map_err(|e| bad(format!("{what}: {e}")))
    };
    Ok(Schedule::Cron(Fields {
        sec: f(0, 0, 59, &[], 0, "seconds")?,
        min: f(1, 0, 59, &[], 0, "minutes")?,
        hour: f(2, 0, 23, &[], 0, "hours")?,
        dom: f(3, 1, 31, &[], 0, "day of month")?,
        month: f(4, 1, 12, &MONTHS, 1, "month")?,
        dow: f(5, 0, 7, &DAYS, 0, "day of week")?,
        either_day: !matches!(parts[3], "*" | "?") && !matches!(parts[5], "*" | "?"),
    }))
}

impl Fields {
    fn day_ok(&self, days: i64, dom: u32) -> bool {
        let dow = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday.
        let (a, b) = (self.dom & (1 << dom) != 0, self.dow & (1 << dow) != 0);
        if self.either_day { a || b } else { a && b }
    }

    /// The first second after `after` (Unix seconds) the fields allow,
    /// within five years.
    fn next(&self, after: i64) -> Option<i64> {
        let mut t = after + 1;
        let limit = after + 5 * 366 * 86_400;
        while t < limit {
            let days = t.div_euclid(86_400);
            let secs = t.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            if self.month & (1 << m) == 0 {
                // First day of the next month.
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                t = days_from_civil(ny, nm, 1) * 86_400;
                continue;
            }
            if !self.day_ok(days, d) {
                t = (days + 1) * 86_400;
                continue;
            }
            let (h, mi, s) = (
                (secs / 3600) as u32,
                ((secs % 3600) / 60) as u32,
                (secs % 60) as u32,
            );
            if self.hour & (1 << h) == 0 {
                t = days * 86_400 + i64::from(h + 1) * 3600;
                continue;
            }
            if self.min & (1 << mi) == 0 {
                t = days * 86_400 + i64::from(h) * 3600 + i64::from(mi + 1) * 60;
                continue;
            }
            if self.sec & (1 << s) == 0 {
                t += 1;
                continue;
            }
            return Some(t);
        }
        None
    }
}

impl Schedule {
    /// When the schedule next fires after `now` (for `@every`, `start` is
    /// when counting began).
    pub fn next_after(&self, now: SystemTime, start: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(d) => {
                let since = now.duration_since(start).unwrap_or_default();
                let n = since.as_nanos() / d.as_nanos().max(1) + 1;
                let n = u32::try_from(n).ok()?;
                start.checked_add(d.checked_mul(n)?)
            }
            Schedule::Cron(f) => {
                let secs = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
                let next = f.next(secs)?;
                UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(next).ok()?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        let secs = days_from_civil(y, m, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s);
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn next(s: &str, now: SystemTime) -> SystemTime {
        parse(s).expect("valid").next_after(now, now).expect("fires")
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-1000, 0, 59, 60, 11_016, 19_782, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn schedules_fire_when_cron_says() {
        let now = at(2024, 2, 28, 23, 59, 50);
        assert_eq!(next("*/15 * * * * *", now), at(2024, 2, 29, 0, 0, 0));
        assert_eq!(next("0 30 * * * *", now), at(2024, 2, 29, 0, 30, 0));
        assert_eq!(next("@daily", now), at(2024, 2, 29, 0, 0, 0));
        assert_eq!(next("@monthly", now), at(2024, 3, 1, 0, 0, 0));
        assert_eq!(next("@yearly", now), at(2025, 1, 1, 0, 0, 0));
        assert_eq!(next("0 0 9 * * MON-FRI", now), at(2024, 2, 29, 9, 0, 0));
        assert_eq!(
            next("0 0 0 29 FEB ?", at(2024, 3, 1, 0, 0, 0)),
            at(2028, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            next("0 12 * * *", now),
            at(2024, 2, 29, 12, 0, 0),
            "five fields: minute first, then the hour"
        );
        assert_eq!(next("5,35 10-12/2 * * * *", now), at(2024, 2, 29, 0, 10, 5));
        assert_eq!(next("0 0 0 * * 7", now), at(2024, 3, 3, 0, 0, 0), "7 is Sunday");
        let every = parse("@every 15s").expect("every");
        assert_eq!(every.next_after(now, now), Some(now + Duration::from_secs(15)));
        assert_eq!(
            every.next_after(now + Duration::from_secs(16), now),
            Some(now + Duration::from_secs(30))
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        for s in [
            "* * *",
            "61 * * * * *",
            "*/0 * * * * *",
            "@every",
            "@every soon",
            "@sometimes",
            "5-1 * * * * *",
            "* * * * FOO *",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
