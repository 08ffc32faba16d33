//! Durations as provider.yaml writes them (`inactivityTimeout: 1h30m`, `cache: 5m`): Go's
//! notation, since DevPod reads them with Go's parser.
//!
//! A duration is `0`, or a sequence of decimal numbers (with an optional fraction), each
//! with a unit: `ns`, `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h`. `1.5h`, `5m0s`, `300s`
//! and `.5s` are durations; `300` (no unit), `1d` and `1 h` are not. Go also takes a
//! leading sign; `+` is accepted here, a negative duration is an error.

use std::time::Duration;

/// What was wrong with a duration, for the caller to put in context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a duration {problem}; write one like 30s, 10m or 1h30m")]
pub struct DurationError {
    pub text: String,
    pub problem: &'static str,
}

/// The largest duration Go represents (2^63 - 1 nanoseconds, about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go-style duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |problem| DurationError {
        text: text.to_string(),
        problem,
    };
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(fail("(it is empty)"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(digits)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("(a number is missing)"));
        }
        let unit_len = after
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        let (unit, after) = after.split_at(unit_len);
        let unit = unit_nanos(unit).ok_or_else(|| {
            fail(if unit.is_empty() {
                "(a unit is missing)"
            } else {
                "(its unit is not one of ns, us, ms, s, m, h)"
            })
        })?;
        total += component_nanos(whole, fraction, unit).ok_or_else(|| fail("(it is too long)"))?;
        if total > MAX_NANOS {
            return Err(fail("(it is too long)"));
        }
        rest = after;
    }
    if negative && total > 0 {
        return Err(fail("(it is negative)"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// `whole.fraction` units in nanoseconds (rounded down), `None` past Go's range.
fn component_nanos(whole: &str, fraction: &str, unit: u128) -> Option<u128> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok().filter(|n| *n <= MAX_NANOS)?
    };
    let mut nanos = whole.checked_mul(unit)?;
    // Digits past the nanosecond cannot change the result; 19 keeps the sums in range.
    let mut scale: u128 = 1;
    let mut digits: u128 = 0;
    for digit in fraction.bytes().take(19) {
        digits = digits * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    nanos += digits * unit / scale;
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("0s", 0),
            ("10m", 600 * S),
            ("300s", 300 * S),
            ("5m0s", 300 * S),
            ("1h30m", 5_400 * S),
            ("1.5h", 5_400 * S),
            ("+2h", 7_200 * S),
            (".5s", S / 2),
            ("5.s", 5 * S),
            ("1h1m1s1ms1us1ns", 3_661 * S + 1_001_001),
            ("3\u{b5}s", 3_000),
            ("3\u{3bc}s", 3_000),
            ("1.0000000001s", S),
            ("0.333333333333333333333333s", 333_333_333),
            ("2562047h", 2_562_047 * 3_600 * S),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_nanos(*nanos)),
                "parse_duration({text:?})"
            );
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        let cases = [
            ("", "(it is empty)"),
            ("-", "(it is empty)"),
            ("300", "(a unit is missing)"),
            ("10m5", "(a unit is missing)"),
            ("1d", "(its unit is not one of ns, us, ms, s, m, h)"),
            ("1 h", "(its unit is not one of ns, us, ms, s, m, h)"),
            ("1H", "(its unit is not one of ns, us, ms, s, m, h)"),
            (".s", "(a number is missing)"),
            ("h", "(a number is missing)"),
            ("1h-5m", "(its unit is not one of ns, us, ms, s, m, h)"),
            ("1h5", "(a unit is missing)"),
            ("-5m", "(it is negative)"),
            ("2562048h", "(it is too long)"),
            ("99999999999999999999999s", "(it is too long)"),
        ];
        for (text, problem) in cases {
            let err = parse_duration(text).unwrap_err();
            assert_eq!(err.problem, problem, "parse_duration({text:?})");
        }
        assert_eq!(
            parse_duration("10 minutes").unwrap_err().to_string(),
            "'10 minutes' is not a duration (its unit is not one of ns, us, ms, s, m, h); \
             write one like 30s, 10m or 1h30m"
        );
    }
}
