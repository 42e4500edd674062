//! Local time-of-day windows and their occurrences in a site's IANA time zone.
//!
//! Phones compare their own wall clock with the window, so windows are defined in local time
//! and turned into UTC instants per local date, DST included.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Days, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// Minutes in a (nominal, wall-clock) day.
pub const DAY_MINUTES: u32 = 24 * 60;

/// A wall-clock time of day with minute precision, as the phone's hour and minute fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(u16);

/// Why a string is not an `HH:MM` time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalTimeError {
    #[error("expected HH:MM with two digits each, 00:00 to 23:59")]
    Shape,
    #[error("hour must be 00 to 23")]
    Hour,
    #[error("minute must be 00 to 59")]
    Minute,
}

impl LocalTime {
    /// The time `minutes` after midnight; `None` from 24:00 on.
    pub fn from_minutes(minutes: u32) -> Option<Self> {
        (minutes < DAY_MINUTES).then_some(Self(minutes as u16))
    }

    /// Minutes after midnight.
    pub fn minutes(self) -> u32 {
        u32::from(self.0)
    }

    pub fn hour(self) -> u32 {
        self.minutes() / 60
    }

    pub fn minute(self) -> u32 {
        self.minutes() % 60
    }

    /// This time plus `minutes`, wrapping past midnight (the way a phone's window end does).
    pub fn wrapping_add(self, minutes: u32) -> Self {
        Self(((self.minutes() + minutes % DAY_MINUTES) % DAY_MINUTES) as u16)
    }

    /// The time of a wall-clock instant, seconds dropped.
    pub fn of(time: NaiveTime) -> Self {
        use chrono::Timelike;
        Self((time.hour() * 60 + time.minute()) as u16)
    }

    fn naive(self) -> NaiveTime {
        NaiveTime::MIN + Duration::minutes(i64::from(self.0))
    }
}

impl FromStr for LocalTime {
    type Err = LocalTimeError;

    fn from_str(s: &str) -> Result<Self, LocalTimeError> {
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
            return Err(LocalTimeError::Shape);
        }
        let num = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
        let (h, m) = (num(0), num(3));
        if h > 23 {
            return Err(LocalTimeError::Hour);
        }
        if m > 59 {
            return Err(LocalTimeError::Minute);
        }
        Ok(Self((h * 60 + m) as u16))
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

/// A daily window `[start, end)` in wall-clock time. An end earlier than the start crosses
/// midnight; an end equal to the start is the whole day (the phone's own reading of 00:00–00:00).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalWindow {
    pub start: LocalTime,
    pub end: LocalTime,
}

impl LocalWindow {
    /// Nominal length in wall-clock minutes (1..=1440), ignoring DST on a given date.
    pub fn minutes(self) -> u32 {
        let (s, e) = (self.start.minutes(), self.end.minutes());
        if e > s { e - s } else { DAY_MINUTES - s + e }
    }

    /// Whether the window closes on the local date after the one it opens on.
    pub fn crosses_midnight(self) -> bool {
        self.end <= self.start
    }

    /// The window opening on local date `date`, as UTC instants.
    ///
    /// A start or end inside a DST gap moves to the first instant after the gap. A start in a
    /// repeated (folded) hour takes the earlier instant and an end the later one, so the window
    /// is never shortened by the fold.
    pub fn occurrence(self, date: NaiveDate, tz: Tz) -> Occurrence {
        let end_date = if self.crosses_midnight() {
            date.succ_opt().unwrap_or(date)
        } else {
            date
        };
        Occurrence {
            date,
            start: resolve(tz, date.and_time(self.start.naive()), Fold::Earliest),
            end: resolve(tz, end_date.and_time(self.end.naive()), Fold::Latest),
        }
    }
}

impl fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.start, self.end)
    }
}

/// One opening of a window: the local date it opens on and its UTC bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub date: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Which instant a repeated local time stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    Earliest,
    Latest,
}

/// The UTC instant of a wall-clock time in `tz`: DST gaps resolve to the first instant after
/// the gap, repeated times to the earliest or latest instant as asked.
pub fn resolve(tz: Tz, local: NaiveDateTime, fold: Fold) -> DateTime<Utc> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            match fold {
                Fold::Earliest => a.min(b),
                Fold::Latest => a.max(b),
            }
        }
        LocalResult::None => first_instant_at_or_after(tz, local),
    }
}

/// The first UTC instant whose wall-clock time in `tz` is at or after `local`. UTC offsets
/// lie within ±15 h, so the instant is within `local` −15 h … +15 h read as UTC; wall time
/// only moves backwards at a fold, and a gap is never within hours of a fold, so a bisection
/// over that span finds the end of the gap.
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let wall = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .map(|u| u.with_timezone(&tz).naive_local())
            .unwrap_or(local)
    };
    let base = local.and_utc().timestamp();
    let (mut lo, mut hi) = (base - 15 * 3600, base + 15 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid) >= local {
            hi = mid
        } else {
            lo = mid
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or_else(|| local.and_utc())
}

/// A set of weekdays, as the phone's seven "Day of Week" check boxes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

impl DaySet {
    /// Every day of the week.
    pub const ALL: DaySet = DaySet(0x7f);

    pub fn insert(&mut self, day: Weekday) {
        self.0 |= 1 << day.num_days_from_monday();
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The days in the set, Sunday first as on the phone's page.
    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        [
            Weekday::Sun,
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
        ]
        .into_iter()
        .filter(move |&d| self.contains(d))
    }
}

impl FromIterator<Weekday> for DaySet {
    fn from_iter<I: IntoIterator<Item = Weekday>>(iter: I) -> Self {
        let mut set = DaySet::default();
        for d in iter {
            set.insert(d);
        }
        set
    }
}

/// `date` plus `days`, saturating at chrono's last date.
pub fn add_days(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_add_days(Days::new(days))
        .unwrap_or(NaiveDate::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> LocalTime {
        s.parse().unwrap()
    }

    fn w(start: &str, end: &str) -> LocalWindow {
        LocalWindow {
            start: t(start),
            end: t(end),
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn local_time_parses_strict_hh_mm() {
        assert_eq!(t("00:00").minutes(), 0);
        assert_eq!(t("23:59").minutes(), 1439);
        assert_eq!("24:00".parse::<LocalTime>(), Err(LocalTimeError::Hour));
        assert_eq!("12:60".parse::<LocalTime>(), Err(LocalTimeError::Minute));
        for bad in [
            "7:5", "07:5", "7:05", "0700", "07:05 ", "ab:cd", "", "-1:00",
        ] {
            assert_eq!(
                bad.parse::<LocalTime>(),
                Err(LocalTimeError::Shape),
                "{bad}"
            );
        }
        assert_eq!(t("07:05").to_string(), "07:05");
    }

    #[test]
    fn window_length_covers_midnight_and_whole_day() {
        assert_eq!(w("00:00", "05:00").minutes(), 300);
        assert_eq!(w("22:00", "02:00").minutes(), 240);
        assert_eq!(w("03:00", "03:00").minutes(), 1440);
        assert!(w("22:00", "02:00").crosses_midnight());
        assert!(w("03:00", "03:00").crosses_midnight());
        assert!(!w("00:00", "05:00").crosses_midnight());
    }

    #[test]
    fn midnight_crossing_window_belongs_to_the_opening_date() {
        let o = w("22:00", "02:00").occurrence(d("2026-01-14"), chrono_tz::Europe::Berlin);
        assert_eq!(o.date, d("2026-01-14"));
        assert_eq!(o.start, utc("2026-01-14T21:00:00Z"));
        assert_eq!(o.end, utc("2026-01-15T01:00:00Z"));
    }

    #[test]
    fn start_equal_to_end_is_the_whole_day() {
        let o = w("00:00", "00:00").occurrence(d("2026-06-01"), chrono_tz::America::New_York);
        assert_eq!(o.start, utc("2026-06-01T04:00:00Z"));
        assert_eq!(o.end, utc("2026-06-02T04:00:00Z"));
    }

    #[test]
    fn berlin_spring_gap_moves_start_to_end_of_gap() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00Z).
        let o = w("02:30", "04:00").occurrence(d("2026-03-29"), chrono_tz::Europe::Berlin);
        assert_eq!(o.start, utc("2026-03-29T01:00:00Z"));
        assert_eq!(o.end, utc("2026-03-29T02:00:00Z"));
    }

    #[test]
    fn berlin_spring_window_spanning_the_gap_is_an_hour_shorter() {
        let o = w("01:00", "05:00").occurrence(d("2026-03-29"), chrono_tz::Europe::Berlin);
        assert_eq!(o.end - o.start, Duration::hours(3));
    }

    #[test]
    fn berlin_autumn_fold_start_earliest_end_latest() {
        // 2026-10-25 03:00 CEST falls back to 02:00 CET (01:00Z); 02:30 happens twice.
        let o = w("02:30", "02:45").occurrence(d("2026-10-25"), chrono_tz::Europe::Berlin);
        assert_eq!(o.start, utc("2026-10-25T00:30:00Z"));
        assert_eq!(o.end, utc("2026-10-25T01:45:00Z"));
        let o = w("00:00", "05:00").occurrence(d("2026-10-25"), chrono_tz::Europe::Berlin);
        assert_eq!(o.end - o.start, Duration::hours(6));
    }

    #[test]
    fn new_york_gap_and_fold() {
        // 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
        let ny = chrono_tz::America::New_York;
        let gap = w("02:15", "02:45").occurrence(d("2026-03-08"), ny);
        assert_eq!(
            (gap.start, gap.end),
            (utc("2026-03-08T07:00:00Z"), utc("2026-03-08T07:00:00Z"))
        );
        let fold = w("01:30", "01:30").occurrence(d("2026-10-31"), ny);
        assert_eq!(fold.start, utc("2026-10-31T05:30:00Z"));
        assert_eq!(
            fold.end,
            utc("2026-11-01T06:30:00Z"),
            "end takes the later 01:30"
        );
    }

    #[test]
    fn sydney_southern_hemisphere_transitions() {
        let syd = chrono_tz::Australia::Sydney;
        // 2026-04-05 03:00 AEDT falls back to 02:00 AEST (16:00Z on the 4th).
        let fold = w("01:00", "04:00").occurrence(d("2026-04-05"), syd);
        assert_eq!(fold.start, utc("2026-04-04T14:00:00Z"));
        assert_eq!(fold.end, utc("2026-04-04T18:00:00Z"));
        // 2026-10-04 02:00 AEST jumps to 03:00 AEDT (16:00Z on the 3rd).
        let gap = w("22:00", "02:30").occurrence(d("2026-10-03"), syd);
        assert_eq!(gap.start, utc("2026-10-03T12:00:00Z"));
        assert_eq!(gap.end, utc("2026-10-03T16:00:00Z"));
    }

    #[test]
    fn day_set_membership() {
        let set: DaySet = [Weekday::Sun, Weekday::Wed].into_iter().collect();
        assert!(set.contains(Weekday::Sun) && set.contains(Weekday::Wed));
        assert!(!set.contains(Weekday::Mon));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Weekday::Sun, Weekday::Wed]
        );
        assert!(DaySet::default().is_empty());
    }

    #[test]
    fn wrapping_add_wraps_past_midnight() {
        assert_eq!(t("23:50").wrapping_add(20), t("00:10"));
        assert_eq!(t("10:00").wrapping_add(1440), t("10:00"));
    }
}
