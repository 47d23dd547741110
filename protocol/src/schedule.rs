//! Weekly schedules: when in the week a user may pass, in the door's local time.
//!
//! On the wire a user's `schedule` is a list of ranges,
//! `{"days": ["mon", "tue"], "from": "07:00", "until": "19:00"}`. A range whose `until` is not
//! after its `from` crosses midnight: `{"days": ["fri"], "from": "22:00", "until": "06:00"}` is
//! Friday 22:00 to Saturday 06:00, and belongs to the day it starts on. `until` may be
//! `"24:00"`, the end of the day. An empty schedule means any time.
//!
//! Times are the door's wall-clock time in its time zone, so a range keeps meaning "07:00 to
//! 19:00" across daylight saving changes: on the day the clocks go forward the hour that does
//! not exist is simply never seen, and on the day they go back the repeated hour is inside or
//! outside the range both times.

use std::fmt;

use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time of day to the minute, 00:00 to 24:00 (24:00 only as an end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DayTime(u16);

impl DayTime {
    pub const MIDNIGHT: DayTime = DayTime(0);
    pub const END_OF_DAY: DayTime = DayTime(24 * 60);

    pub fn minutes(self) -> u16 {
        self.0
    }

    /// The minute of the day `t` falls in (seconds count: 06:59:59 is before 07:00).
    pub fn of(t: Time) -> DayTime {
        DayTime(t.hour() as u16 * 60 + t.minute() as u16)
    }
}

impl std::str::FromStr for DayTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a time of day HH:MM from 00:00 to 24:00");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        // Two ASCII digits each: `u16::parse` alone would take "+8" or "+5".
        let digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(m) {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m >= 60 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(DayTime(h * 60 + m))
    }
}

impl fmt::Display for DayTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for DayTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DayTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A day of the week as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub fn of(w: Weekday) -> Day {
        match w {
            Weekday::Monday => Day::Mon,
            Weekday::Tuesday => Day::Tue,
            Weekday::Wednesday => Day::Wed,
            Weekday::Thursday => Day::Thu,
            Weekday::Friday => Day::Fri,
            Weekday::Saturday => Day::Sat,
            Weekday::Sunday => Day::Sun,
        }
    }
}

/// One weekly range: on each of `days`, from `from` (inclusive) to `until` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub days: Vec<Day>,
    pub from: DayTime,
    pub until: DayTime,
}

impl TimeRange {
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.days.is_empty() {
            return Err(format!("{field}.days is empty"));
        }
        if self.from == DayTime::END_OF_DAY {
            return Err(format!(
                "{field}.from is 24:00; a range starts before the end of the day"
            ));
        }
        if self.from == self.until {
            return Err(format!(
                "{field} starts and ends at {}: an empty range (use 00:00 to 24:00 for the whole day)",
                self.from
            ));
        }
        Ok(())
    }

    /// Whether local time `t` on weekday `day` is inside this range.
    pub fn contains(&self, day: Weekday, t: Time) -> bool {
        let now = DayTime::of(t);
        let on = |w: Weekday| self.days.contains(&Day::of(w));
        if self.from < self.until {
            on(day) && self.from <= now && now < self.until
        } else {
            // Crosses midnight: the evening part on a listed day, or the morning part on the
            // day after one.
            (on(day) && now >= self.from) || (on(day.previous()) && now < self.until)
        }
    }
}

/// Whether local time `t` on weekday `day` falls in any range; an empty schedule is any time.
pub fn in_schedule(schedule: &[TimeRange], day: Weekday, t: Time) -> bool {
    schedule.is_empty() || schedule.iter().any(|r| r.contains(day, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::time;

    fn range(json: &str) -> TimeRange {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn times_parse_to_the_minute_and_24_00_only_ends() {
        assert_eq!("07:30".parse::<DayTime>().unwrap().minutes(), 450);
        assert_eq!("24:00".parse::<DayTime>().unwrap(), DayTime::END_OF_DAY);
        for bad in [
            "7:30", "24:01", "12:60", "ab:cd", "1230", "-1:00", "25:00", "+8:00", "09:+5", " 8:00",
        ] {
            assert!(bad.parse::<DayTime>().is_err(), "{bad}");
        }
        let r = range(r#"{"days":["mon"],"from":"24:00","until":"06:00"}"#);
        assert!(r.validate("s[0]").unwrap_err().contains("24:00"));
        let r = range(r#"{"days":["mon"],"from":"08:00","until":"08:00"}"#);
        assert!(r.validate("s[0]").unwrap_err().contains("empty range"));
        let r = range(r#"{"days":[],"from":"08:00","until":"09:00"}"#);
        assert!(r.validate("s[0]").unwrap_err().contains("days is empty"));
        assert!(serde_json::from_str::<TimeRange>(
            r#"{"days":["someday"],"from":"08:00","until":"09:00"}"#
        )
        .is_err());
    }

    #[test]
    fn a_day_range_includes_its_start_and_excludes_its_end() {
        let r = range(r#"{"days":["mon","tue","wed","thu","fri"],"from":"07:00","until":"19:00"}"#);
        let mon = Weekday::Monday;
        let cases = [
            (mon, time(6, 59, 59, 0), false),
            (mon, time(7, 0, 0, 0), true),
            (mon, time(18, 59, 59, 999_999_999), true),
            (mon, time(19, 0, 0, 0), false),
            (Weekday::Saturday, time(12, 0, 0, 0), false),
            (Weekday::Friday, time(12, 0, 0, 0), true),
        ];
        for (day, t, inside) in cases {
            assert_eq!(r.contains(day, t), inside, "{day:?} {t}");
        }
    }

    #[test]
    fn a_night_range_crosses_midnight_into_the_next_day_only() {
        let r = range(r#"{"days":["fri"],"from":"22:00","until":"06:00"}"#);
        let cases = [
            (Weekday::Friday, time(21, 59, 0, 0), false),
            (Weekday::Friday, time(22, 0, 0, 0), true),
            (Weekday::Friday, time(23, 59, 59, 0), true),
            (Weekday::Saturday, time(0, 0, 0, 0), true),
            (Weekday::Saturday, time(5, 59, 0, 0), true),
            (Weekday::Saturday, time(6, 0, 0, 0), false),
            (Weekday::Saturday, time(23, 0, 0, 0), false),
            // Friday's early morning belongs to Thursday's night, which is not listed.
            (Weekday::Friday, time(3, 0, 0, 0), false),
        ];
        for (day, t, inside) in cases {
            assert_eq!(r.contains(day, t), inside, "{day:?} {t}");
        }
        // Sunday night into Monday morning: the week wraps.
        let r = range(r#"{"days":["sun"],"from":"20:00","until":"02:00"}"#);
        assert!(r.contains(Weekday::Monday, time(1, 0, 0, 0)));
        assert!(!r.contains(Weekday::Monday, time(2, 0, 0, 0)));
    }

    #[test]
    fn the_whole_day_and_an_empty_schedule() {
        let r = range(r#"{"days":["sat"],"from":"00:00","until":"24:00"}"#);
        assert!(r.contains(Weekday::Saturday, time(0, 0, 0, 0)));
        assert!(r.contains(Weekday::Saturday, time(23, 59, 59, 0)));
        assert!(!r.contains(Weekday::Sunday, time(0, 0, 0, 0)));
        assert!(in_schedule(&[], Weekday::Sunday, time(3, 0, 0, 0)));
        assert!(!in_schedule(&[r], Weekday::Sunday, time(3, 0, 0, 0)));
    }

    #[test]
    fn ranges_round_trip_on_the_wire() {
        let text = r#"{"days":["mon","sun"],"from":"07:05","until":"24:00"}"#;
        assert_eq!(serde_json::to_string(&range(text)).unwrap(), text);
    }
}
