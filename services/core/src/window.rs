//! Contact-window arithmetic in the customer's own zone (DST-correct).

use jiff::{civil::Date, tz::TimeZone, Timestamp, ToSpan};

use crate::policy::ContactWindow;

fn at_local(date: Date, time: jiff::civil::Time, tz: &TimeZone) -> Timestamp {
    // `to_zoned` resolves a wall clock that falls into a DST gap or fold compatibly
    // (later for gaps, earlier for folds), which is what a collector would expect.
    date.to_datetime(time)
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// How many days ahead to look for an open day (holidays and closed weekdays).
const SEARCH_DAYS: i32 = 400;

/// Whether `at` falls inside the window in zone `tz`.
#[must_use]
pub fn is_allowed(at: Timestamp, tz: &TimeZone, w: &ContactWindow) -> bool {
    let z = at.to_zoned(tz.clone());
    let t = z.time();
    w.hours_on(z.date())
        .is_some_and(|h| t >= h.start && t < h.end)
}

/// The first instant at or after `at` inside the window.
#[must_use]
pub fn next_allowed(at: Timestamp, tz: &TimeZone, w: &ContactWindow) -> Timestamp {
    if is_allowed(at, tz, w) {
        return at;
    }
    let mut day = at.to_zoned(tz.clone()).date();
    for _ in 0..SEARCH_DAYS {
        if let Some(h) = w.hours_on(day) {
            // A DST jump can push the local start before `at` on the same day; then the
            // day is over for us and the search goes on.
            let candidate = at_local(day, h.start, tz);
            if candidate >= at {
                return candidate;
            }
        }
        match day.checked_add(1.day()) {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    at
}

/// The last whole minute at or before `at` inside the window.
#[must_use]
pub fn last_allowed_before(at: Timestamp, tz: &TimeZone, w: &ContactWindow) -> Timestamp {
    if is_allowed(at, tz, w) {
        return at;
    }
    let mut day = at.to_zoned(tz.clone()).date();
    for _ in 0..SEARCH_DAYS {
        if let Some(h) = w.hours_on(day) {
            let last_minute = h.end.checked_sub(1.minute()).unwrap_or(h.end);
            let candidate = at_local(day, last_minute, tz);
            if candidate <= at {
                return candidate;
            }
        }
        match day.checked_sub(1.day()) {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use jiff::civil::Time;

    use super::*;

    fn w() -> ContactWindow {
        ContactWindow::daily(Time::constant(8, 0, 0, 0), Time::constant(21, 0, 0, 0))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn inside_the_window_stays_put() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let at = ts("2026-11-20T10:15:00+08:00");
        assert_eq!(next_allowed(at, &tz, &w()), at);
    }

    #[test]
    fn late_evening_moves_to_next_morning() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let at = ts("2026-11-20T22:30:00+08:00");
        assert_eq!(next_allowed(at, &tz, &w()), ts("2026-11-21T08:00:00+08:00"));
    }

    #[test]
    fn early_morning_moves_to_eight_same_day() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let at = ts("2026-11-20T06:00:00+08:00");
        assert_eq!(next_allowed(at, &tz, &w()), ts("2026-11-20T08:00:00+08:00"));
    }

    #[test]
    fn exactly_window_end_is_outside() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let at = ts("2026-11-20T21:00:00+08:00");
        assert!(!is_allowed(at, &tz, &w()));
        assert_eq!(next_allowed(at, &tz, &w()), ts("2026-11-21T08:00:00+08:00"));
    }

    #[test]
    fn next_morning_after_spring_forward_is_eight_local_daylight_time() {
        // New York springs forward on 2027-03-14 at 02:00 -> 03:00.
        let tz = TimeZone::get("America/New_York").expect("tz");
        let at = ts("2027-03-13T23:30:00-05:00");
        assert_eq!(next_allowed(at, &tz, &w()), ts("2027-03-14T08:00:00-04:00"));
    }

    #[test]
    fn next_morning_after_fall_back_is_eight_local_standard_time() {
        // New York falls back on 2026-11-01 at 02:00 -> 01:00.
        let tz = TimeZone::get("America/New_York").expect("tz");
        let at = ts("2026-10-31T21:30:00-04:00");
        assert_eq!(next_allowed(at, &tz, &w()), ts("2026-11-01T08:00:00-05:00"));
    }

    #[test]
    fn last_allowed_before_late_night_is_previous_evening() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let at = ts("2026-11-21T06:00:00+08:00");
        assert_eq!(
            last_allowed_before(at, &tz, &w()),
            ts("2026-11-20T20:59:00+08:00")
        );
    }

    #[test]
    fn holiday_and_closed_sunday_push_to_the_next_open_morning() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let mut w = w();
        // 2026-11-21 is a Saturday (holiday here), 2026-11-22 a Sunday (closed).
        w.holidays.push("2026-11-21".parse().expect("date"));
        w.closed_weekdays.push(crate::policy::WeekdayName::Sunday);
        let at = ts("2026-11-20T22:00:00+08:00");
        assert_eq!(next_allowed(at, &tz, &w), ts("2026-11-23T08:00:00+08:00"));
        assert!(!is_allowed(ts("2026-11-21T10:00:00+08:00"), &tz, &w));
        assert_eq!(
            last_allowed_before(ts("2026-11-23T07:00:00+08:00"), &tz, &w),
            ts("2026-11-20T20:59:00+08:00")
        );
    }

    #[test]
    fn weekday_override_changes_that_days_hours() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let mut w = w();
        w.weekdays.saturday = Some(crate::policy::Hours {
            start: Time::constant(9, 0, 0, 0),
            end: Time::constant(18, 0, 0, 0),
        });
        // Saturday 2026-11-21 08:30 is outside; 09:00 is the start.
        let at = ts("2026-11-21T08:30:00+08:00");
        assert_eq!(next_allowed(at, &tz, &w), ts("2026-11-21T09:00:00+08:00"));
        assert!(!is_allowed(ts("2026-11-21T19:00:00+08:00"), &tz, &w));
    }
}
