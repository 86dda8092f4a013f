//! How a window is computed: the span of time in which usage of a metric is counted.
//! Plain Rust, no pgrx types.
//!
//! A window rule is a period (hour ... year, a fixed length, lifetime), an anchor
//! (calendar boundaries, or repeats from the subscription's start) and a time zone.
//! Windows are half-open `[start, end)` and tile time: every instant lies in exactly one.
//!
//! Calendar and wall-clock rules are a grid of *local* boundaries `L(k) = origin + k * step`
//! for every integer k, each computed from the origin (never by chaining, so a monthly
//! anchor on Jan 31 gives Feb 28, Mar 31, Apr 30). A local boundary becomes an instant by
//! `resolve`: the earliest instant whose local time is at or after it. `resolve` is monotone,
//! so the windows `[resolve(L(k)), resolve(L(k+1)))` tile time even across DST changes:
//! a doubled local time counts from its first occurrence, a skipped one from the end of the
//! gap, and a window that the gap swallows whole is empty and never returned.

use std::fmt;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone};
use chrono_tz::Tz;

/// Microseconds since 1970-01-01T00:00:00Z (PostgreSQL's timestamptz resolution).
pub type Micros = i64;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;
/// The longest fixed period: windows are counted from an origin in 1969, so a much longer
/// one would place today's window beyond the calendar (a limit that never resets is
/// "lifetime").
const MAX_FIXED_PERIOD: i64 = 36_525 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    /// An exact length of time (a fixed "1 day" is always 24 hours).
    Fixed { micros: i64 },
    Lifetime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Calendar,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub period: Period,
    pub anchor: Anchor,
    pub time_zone: Tz,
}

/// `[start, end)`. `start` None = the beginning of time, `end` None = never ends; both
/// only for lifetime windows (a reset gives a lifetime window a start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<Micros>,
    pub end: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowError {
    UnknownPeriod(String),
    BadInterval(String),
    UnknownAnchor(String),
    UnknownTimeZone(String),
    /// An instant or boundary beyond what the calendar arithmetic can represent.
    OutOfRange(String),
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowError::UnknownPeriod(text) => write!(
                f,
                "unknown period {text:?}: use hour, day, week, month, quarter, year, lifetime, or a length such as \"30 days\""
            ),
            WindowError::BadInterval(reason) => write!(f, "invalid period: {reason}"),
            WindowError::UnknownAnchor(text) => write!(f, "unknown anchor {text:?}: use calendar or subscription"),
            WindowError::UnknownTimeZone(text) => write!(f, "unknown time zone {text:?}: use an IANA name such as Europe/Berlin"),
            WindowError::OutOfRange(what) => write!(f, "{what} is out of the supported range of dates"),
        }
    }
}

impl std::error::Error for WindowError {}

impl Period {
    pub fn parse(text: &str) -> Result<Period, WindowError> {
        let lower = text.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "hour" => Period::Hour,
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            "quarter" => Period::Quarter,
            "year" => Period::Year,
            "lifetime" => Period::Lifetime,
            _ => parse_fixed(&lower).map_err(|error| match error {
                WindowError::UnknownPeriod(_) => WindowError::UnknownPeriod(text.to_string()),
                other => other,
            })?,
        })
    }

    /// Text that `parse` reads back to the same period: "day", "30 days", "12 hours".
    pub fn canonical(&self) -> String {
        match self {
            Period::Hour => "hour".into(),
            Period::Day => "day".into(),
            Period::Week => "week".into(),
            Period::Month => "month".into(),
            Period::Quarter => "quarter".into(),
            Period::Year => "year".into(),
            Period::Lifetime => "lifetime".into(),
            Period::Fixed { micros } => {
                let (unit, name) = [(WEEK, "week"), (DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")]
                    .into_iter()
                    .find(|(unit, _)| micros % unit == 0)
                    .unwrap_or((MINUTE, "minute"));
                let count = micros / unit;
                format!("{count} {name}{}", if count == 1 { "" } else { "s" })
            }
        }
    }
}

/// "<n> <unit>" with unit minute(s), hour(s), day(s) or week(s).
fn parse_fixed(text: &str) -> Result<Period, WindowError> {
    let unknown = || WindowError::UnknownPeriod(text.to_string());
    let mut words = text.split_whitespace();
    let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(unknown());
    };
    let unit = match unit.strip_suffix('s').unwrap_or(unit) {
        "minute" => MINUTE,
        "hour" => HOUR,
        "day" => DAY,
        "week" => WEEK,
        "month" | "quarter" | "year" => {
            return Err(WindowError::BadInterval(format!(
                "{text:?} is not a fixed length of time: use \"month\", \"quarter\" or \"year\""
            )))
        }
        _ => return Err(unknown()),
    };
    if !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WindowError::BadInterval(format!("{text:?} needs a positive whole number")));
    }
    let micros = count
        .parse::<i64>()
        .ok()
        .and_then(|count| count.checked_mul(unit))
        .ok_or_else(|| WindowError::BadInterval(format!("{text:?} is too long")))?;
    if micros == 0 {
        return Err(WindowError::BadInterval(format!("{text:?} must be longer than zero")));
    }
    if micros > MAX_FIXED_PERIOD {
        return Err(WindowError::BadInterval(format!(
            "{text:?} is longer than 36525 days (100 years): use \"lifetime\" for a limit that never resets"
        )));
    }
    Ok(Period::Fixed { micros })
}

impl Anchor {
    pub fn parse(text: &str) -> Result<Anchor, WindowError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "calendar" => Ok(Anchor::Calendar),
            "subscription" => Ok(Anchor::Subscription),
            _ => Err(WindowError::UnknownAnchor(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Anchor::Calendar => "calendar",
            Anchor::Subscription => "subscription",
        }
    }
}

pub fn parse_time_zone(name: &str) -> Result<Tz, WindowError> {
    name.trim().parse::<Tz>().map_err(|_| WindowError::UnknownTimeZone(name.to_string()))
}

impl Window {
    /// The one window of a lifetime limit that was never reset.
    pub const LIFETIME: Window = Window { start: None, end: None };

    /// A reset starts the window over: when `reset_at` falls inside this window, the window
    /// begins there instead. Its end does not move.
    pub fn restarted_by(self, reset_at: Option<Micros>) -> Window {
        match reset_at {
            Some(reset) if self.contains(reset) => Window { start: Some(reset), ..self },
            _ => self,
        }
    }

    pub fn contains(&self, at: Micros) -> bool {
        self.start.is_none_or(|start| start <= at) && self.end.is_none_or(|end| at < end)
    }
}

/// How consecutive local boundaries are spaced.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Wall-clock time: days and weeks keep their local time of day across DST.
    Local(i64),
    /// Calendar months; the day of month is clamped to the month's end.
    Months(i64),
}

impl WindowSpec {
    /// The window that contains `at`. `subscription_anchor` is where subscription windows
    /// repeat from; calendar windows ignore it.
    pub fn window_at(&self, subscription_anchor: Micros, at: Micros) -> Result<Window, WindowError> {
        let tz = self.time_zone;
        let subscription = self.anchor == Anchor::Subscription;
        let step = match self.period {
            Period::Lifetime => return Ok(Window { start: None, end: None }),
            Period::Fixed { micros } if subscription => return exact_grid(subscription_anchor, micros, at),
            Period::Hour if subscription => return exact_grid(subscription_anchor, HOUR, at),
            Period::Fixed { micros } => return exact_grid(resolve(tz, local_date(2001, 1, 1)?)?, micros, at),
            Period::Hour => Step::Local(HOUR),
            Period::Day => Step::Local(DAY),
            Period::Week => Step::Local(WEEK),
            Period::Month => Step::Months(1),
            Period::Quarter => Step::Months(3),
            Period::Year => Step::Months(12),
        };
        let origin = match (subscription, self.period) {
            (true, _) => local_time(tz, subscription_anchor)?,
            // 1969-12-29 is a Monday: weeks are ISO weeks.
            (false, Period::Week) => local_date(1969, 12, 29)?,
            (false, _) => local_date(1970, 1, 1)?,
        };
        local_grid(tz, origin, step, at)
    }
}

/// Windows of an exact length: `origin + k * length` in absolute time.
fn exact_grid(origin: Micros, length: i64, at: Micros) -> Result<Window, WindowError> {
    let out_of_range = || WindowError::OutOfRange("window".to_string());
    let k = (i128::from(at) - i128::from(origin)).div_euclid(i128::from(length));
    let start = i128::from(origin) + k * i128::from(length);
    let start = Micros::try_from(start).map_err(|_| out_of_range())?;
    let end = start.checked_add(length).ok_or_else(out_of_range)?;
    Ok(Window { start: Some(start), end: Some(end) })
}

/// The window of a local grid that contains `at`: estimate k from local time, then move
/// until `resolve(L(k)) <= at < resolve(L(k+1))`. Estimates are off by at most a step or
/// two (DST folds, month lengths), so the walk is bounded.
fn local_grid(tz: Tz, origin: NaiveDateTime, step: Step, at: Micros) -> Result<Window, WindowError> {
    let local_at = local_time(tz, at)?;
    let mut k = estimate_index(origin, step, local_at)?;
    for _ in 0..8 {
        let start = resolve(tz, boundary(origin, step, k)?)?;
        if start > at {
            k -= 1;
            continue;
        }
        let end = resolve(tz, boundary(origin, step, k + 1)?)?;
        if end <= at {
            k += 1;
            continue;
        }
        return Ok(Window { start: Some(start), end: Some(end) });
    }
    Err(WindowError::OutOfRange("window".to_string()))
}

fn estimate_index(origin: NaiveDateTime, step: Step, local_at: NaiveDateTime) -> Result<i64, WindowError> {
    match step {
        Step::Local(length) => {
            let elapsed = local_at
                .signed_duration_since(origin)
                .num_microseconds()
                .ok_or_else(|| WindowError::OutOfRange("instant".to_string()))?;
            Ok(elapsed.div_euclid(length))
        }
        Step::Months(months) => {
            let elapsed = month_index(local_at) - month_index(origin);
            Ok(elapsed.div_euclid(months))
        }
    }
}

/// The k-th local boundary, computed from the origin alone.
fn boundary(origin: NaiveDateTime, step: Step, k: i64) -> Result<NaiveDateTime, WindowError> {
    let out_of_range = || WindowError::OutOfRange("window boundary".to_string());
    match step {
        Step::Local(length) => k
            .checked_mul(length)
            .map(TimeDelta::microseconds)
            .and_then(|offset| origin.checked_add_signed(offset))
            .ok_or_else(out_of_range),
        Step::Months(months) => {
            let index = k.checked_mul(months).and_then(|m| m.checked_add(month_index(origin))).ok_or_else(out_of_range)?;
            let year = i32::try_from(index.div_euclid(12)).map_err(|_| out_of_range())?;
            let month = index.rem_euclid(12) as u32 + 1;
            let day = origin.day().min(days_in_month(year, month).ok_or_else(out_of_range)?);
            NaiveDate::from_ymd_opt(year, month, day).map(|date| date.and_time(origin.time())).ok_or_else(out_of_range)
        }
    }
}

fn month_index(local: NaiveDateTime) -> i64 {
    i64::from(local.year()) * 12 + i64::from(local.month0())
}

fn days_in_month(year: i32, month: u32) -> Option<u32> {
    let (next_year, next_month) = if month == 12 { (year.checked_add(1)?, 1) } else { (year, month + 1) };
    let first_of_next = NaiveDate::from_ymd_opt(next_year, next_month, 1)?;
    Some(first_of_next.pred_opt()?.day())
}

fn local_date(year: i32, month: u32, day: u32) -> Result<NaiveDateTime, WindowError> {
    NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .ok_or_else(|| WindowError::OutOfRange("origin".to_string()))
}

/// The wall-clock time of an instant in `tz`.
fn local_time(tz: Tz, at: Micros) -> Result<NaiveDateTime, WindowError> {
    let utc = DateTime::from_timestamp_micros(at).ok_or_else(|| WindowError::OutOfRange("instant".to_string()))?;
    Ok(utc.with_timezone(&tz).naive_local())
}

/// The earliest instant whose local time in `tz` is at or after `local`.
fn resolve(tz: Tz, local: NaiveDateTime) -> Result<Micros, WindowError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Ok(at.timestamp_micros()),
        LocalResult::Ambiguous(first, second) => Ok(first.timestamp_micros().min(second.timestamp_micros())),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// `local` was skipped (clocks jumped forward): find the instant of the jump by bisection.
/// UTC offsets stay within +-16 hours, so the jump lies within 16 hours of `local` read as UTC.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Result<Micros, WindowError> {
    let naive_utc = local.and_utc().timestamp_micros();
    let out_of_range = || WindowError::OutOfRange("local time".to_string());
    let (mut before, mut after) = (
        naive_utc.checked_sub(16 * HOUR).ok_or_else(out_of_range)?,
        naive_utc.checked_add(16 * HOUR).ok_or_else(out_of_range)?,
    );
    // Invariant: local(before) < local <= local(after).
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if local_time(tz, middle)? >= local {
            after = middle;
        } else {
            before = middle;
        }
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn at(rfc3339: &str) -> Micros {
        DateTime::parse_from_rfc3339(rfc3339).expect(rfc3339).timestamp_micros()
    }

    fn show(micros: Option<Micros>) -> String {
        micros.map_or("-".into(), |m| DateTime::from_timestamp_micros(m).expect("in range").to_rfc3339())
    }

    fn spec(period: &str, anchor: Anchor, zone: &str) -> WindowSpec {
        WindowSpec { period: Period::parse(period).expect(period), anchor, time_zone: parse_time_zone(zone).expect(zone) }
    }

    fn window(spec: WindowSpec, anchor: &str, instant: &str) -> (String, String) {
        let w = spec.window_at(at(anchor), at(instant)).expect("window");
        (show(w.start), show(w.end))
    }

    fn hours(w: &Window) -> f64 {
        (w.end.expect("end") - w.start.expect("start")) as f64 / HOUR as f64
    }

    const ZONES: [&str; 11] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Pacific/Apia",
        "America/St_Johns",
        "Pacific/Chatham",
        "America/Santiago",
    ];

    fn random_period(rng: &mut Rng) -> Period {
        match rng.below(8) {
            0 => Period::Hour,
            1 => Period::Day,
            2 => Period::Week,
            3 => Period::Month,
            4 => Period::Quarter,
            5 => Period::Year,
            6 => Period::Fixed { micros: (1 + rng.below(60 * 24 * 45) as i64) * MINUTE },
            _ => Period::Lifetime,
        }
    }

    /// Instants 1900..2200, with a bias towards DST transitions, month ends and leap days.
    fn random_instant(rng: &mut Rng) -> Micros {
        let base = at("1900-01-01T00:00:00Z") + (rng.below(300 * 365 * 24 * 3600) as i64) * 1_000_000;
        match rng.below(4) {
            0 => base,
            1 => base - base.rem_euclid(HOUR) + *rng.pick(&[0, 1, -1, 30 * MINUTE]),
            2 => at(*rng.pick(&[
                "2026-03-29T00:30:00Z",
                "2026-10-25T00:59:59Z",
                "2026-11-01T05:30:00Z",
                "2011-12-30T09:59:59Z",
                "2028-02-29T12:00:00Z",
                "2026-01-31T23:59:59Z",
                "2026-04-05T15:30:00Z",
            ])) + (rng.below(6 * HOUR as u64) as i64) - 3 * HOUR,
            _ => base - base.rem_euclid(DAY) + (rng.below(2) as i64) * DAY - 1,
        }
    }

    #[test]
    fn windows_tile_time() {
        let seed = 0x0051_DE5E_ED00_0001;
        let mut rng = Rng::new(seed);
        for case in 0..4000 {
            let spec = WindowSpec {
                period: random_period(&mut rng),
                anchor: if rng.below(2) == 0 { Anchor::Calendar } else { Anchor::Subscription },
                time_zone: parse_time_zone(*rng.pick(&ZONES)).expect("zone"),
            };
            let anchor = random_instant(&mut rng);
            let instant = random_instant(&mut rng);
            let context = format!("seed {seed:#x} case {case}: {spec:?} anchor {} at {}", show(Some(anchor)), show(Some(instant)));
            let w = spec.window_at(anchor, instant).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert!(w.contains(instant), "{context}: {w:?} does not contain the instant");
            if spec.period == Period::Lifetime {
                assert_eq!(w, Window { start: None, end: None }, "{context}");
                continue;
            }
            let (start, end) = (w.start.expect("start"), w.end.expect("end"));
            assert!(start < end, "{context}: empty window");
            assert_eq!(spec.window_at(anchor, start), Ok(w), "{context}: the start is in another window");
            assert_eq!(spec.window_at(anchor, end - 1), Ok(w), "{context}: the last instant is in another window");
            assert_eq!(spec.window_at(anchor, end).map(|n| n.start), Ok(Some(end)), "{context}: gap or overlap after");
            assert_eq!(spec.window_at(anchor, start - 1).map(|p| p.end), Ok(Some(start)), "{context}: gap or overlap before");
        }
    }

    /// Subscription windows start at anchor + k months for some k, computed from the anchor
    /// alone: a walk of 30 consecutive monthly windows from Jan 31 never drifts to the 28th.
    #[test]
    fn subscription_months_never_drift() {
        let monthly = spec("month", Anchor::Subscription, "UTC");
        let anchor = at("2026-01-31T10:00:00Z");
        let mut instant = anchor;
        let mut starts = vec![];
        for _ in 0..30 {
            let w = monthly.window_at(anchor, instant).expect("window");
            starts.push(show(w.start)[..10].to_string());
            instant = w.end.expect("end");
        }
        assert_eq!(&starts[..5], ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]);
        assert_eq!(starts[25], "2028-02-29"); // leap year
        assert_eq!(starts[24], "2028-01-31");
        assert_eq!(starts[26], "2028-03-31");
    }

    #[test]
    fn calendar_examples() {
        let utc = |p| spec(p, Anchor::Calendar, "UTC");
        let none = "2000-01-01T00:00:00Z";
        assert_eq!(
            window(utc("day"), none, "2026-11-22T13:45:00Z"),
            ("2026-11-22T00:00:00+00:00".into(), "2026-11-23T00:00:00+00:00".into())
        );
        // 2026-11-22 is a Sunday; its ISO week starts Monday 2026-11-16.
        assert_eq!(window(utc("week"), none, "2026-11-22T23:59:59Z").0, "2026-11-16T00:00:00+00:00");
        assert_eq!(window(utc("week"), none, "2026-11-23T00:00:00Z").0, "2026-11-23T00:00:00+00:00");
        assert_eq!(
            window(utc("quarter"), none, "2026-11-22T00:00:00Z"),
            ("2026-10-01T00:00:00+00:00".into(), "2027-01-01T00:00:00+00:00".into())
        );
        assert_eq!(
            window(utc("year"), none, "2028-02-29T12:00:00Z"),
            ("2028-01-01T00:00:00+00:00".into(), "2029-01-01T00:00:00+00:00".into())
        );
        assert_eq!(window(utc("hour"), none, "2026-11-22T13:45:00Z").0, "2026-11-22T13:00:00+00:00");
        // In India an hour starts at half past in UTC.
        let kolkata = spec("hour", Anchor::Calendar, "Asia/Kolkata");
        assert_eq!(window(kolkata, none, "2026-11-22T13:45:00Z").0, "2026-11-22T13:30:00+00:00");
        // Fixed lengths align to 2001-01-01 (a Monday) in the limit's zone.
        assert_eq!(window(utc("30 days"), none, "2001-02-01T00:00:00Z").0, "2001-01-31T00:00:00+00:00");
        assert_eq!(window(utc("1 week"), none, "2026-11-22T00:00:00Z").0, "2026-11-16T00:00:00+00:00");
        assert_eq!(window(utc("12 hours"), none, "2026-11-22T13:00:00Z").0, "2026-11-22T12:00:00+00:00");
    }

    #[test]
    fn dst_days_and_folds() {
        let berlin = spec("day", Anchor::Calendar, "Europe/Berlin");
        let spring = berlin.window_at(0, at("2026-03-29T12:00:00+02:00")).expect("window");
        assert_eq!((show(spring.start).as_str(), hours(&spring)), ("2026-03-28T23:00:00+00:00", 23.0));
        let autumn = berlin.window_at(0, at("2026-10-25T12:00:00+01:00")).expect("window");
        assert_eq!((show(autumn.start).as_str(), hours(&autumn)), ("2026-10-24T22:00:00+00:00", 25.0));
        // New York falls back at 02:00 EDT: local 01:00-02:00 happens twice and is one window.
        let ny_hour = spec("hour", Anchor::Calendar, "America/New_York");
        let first = ny_hour.window_at(0, at("2026-11-01T01:30:00-04:00")).expect("first pass");
        let second = ny_hour.window_at(0, at("2026-11-01T01:30:00-05:00")).expect("second pass");
        assert_eq!(first, second);
        assert_eq!((show(first.start).as_str(), hours(&first)), ("2026-11-01T05:00:00+00:00", 2.0));
        // Samoa skipped 2011-12-30 entirely: Dec 29 is followed by Dec 31.
        let apia = spec("day", Anchor::Calendar, "Pacific/Apia");
        let dec29 = apia.window_at(0, at("2011-12-29T23:00:00-10:00")).expect("window");
        assert_eq!(show(dec29.end), "2011-12-30T10:00:00+00:00");
        let dec31 = apia.window_at(0, at("2011-12-30T10:00:00Z")).expect("window");
        assert_eq!(dec31.start, dec29.end);
        // Subscription days keep their wall-clock time across DST.
        let daily = spec("day", Anchor::Subscription, "Europe/Berlin");
        let w = daily.window_at(at("2026-03-01T18:00:00+01:00"), at("2026-03-30T12:00:00+02:00")).expect("window");
        assert_eq!(show(w.start), "2026-03-29T16:00:00+00:00"); // 18:00 CEST
    }

    #[test]
    fn subscription_examples() {
        let yearly = spec("year", Anchor::Subscription, "UTC");
        assert_eq!(window(yearly, "2024-02-29T00:00:00Z", "2025-06-01T00:00:00Z").0, "2025-02-28T00:00:00+00:00");
        assert_eq!(window(yearly, "2024-02-29T00:00:00Z", "2028-03-01T00:00:00Z").0, "2028-02-29T00:00:00+00:00");
        let fixed = spec("30 days", Anchor::Subscription, "UTC");
        assert_eq!(
            window(fixed, "2026-01-10T08:00:00Z", "2026-03-01T00:00:00Z"),
            ("2026-02-09T08:00:00+00:00".into(), "2026-03-11T08:00:00+00:00".into())
        );
        // Before the anchor the grid extends backwards.
        let monthly = spec("month", Anchor::Subscription, "UTC");
        assert_eq!(window(monthly, "2026-03-31T00:00:00Z", "2026-03-15T00:00:00Z").0, "2026-02-28T00:00:00+00:00");
        let hourly = spec("hour", Anchor::Subscription, "Asia/Kathmandu");
        assert_eq!(window(hourly, "2026-01-01T00:07:00Z", "2026-01-01T05:00:00Z").0, "2026-01-01T04:07:00+00:00");
    }

    #[test]
    fn reset_restarts_only_its_own_window() {
        let w = Window { start: Some(100), end: Some(200) };
        assert_eq!(w.restarted_by(Some(150)), Window { start: Some(150), end: Some(200) });
        assert_eq!(w.restarted_by(Some(99)), w);
        assert_eq!(w.restarted_by(Some(200)), w);
        assert_eq!(w.restarted_by(None), w);
        let lifetime = Window { start: None, end: None };
        assert_eq!(lifetime.restarted_by(Some(5)), Window { start: Some(5), end: None });
    }

    #[test]
    fn parses_periods() {
        let cases = [
            ("day", Period::Day),
            (" Month ", Period::Month),
            ("LIFETIME", Period::Lifetime),
            ("30 days", Period::Fixed { micros: 30 * DAY }),
            ("1 day", Period::Fixed { micros: DAY }),
            ("12 hours", Period::Fixed { micros: 12 * HOUR }),
            ("90 minutes", Period::Fixed { micros: 90 * MINUTE }),
            ("2 weeks", Period::Fixed { micros: 2 * WEEK }),
        ];
        for (text, period) in cases {
            assert_eq!(Period::parse(text), Ok(period), "{text}");
            assert_eq!(Period::parse(&period.canonical()), Ok(period), "{text}");
        }
        assert_eq!(Period::Fixed { micros: 14 * DAY }.canonical(), "2 weeks");
        assert_eq!(Period::Fixed { micros: 90 * MINUTE }.canonical(), "90 minutes");
        assert_eq!(Period::Fixed { micros: HOUR }.canonical(), "1 hour");
        for bad in ["", "fortnight", "0 days", "-1 day", "+1 day", "3 months", "1 year", "day day", "1.5 days", "10", "99999999999999 weeks", "15250000 weeks", "36526 days"] {
            assert!(Period::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(Period::parse("3 months"), Err(WindowError::BadInterval(_))));
        assert_eq!(Anchor::parse("Subscription"), Ok(Anchor::Subscription));
        assert!(Anchor::parse("moon").is_err());
        assert!(parse_time_zone("Mars/Olympus").is_err());
        assert_eq!(parse_time_zone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        for period in ["day", "month", "year", "hour", "30 days", "week"] {
            for anchor in [Anchor::Calendar, Anchor::Subscription] {
                let s = spec(period, anchor, "Europe/Berlin");
                for instant in [i64::MIN, i64::MAX, at("2026-01-01T00:00:00Z")] {
                    for anchor_at in [i64::MIN, i64::MAX, 0] {
                        // Either a window that contains the instant, or an error: never a panic.
                        if let Ok(w) = s.window_at(anchor_at, instant) {
                            assert!(w.contains(instant));
                        }
                    }
                }
            }
        }

        let far = 268_000_i64 * 365 * DAY; // about year 270000: PostgreSQL allows it, chrono does not
        assert!(matches!(spec("day", Anchor::Calendar, "UTC").window_at(0, far), Err(WindowError::OutOfRange(_))));
    }
}
