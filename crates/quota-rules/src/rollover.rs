//! Rollover: the unused allowance of a window carries into the next one, up to a cap, and
//! can be spent for a given number of windows. A limit says so in its JSON:
//! `"rollover": {"max": 50, "expires_after": 2}` (`max` null: no cap; `expires_after`: 1 by
//! default, the carry then lives for the next window only).
//!
//! - The carry into window n is what window n-1 left of its allowance, `allowance - used`,
//!   at most `max`. `used` is what the window's counter counted (allowance and overage:
//!   grants and carries spent in it are not allowance), so a carry never rolls again.
//! - It can be spent until the end of window n + expires_after - 1: at most `expires_after`
//!   carries are alive at once.
//! - Only a window the subject's plan governed all of carries: one that began before the
//!   plan was assigned (a sign-up's first, partial window; the window of a plan change)
//!   carries nothing.
//! - Windows are the plan's grid (resets do not move it): window n-1 is the one that ends
//!   where window n begins.
//!
//! The store materialises a carry as a grant the first time it is needed, once (a unique
//! key on its window); this module decides which carries are due and how much each is.

use serde_json::Value;

use crate::window::{Micros, Window, WindowError, WindowSpec};

/// The most windows a carry may live: a longer walk would be a plan mistake, not a policy.
pub const MAX_EXPIRES_AFTER: u32 = 100;

/// A limit's rollover policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollover {
    /// The largest carry out of one window; None = no cap.
    pub max: Option<i64>,
    /// How many windows a carry can be spent in, the one it carries into first.
    pub expires_after: u32,
}

/// The unused allowance of one window, carried into the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carry {
    /// The window whose allowance was left unused (its start keys the carry).
    pub from: Window,
    pub amount: i64,
    /// When it can no longer be spent: the end of the last window it lives in.
    pub expires_at: Micros,
}

/// `{"max": N | null, "expires_after": K}` beside a whole-number allowance and a window that
/// repeats; None for anything else (the caller names the key in its error).
pub fn parse(value: &Value, allowance: Option<i64>, repeats: bool) -> Option<Rollover> {
    let Value::Object(fields) = value else { return None };
    if allowance.is_none() || !repeats || fields.keys().any(|key| key != "max" && key != "expires_after") {
        return None;
    }
    let max = match fields.get("max")? {
        Value::Null => None,
        Value::Number(max) => Some(max.as_i64().filter(|max| *max > 0)?),
        _ => return None,
    };
    let expires_after = match fields.get("expires_after") {
        None => 1,
        Some(Value::Number(k)) => u32::try_from(k.as_u64()?).ok().filter(|k| (1..=MAX_EXPIRES_AFTER).contains(k))?,
        Some(_) => return None,
    };
    Some(Rollover { max, expires_after })
}

/// The windows of the plan's grid around `now`: `expires_after` windows before the current
/// one, the current one, and `expires_after - 1` after it, oldest first. Every carry alive
/// now comes out of one of the first `expires_after` and expires at the end of one of the rest.
pub fn grid_around(spec: &WindowSpec, subscription_anchor: Micros, now: Micros, rollover: Rollover) -> Result<Vec<Window>, WindowError> {
    let back = rollover.expires_after as usize;
    let current = spec.window_at(subscription_anchor, now)?;
    let mut grid = vec![current];
    while grid.len() <= back {
        // A window without a start or an end (lifetime) has no neighbours to carry between.
        let start = grid[0].start.ok_or_else(out_of_range)?;
        let earlier = spec.window_at(subscription_anchor, start.checked_sub(1).ok_or_else(out_of_range)?)?;
        grid.insert(0, earlier);
    }
    while grid.len() < 2 * back {
        let end = grid[grid.len() - 1].end.ok_or_else(out_of_range)?;
        grid.push(spec.window_at(subscription_anchor, end)?);
    }
    Ok(grid)
}

fn out_of_range() -> WindowError {
    WindowError::OutOfRange("rollover window".to_string())
}

/// The carries alive at `now`: out of each of the `expires_after` windows before the current
/// one (`grid` from `grid_around`) that the plan governed all of (it began at or after
/// `assigned_at`), what it left of `allowance`, by `used_in` (its counter; 0 when nobody
/// used it). Carries of nothing are left out.
pub fn carries_alive(
    rollover: Rollover,
    allowance: i64,
    assigned_at: Micros,
    grid: &[Window],
    now: Micros,
    used_in: impl Fn(&Window) -> i64,
) -> Vec<Carry> {
    let back = rollover.expires_after as usize;
    // grid_around returns exactly 2 x expires_after windows or an error, and an allowance is
    // never negative (a CHECK of quota.limits and overrides): a bug in pg_quota, never input.
    assert!(grid.len() == 2 * back && allowance >= 0, "grid_around gives 2 x expires_after windows");
    (0..back)
        .filter_map(|from| {
            let window = grid[from];
            let expires_at = grid[from + back].end?;
            if window.start? < assigned_at || expires_at <= now {
                return None;
            }
            let left = allowance.saturating_sub(used_in(&window)).max(0);
            let amount = rollover.max.map_or(left, |max| left.min(max));
            (amount > 0).then_some(Carry { from: window, amount, expires_at })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{parse_time_zone, Anchor, Period};
    use serde_json::json;

    const DAY: Micros = 86_400_000_000;

    fn daily() -> WindowSpec {
        WindowSpec { period: Period::Day, anchor: Anchor::Calendar, time_zone: parse_time_zone("UTC").expect("utc") }
    }

    #[test]
    fn parses_the_policy() {
        assert_eq!(parse(&json!({"max": 50, "expires_after": 2}), Some(10), true), Some(Rollover { max: Some(50), expires_after: 2 }));
        assert_eq!(parse(&json!({"max": null}), Some(10), true), Some(Rollover { max: None, expires_after: 1 }));
        for bad in [
            json!({"max": 0}),
            json!({"max": -1}),
            json!({"max": 1.5}),
            json!({"max": "5"}),
            json!({"expires_after": 2}),
            json!({"max": 5, "expires_after": 0}),
            json!({"max": 5, "expires_after": 101}),
            json!({"max": 5, "expires_after": -1}),
            json!({"max": 5, "expires_after": 2.5}),
            json!({"max": 5, "ttl": 2}),
            json!([50]),
            json!(true),
        ] {
            assert_eq!(parse(&bad, Some(10), true), None, "{bad}");
        }
        assert_eq!(parse(&json!({"max": 5}), None, true), None, "an unlimited allowance leaves nothing to carry");
        assert_eq!(parse(&json!({"max": 5}), Some(10), false), None, "a lifetime window has no next one");
    }

    #[test]
    fn the_grid_surrounds_the_current_window() {
        let policy = Rollover { max: None, expires_after: 2 };
        let grid = grid_around(&daily(), 0, 10 * DAY + 5, policy).expect("grid");
        let starts: Vec<_> = grid.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![Some(8 * DAY), Some(9 * DAY), Some(10 * DAY), Some(11 * DAY)]);
        let one = grid_around(&daily(), 0, 10 * DAY, Rollover { max: None, expires_after: 1 }).expect("grid");
        assert_eq!(one.iter().map(|w| w.start).collect::<Vec<_>>(), vec![Some(9 * DAY), Some(10 * DAY)]);
        let lifetime = WindowSpec { period: Period::Lifetime, ..daily() };
        assert!(grid_around(&lifetime, 0, 10 * DAY, policy).is_err(), "a lifetime window has no neighbours");
    }

    #[test]
    fn carries_what_was_left_up_to_the_cap_while_alive() {
        let policy = Rollover { max: Some(50), expires_after: 2 };
        let now = 10 * DAY + 5;
        let grid = grid_around(&daily(), 0, now, policy).expect("grid");
        // Day 8 used 70 of 100 (30 left), day 9 used nothing (100 left, 50 carried).
        let used = |w: &Window| if w.start == Some(8 * DAY) { 70 } else { 0 };
        let carries = carries_alive(policy, 100, 0, &grid, now, used);
        assert_eq!(
            carries,
            vec![
                Carry { from: grid[0], amount: 30, expires_at: 11 * DAY },
                Carry { from: grid[1], amount: 50, expires_at: 12 * DAY },
            ]
        );
        // A window that began before the assignment carries nothing; overspent leaves nothing.
        assert_eq!(carries_alive(policy, 100, 8 * DAY + 1, &grid, now, used).len(), 1);
        assert!(carries_alive(policy, 100, 0, &grid, now, |_| 130).is_empty());
        // Uncapped: all of what was left.
        let uncapped = Rollover { max: None, ..policy };
        assert_eq!(carries_alive(uncapped, 100, 0, &grid, now, used)[1].amount, 100);
    }

    #[test]
    fn a_carry_lives_expires_after_windows_exactly() {
        // Property: whatever the day, each carry alive comes from one of the expires_after
        // windows before today and expires at a window boundary after now.
        let mut rng = crate::rng::Rng::new(23);
        for _ in 0..500 {
            let policy = Rollover { max: Some(1 + rng.below(100) as i64), expires_after: 1 + rng.below(5) as u32 };
            let now = (rng.below(1000) as i64) * DAY + rng.below(DAY as u64) as i64;
            let grid = grid_around(&daily(), 0, now, policy).expect("grid");
            let today = now.div_euclid(DAY);
            for carry in carries_alive(policy, 100, 0, &grid, now, |_| 0) {
                let from = carry.from.start.expect("start") / DAY;
                assert!((today - i64::from(policy.expires_after)..today).contains(&from));
                assert_eq!(carry.expires_at, (from + 1 + i64::from(policy.expires_after)) * DAY);
                assert!(carry.expires_at > now && carry.amount == policy.max.expect("max").min(100));
            }
        }
    }
}
