//! Cron schedules as Dapr's cron binding reads them: six fields with
//! seconds (`*/15 * * * * *`), five without (seconds then 0), ranges,
//! steps, lists, month and weekday names, `?` for any, the descriptors
//! `@yearly` … `@hourly`, and `@every <duration>`. Times are UTC unless
//! the schedule starts with `CRON_TZ=<zone>` (or `TZ=<zone>`), an IANA zone
//! read from the system's tz database: then the fields are wall-clock time
//! there. A wall-clock time that a change to summer time skips does not
//! fire; one that the change back repeats fires at both instants.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{civil_from_days, days_from_civil};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Fires at the given fields, read in the zone.
    Cron(Fields, Zone),
    /// Fires every interval after the start; a zone given with it only
    /// names the events' time zone.
    Every(Duration, Zone),
}

/// The time zone a schedule's fields are read in.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    /// `None` for UTC.
    rules: Option<Arc<tz::TimeZone>>,
}

impl Zone {
    fn utc() -> Self {
        Self {
            name: "UTC".into(),
            rules: None,
        }
    }

    /// The zone's IANA name (`UTC` by default).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Loads an IANA zone (`Europe/Paris`) from the tz database:
    /// `$ZONEINFO` first, then the system's directories.
    fn load(name: &str) -> Result<Self, String> {
        if name == "UTC" || name == "Etc/UTC" {
            return Ok(Self::utc());
        }
        let valid = !name.is_empty()
            && !name.starts_with('/')
            && name.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
        if !valid {
            return Err(format!(
                "{name:?} is not a time zone name such as America/New_York"
            ));
        }
        let zoneinfo = std::env::var("ZONEINFO").ok();
        let mut dirs: Vec<&str> = zoneinfo.iter().map(String::as_str).collect();
        dirs.extend(tz::TimeZoneSettings::DEFAULT_DIRECTORIES);
        let rules = dirs
            .iter()
            .find_map(|dir| std::fs::read(format!("{dir}/{name}")).ok())
            .ok_or_else(|| {
                format!(
                    "time zone {name:?} is not in the tz database ({}); install tzdata or set ZONEINFO",
                    dirs.join(", ")
                )
            })
            .and_then(|bytes| {
                tz::TimeZone::from_tz_data(&bytes).map_err(|e| format!("time zone {name:?}: {e}"))
            })?;
        Ok(Self {
            name: name.to_string(),
            rules: Some(Arc::new(rules)),
        })
    }

    /// Seconds east of UTC at Unix time `t`.
    fn offset(&self, t: i64) -> i64 {
        self.rules.as_ref().map_or(0, |r| {
            r.find_local_time_type(t).map_or(0, |l| i64::from(l.ut_offset()))
        })
    }
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
    let bad = |why: String| format!("schedule {text:?}: {why}");
    let mut t = text.trim();
    let mut zone = Zone::utc();
    if let Some(rest) = t.strip_prefix("CRON_TZ=").or_else(|| t.strip_prefix("TZ=")) {
        let (name, spec) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("nothing follows the time zone".into()))?;
        zone = Zone::load(name).map_err(bad)?;
        t = spec.trim();
    }
    if let Some(d) = t.strip_prefix("@every") {
        let d = crate::parse_duration(d.trim())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad("@every needs a positive duration such as 15s or 1h30m".into()))?;
        return Ok(Schedule::Every(d, zone));
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
    let fields = Fields {
        sec: f(0, 0, 59, &[], 0, "seconds")?,
        min: f(1, 0, 59, &[], 0, "minutes")?,
        hour: f(2, 0, 23, &[], 0, "hours")?,
        dom: f(3, 1, 31, &[], 0, "day of month")?,
        month: f(4, 1, 12, &MONTHS, 1, "month")?,
        dow: f(5, 0, 7, &DAYS, 0, "day of week")?,
        either_day: !matches!(parts[3], "*" | "?") && !matches!(parts[5], "*" | "?"),
    };
    Ok(Schedule::Cron(fields, zone))
}

impl Fields {
    fn day_ok(&self, days: i64, dom: u32) -> bool {
        let dow = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday.
        let (a, b) = (self.dom & (1 << dom) != 0, self.dow & (1 << dow) != 0);
        if self.either_day { a || b } else { a && b }
    }

    /// `None` if the wall-clock second `local` (seconds since the epoch
    /// on the wall clock) matches; otherwise the next wall-clock time that
    /// could, skipping whole months, days, hours and minutes that cannot.
    fn skip(&self, local: i64) -> Option<i64> {
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        if self.month & (1 << m) == 0 {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            return Some(days_from_civil(ny, nm, 1) * 86_400);
        }
        if !self.day_ok(days, d) {
            return Some((days + 1) * 86_400);
        }
        let (h, mi, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if self.hour & (1 << h) == 0 {
            return Some(days * 86_400 + (h + 1) * 3600);
        }
        if self.min & (1 << mi) == 0 {
            return Some(days * 86_400 + h * 3600 + (mi + 1) * 60);
        }
        (self.sec & (1 << s) == 0).then_some(local + 1)
    }

    /// The first second after `after` (Unix seconds) whose wall-clock time
    /// in `zone` the fields allow, within five years.
    fn next(&self, after: i64, zone: &Zone) -> Option<i64> {
        let mut t = after + 1;
        let limit = after + 5 * 366 * 86_400;
        while t < limit {
            let offset = zone.offset(t);
            let Some(wall) = self.skip(t + offset) else {
                return Some(t);
            };
            let guess = wall - offset;
            // Summer time began on the way: the wall clock at `guess` is
            // past `wall`, so land on `wall` by the new offset if it exists.
            let later = zone.offset(guess);
            let exact = wall - later;
            t = if later > offset && exact > t && zone.offset(exact) == later {
                exact
            } else {
                guess
            };
        }
        None
    }
}

impl Schedule {
    /// The zone the schedule is read in.
    pub fn zone_name(&self) -> &str {
        match self {
            Schedule::Cron(_, zone) | Schedule::Every(_, zone) => zone.name(),
        }
    }

    /// When the schedule next fires after `now` (for `@every`, `start` is
    /// when counting began).
    pub fn next_after(&self, now: SystemTime, start: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(d, _) => {
                let since = now.duration_since(start).unwrap_or_default();
                let n = since.as_nanos() / d.as_nanos().max(1) + 1;
                let n = u32::try_from(n).ok()?;
                start.checked_add(d.checked_mul(n)?)
            }
            Schedule::Cron(f, zone) => {
                let secs = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
                let next = f.next(secs, zone)?;
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
    fn zoned_schedules_follow_the_wall_clock() {
        // New York: summer time starts 2024-03-10 02:00 EST (07:00 UTC)
        // and ends 2024-11-03 02:00 EDT (06:00 UTC).
        let ny = |s: &str| format!("CRON_TZ=America/New_York {s}");
        let noon = at(2024, 3, 9, 12, 0, 0);
        assert_eq!(next(&ny("0 30 4 * * *"), noon), at(2024, 3, 10, 8, 30, 0));
        assert_eq!(
            next(&ny("0 30 2 * * *"), noon),
            at(2024, 3, 11, 6, 30, 0),
            "02:30 does not exist on 10 March"
        );
        assert_eq!(
            next(&ny("0 30 0 * * MON"), at(2024, 3, 10, 6, 0, 0)),
            at(2024, 3, 11, 4, 30, 0),
            "skipping a day across the change lands on midnight by the new offset"
        );
        let first = next(&ny("0 30 1 * * *"), at(2024, 11, 3, 4, 0, 0));
        assert_eq!(first, at(2024, 11, 3, 5, 30, 0));
        assert_eq!(
            next(&ny("0 30 1 * * *"), first),
            at(2024, 11, 3, 6, 30, 0),
            "01:30 happens twice on 3 November"
        );
        let every_hour = next(&ny("0 0 * * * *"), at(2024, 11, 3, 5, 30, 0));
        assert_eq!(every_hour, at(2024, 11, 3, 6, 0, 0), "the repeated hour starts");
        assert_eq!(next("TZ=Asia/Tokyo 0 0 9 * * *", noon), at(2024, 3, 10, 0, 0, 0));
        assert_eq!(next("CRON_TZ=UTC @daily", noon), at(2024, 3, 10, 0, 0, 0));
        assert_eq!(
            parse(&ny("@daily")).expect("valid").zone_name(),
            "America/New_York"
        );
        assert_eq!(
            parse(&ny("@every 1m")).expect("valid").zone_name(),
            "America/New_York"
        );
        assert_eq!(parse("@every 1m").expect("valid").zone_name(), "UTC");
        for bad in [
            "CRON_TZ=Mars/Olympus_Mons * * * * *",
            "CRON_TZ=../../etc/passwd * * * * *",
            "CRON_TZ=/etc/localtime * * * * *",
            "CRON_TZ=Europe/Paris",
        ] {
            let e = parse(bad).err().unwrap_or_default();
            assert!(e.contains("schedule"), "{bad}: {e}");
        }
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
