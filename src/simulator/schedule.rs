//! When a phone checks next, from its knobs (DESIGN.md §2), in its site's time zone.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::knobs::{DailyHours, PhoneKnobs};
use crate::core::{LocalTime, LocalWindow, Mac};

/// A small deterministic generator (SplitMix64): the same seed gives the same phone choices on
/// every machine and every version, unlike an external RNG crate's default.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// Whether a window check was moved by the phone being in use when the window opened (with
/// an inactivity requirement): what the simulator counts to show a busy case is not vacuous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Busy {
    /// Idle at the window's start (or no inactivity requirement, or not a window check).
    #[default]
    No,
    /// Busy at the start: checks later in the same occurrence.
    Delayed,
    /// Busy through an earlier occurrence (never idle long enough before its end): that
    /// occurrence was missed, this check is in a later one.
    Missed,
}

/// The phone's next check strictly after `after`, or `None` when nothing is scheduled (only
/// power-on checks). `busy` is the chance that the phone is in use at the start of a window,
/// which, with an inactivity requirement, delays or skips the check.
pub fn next_check(
    k: &PhoneKnobs,
    tz: Tz,
    mac: Mac,
    after: DateTime<Utc>,
    busy: f64,
    rng: &mut SplitMix,
) -> Option<DateTime<Utc>> {
    next_check_busy(k, tz, mac, after, busy, rng).map(|(t, _)| t)
}

/// [`next_check`], saying whether being busy moved it.
pub fn next_check_busy(
    k: &PhoneKnobs,
    tz: Tz,
    mac: Mac,
    after: DateTime<Utc>,
    busy: f64,
    rng: &mut SplitMix,
) -> Option<(DateTime<Utc>, Busy)> {
    let mut best: Option<(DateTime<Utc>, Busy)> = None;
    let mut offer = |t: DateTime<Utc>, how: Busy| {
        if t > after && best.is_none_or(|(b, _)| t < b) {
            best = Some((t, how));
        }
    };
    if let Some(m) = k.repeat_minutes {
        offer(after + Duration::minutes(i64::from(m)), Busy::No);
    }
    let today = after.with_timezone(&tz).date_naive();
    let horizon = 7 * i64::from(k.interval_weeks.max(1)) + 2;
    if k.weekly && !k.days.is_empty() {
        let mut missed = false;
        for d in -1..horizon {
            let date = today + Duration::days(d);
            if !k.days.contains(date.weekday()) || !week_matches(k.interval_weeks, date, mac) {
                continue;
            }
            let (t, was_busy) = pick(
                k.weekly_window,
                date,
                tz,
                after,
                k.inactivity_minutes,
                busy,
                rng,
            );
            match t {
                Some(t) => {
                    let how = match (missed, was_busy) {
                        (true, _) => Busy::Missed,
                        (false, true) => Busy::Delayed,
                        (false, false) => Busy::No,
                    };
                    offer(t, how);
                    break;
                }
                None => missed |= was_busy,
            }
        }
    }
    if let Some(h) = k.daily {
        for d in -1..3 {
            let date = today + Duration::days(d);
            if let Some(t) = daily_check(h, date, tz, mac)
                && t > after
            {
                offer(t, Busy::No);
                break;
            }
        }
    }
    if k.flexible {
        let period = i64::from(k.interval_days.max(1));
        let day_of_period = (mac.stable_hash() % period as u64) as i64;
        for d in -1..period + 2 {
            let date = today + Duration::days(d);
            if days_since_epoch(date).rem_euclid(period) != day_of_period {
                continue;
            }
            if let (Some(t), _) = pick(k.flexible_window, date, tz, after, 0, busy, rng) {
                offer(t, Busy::No);
                break;
            }
        }
    }
    best
}

/// When a phone that re-arms only at the next occurrence ([`crate::core::ReArm::NextOccurrence`])
/// starts obeying a schedule fetched at `t` while it ran on `old`: at the end of `old`'s window
/// occurrence open at `t` or next to open (that occurrence is lost to the new schedule, as the
/// planner's `rollout_lead` assumes). `t` itself when `old` has no window (power-on or
/// repeated checks only).
pub fn rearmed_from(old: &PhoneKnobs, tz: Tz, mac: Mac, t: DateTime<Utc>) -> DateTime<Utc> {
    let today = t.with_timezone(&tz).date_naive();
    let mut ends: Vec<DateTime<Utc>> = Vec::new();
    let first_end = |window: LocalWindow, days: &dyn Fn(NaiveDate) -> bool, span: i64| {
        (-1..span)
            .map(|d| today + Duration::days(d))
            .filter(|date| days(*date))
            .map(|date| window.occurrence(date, tz).end)
            .find(|end| *end > t)
    };
    if old.weekly && !old.days.is_empty() {
        let horizon = 7 * i64::from(old.interval_weeks.max(1)) + 2;
        let on = |date: NaiveDate| {
            old.days.contains(date.weekday()) && week_matches(old.interval_weeks, date, mac)
        };
        ends.extend(first_end(old.weekly_window, &on, horizon));
    }
    if let Some(h) = old.daily
        && let (Some(start), Some(end)) = (
            LocalTime::from_minutes(h.start_hour * 60),
            LocalTime::from_minutes(h.end_hour * 60),
        )
        && start < end
    {
        ends.extend(first_end(LocalWindow { start, end }, &|_| true, 3));
    }
    if old.flexible {
        let period = i64::from(old.interval_days.max(1));
        let day_of_period = (mac.stable_hash() % period as u64) as i64;
        let on = |date: NaiveDate| days_since_epoch(date).rem_euclid(period) == day_of_period;
        ends.extend(first_end(old.flexible_window, &on, period + 2));
    }
    ends.into_iter().min().unwrap_or(t).max(t)
}

/// Whether two files set the same check schedule (the firmware they point at aside).
pub fn same_schedule(a: &PhoneKnobs, b: &PhoneKnobs) -> bool {
    let strip = |k: &PhoneKnobs| PhoneKnobs {
        firmware_url: None,
        ..k.clone()
    };
    strip(a) == strip(b)
}

/// A Grandstream phone's one check of `date` inside `[start_hour:00, end_hour:00)`: a random
/// minute of the window when randomized, else its start. The minute is drawn per phone and
/// date, so asking again after the check does not give a second check the same day.
fn daily_check(h: DailyHours, date: NaiveDate, tz: Tz, mac: Mac) -> Option<DateTime<Utc>> {
    let (start, end) = (
        LocalTime::from_minutes(h.start_hour * 60)?,
        LocalTime::from_minutes(h.end_hour * 60)?,
    );
    if end <= start {
        // A window ending at or before its start is undocumented: no check.
        return None;
    }
    let occ = LocalWindow { start, end }.occurrence(date, tz);
    let minutes = (occ.end - occ.start).num_minutes().max(1) as u64;
    let minute = if h.random {
        let mut rng = SplitMix::new(mac.stable_hash() ^ days_since_epoch(date) as u64);
        rng.below(minutes) as i64
    } else {
        0
    };
    Some(occ.start + Duration::minutes(minute))
}

/// Every N weeks (N > 0) on the phone's week of the cycle, picked from its MAC.
fn week_matches(interval_weeks: u32, date: NaiveDate, mac: Mac) -> bool {
    if interval_weeks <= 1 {
        return true;
    }
    let week = days_since_epoch(date).div_euclid(7);
    week.rem_euclid(i64::from(interval_weeks))
        == (mac.stable_hash() % u64::from(interval_weeks)) as i64
}

fn days_since_epoch(date: NaiveDate) -> i64 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days()
}

/// The check time inside the window opening on `date`: a random time in it, or, with an
/// inactivity requirement, once the phone has been idle that long inside the window (a busy
/// phone is in use until a random instant of the window). Also says whether the phone was busy.
fn pick(
    window: LocalWindow,
    date: NaiveDate,
    tz: Tz,
    after: DateTime<Utc>,
    inactivity_minutes: u32,
    busy: f64,
    rng: &mut SplitMix,
) -> (Option<DateTime<Utc>>, bool) {
    let occ = window.occurrence(date, tz);
    let start = occ.start.max(after + Duration::seconds(1));
    if start >= occ.end {
        return (None, false);
    }
    let span = (occ.end - start).num_seconds().max(1) as u64;
    if inactivity_minutes == 0 {
        return (
            Some(start + Duration::seconds(rng.below(span) as i64)),
            false,
        );
    }
    let was_busy = rng.chance(busy);
    let idle_since = if was_busy {
        start + Duration::seconds(rng.below(span) as i64)
    } else {
        start
    };
    let t = idle_since
        + Duration::minutes(i64::from(inactivity_minutes))
        + Duration::seconds(rng.below(60) as i64);
    ((t < occ.end).then_some(t), was_busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Weekday};

    use crate::core::DaySet;

    fn knobs() -> PhoneKnobs {
        PhoneKnobs {
            power_on: true,
            repeat_minutes: None,
            weekly: true,
            interval_weeks: 0,
            inactivity_minutes: 0,
            weekly_window: LocalWindow {
                start: "02:30".parse().unwrap(),
                end: "02:55".parse().unwrap(),
            },
            days: [Weekday::Wed].into_iter().collect(),
            flexible: false,
            interval_days: 1,
            flexible_window: LocalWindow {
                start: "00:00".parse().unwrap(),
                end: "00:00".parse().unwrap(),
            },
            daily: None,
            firmware_url: None,
        }
    }

    fn mac() -> Mac {
        "000b82123456".parse().unwrap()
    }

    #[test]
    fn checks_inside_the_window_on_an_allowed_day_in_local_time() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        // Monday 2026-01-05 12:00 UTC; the window opens Wednesday 02:30 Paris = 01:30 UTC.
        let after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        for seed in 0..50 {
            let t = next_check(&knobs(), tz, mac(), after, 0.0, &mut SplitMix::new(seed)).unwrap();
            let lo = Utc.with_ymd_and_hms(2026, 1, 7, 1, 30, 0).unwrap();
            assert!(t >= lo && t < lo + Duration::minutes(25), "{t}");
        }
    }

    #[test]
    fn inactivity_delays_the_check_and_can_skip_a_window() {
        let tz: Tz = "UTC".parse().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let mut k = knobs();
        k.inactivity_minutes = 20;
        let t = next_check(&k, tz, mac(), after, 0.0, &mut SplitMix::new(1)).unwrap();
        let lo = Utc.with_ymd_and_hms(2026, 1, 7, 2, 50, 0).unwrap();
        assert!(t >= lo && t < lo + Duration::minutes(5), "{t}");
        k.inactivity_minutes = 30;
        assert_eq!(
            next_check(&k, tz, mac(), after, 0.0, &mut SplitMix::new(1)),
            None,
            "a 25-minute window never holds 30 idle minutes"
        );
    }

    #[test]
    fn a_busy_phone_is_counted_delayed_or_missed() {
        let tz: Tz = "UTC".parse().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let mut k = knobs();
        k.days = DaySet::ALL;
        k.inactivity_minutes = 20;
        let (t, how) = next_check_busy(&k, tz, mac(), after, 0.0, &mut SplitMix::new(1)).unwrap();
        assert_eq!(how, Busy::No, "{t}");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            // Busy at every window, a phone may miss every night of the horizon.
            let Some((t, how)) =
                next_check_busy(&k, tz, mac(), after, 1.0, &mut SplitMix::new(seed))
            else {
                continue;
            };
            // The 25-minute window at 02:30 holds 20 idle minutes only if the phone is free
            // in its first 5: otherwise that night is missed.
            let first_night = Utc.with_ymd_and_hms(2026, 1, 6, 2, 30, 0).unwrap();
            match how {
                Busy::Delayed => assert!(t < first_night + Duration::minutes(25), "{t}"),
                Busy::Missed => assert!(t > first_night + Duration::hours(23), "{t}"),
                Busy::No => panic!("always busy"),
            }
            seen.insert(format!("{how:?}"));
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn power_on_only_schedules_nothing_and_repeat_wins_when_sooner() {
        let tz: Tz = "UTC".parse().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let mut k = knobs();
        k.weekly = false;
        assert_eq!(
            next_check(&k, tz, mac(), after, 0.0, &mut SplitMix::new(1)),
            None
        );
        k.weekly = true;
        k.days = DaySet::ALL;
        k.repeat_minutes = Some(10);
        assert_eq!(
            next_check(&k, tz, mac(), after, 0.0, &mut SplitMix::new(1)),
            Some(after + Duration::minutes(10))
        );
    }

    #[test]
    fn a_grandstream_phone_checks_once_a_day_at_a_whole_minute_of_its_hours() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let mut k = knobs();
        k.weekly = false;
        k.daily = Some(DailyHours {
            start_hour: 2,
            end_hour: 3,
            random: true,
        });
        // Monday 12:00 UTC; 02:00 Kolkata (+05:30) on Tuesday is Monday 20:30 UTC.
        let mut after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let lo = Utc.with_ymd_and_hms(2026, 1, 5, 20, 30, 0).unwrap();
        for day in 0..5 {
            let t = next_check(&k, tz, mac(), after, 0.0, &mut SplitMix::new(day)).unwrap();
            let open = lo + Duration::days(day as i64);
            assert!(t >= open && t < open + Duration::hours(1), "{t}");
            assert_eq!(t.timestamp() % 60, 0, "a whole minute");
            after = t;
        }
    }

    #[test]
    fn a_phone_re_arming_at_the_next_occurrence_loses_the_window_open_when_it_fetched() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let mut old = knobs();
        old.days = DaySet::ALL;
        // Wednesday 2026-01-07 02:40 Paris (01:40 UTC), inside the 02:30-02:55 window.
        let inside = Utc.with_ymd_and_hms(2026, 1, 7, 1, 40, 0).unwrap();
        assert_eq!(
            rearmed_from(&old, tz, mac(), inside),
            Utc.with_ymd_and_hms(2026, 1, 7, 1, 55, 0).unwrap(),
            "the open occurrence is lost"
        );
        // At noon the next occurrence (Thursday 02:30-02:55 Paris) is the one lost.
        let noon = Utc.with_ymd_and_hms(2026, 1, 7, 11, 0, 0).unwrap();
        assert_eq!(
            rearmed_from(&old, tz, mac(), noon),
            Utc.with_ymd_and_hms(2026, 1, 8, 1, 55, 0).unwrap()
        );
        // A new window later the same night is not used before that.
        let mut new = old.clone();
        new.weekly_window = LocalWindow {
            start: "03:00".parse().unwrap(),
            end: "03:10".parse().unwrap(),
        };
        let from = rearmed_from(&old, tz, mac(), inside);
        let t = next_check(&new, tz, mac(), from, 0.0, &mut SplitMix::new(3)).unwrap();
        assert!(
            t >= Utc.with_ymd_and_hms(2026, 1, 7, 2, 0, 0).unwrap()
                && t < Utc.with_ymd_and_hms(2026, 1, 7, 2, 10, 0).unwrap(),
            "{t}"
        );
        let at_once = next_check(&new, tz, mac(), inside, 0.0, &mut SplitMix::new(3)).unwrap();
        assert!(at_once < Utc.with_ymd_and_hms(2026, 1, 7, 2, 10, 0).unwrap());
        let next_day = rearmed_from(&old, tz, mac(), noon);
        let t = next_check(&new, tz, mac(), next_day, 0.0, &mut SplitMix::new(3)).unwrap();
        assert!(
            t >= Utc.with_ymd_and_hms(2026, 1, 8, 2, 0, 0).unwrap(),
            "{t}"
        );
    }

    #[test]
    fn without_a_window_nothing_is_lost_and_firmware_alone_is_the_same_schedule() {
        let tz: Tz = "UTC".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let mut k = knobs();
        k.weekly = false;
        assert_eq!(rearmed_from(&k, tz, mac(), t), t);
        let mut other = knobs();
        other.firmware_url = Some("http://x/fw.rom".into());
        assert!(same_schedule(&knobs(), &other));
        other.days = DaySet::ALL;
        assert!(!same_schedule(&knobs(), &other));
    }

    #[test]
    fn a_grandstream_phone_loses_its_daily_hours() {
        let tz: Tz = "UTC".parse().unwrap();
        let mut k = knobs();
        k.weekly = false;
        k.daily = Some(DailyHours {
            start_hour: 1,
            end_hour: 3,
            random: true,
        });
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 2, 0, 0).unwrap();
        assert_eq!(
            rearmed_from(&k, tz, mac(), t),
            Utc.with_ymd_and_hms(2026, 1, 5, 3, 0, 0).unwrap()
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let tz: Tz = "UTC".parse().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap();
        let a = next_check(&knobs(), tz, mac(), after, 0.0, &mut SplitMix::new(7));
        let b = next_check(&knobs(), tz, mac(), after, 0.0, &mut SplitMix::new(7));
        assert_eq!(a, b);
    }
}
