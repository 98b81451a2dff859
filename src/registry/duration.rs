//! Go `time.ParseDuration` compatible duration parsing.
//!
//! Owns: turning strings such as `10s`, `1m30s`, `1.5h`, `60000ms` or `-2us` into a
//! signed nanosecond count, with Go's accepted units (`ns`, `us`, `µs`, `μs`, `ms`, `s`,
//! `m`, `h`) and its error cases (a bare number other than `0` has no unit and fails).
//! Must not: know about HTTP, the store or any caller's policy (caps, defaults, minimums).

use std::time::Duration;

/// A string that Go's `time.ParseDuration` would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration \"{0}\"")]
pub struct InvalidDuration(pub String);

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration into signed nanoseconds (Go's `time.Duration`, an `i64`).
pub fn parse_go_duration_nanos(input: &str) -> Result<i64, InvalidDuration> {
    let err = || InvalidDuration(input.to_string());
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    // Accumulate in u128 nanoseconds with fractional parts in exact rational form.
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(err());
        }
        let scale = unit_nanos(&s[..unit_len]).ok_or_else(err)?;
        s = &s[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<u128>().map_err(|_| err())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(err)?;
        if !frac_part.is_empty() {
            // Go's leadingFraction: digits past u63 precision are dropped, and the
            // fraction is scaled through float64, exactly as time.ParseDuration does.
            let mut f: u64 = 0;
            let mut frac_scale: f64 = 1.0;
            let mut overflow = false;
            for d in frac_part.bytes() {
                if overflow || f > (i64::MAX as u64) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(d - b'0');
                if y > 1 << 63 {
                    overflow = true;
                    continue;
                }
                f = y;
                frac_scale *= 10.0;
            }
            let frac_nanos = (f as f64 * (scale as f64 / frac_scale)) as u128;
            value = value.checked_add(frac_nanos).ok_or_else(err)?;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return Err(err());
        }
    }
    if negative {
        Ok((total as i128).wrapping_neg() as i64)
    } else {
        Ok(total as i64)
    }
}

/// Parses a Go duration that must not be negative.
pub fn parse_go_duration(input: &str) -> Result<Duration, InvalidDuration> {
    let nanos = parse_go_duration_nanos(input)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| InvalidDuration(input.to_string()))
}

/// Formats a duration the way Go's `Duration.String()` does (e.g. `10s`, `1m30s`, `1.5s`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return trim_frac(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return trim_frac(nanos, 1_000_000, "ms");
    }
    let h = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let rem = rem % 60_000_000_000;
    let secs = trim_frac(rem, 1_000_000_000, "s");
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_frac(value: u128, unit: u128, suffix: &str) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}{suffix}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_units_fractions_and_compounds() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("1.5h", 5_400_000_000_000),
            ("1m30s", 90_000_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("60000ms", 60_000_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("1.s", 1_000_000_000),
            (".5s", 500_000_000),
            ("0.100000000000000000000h", 360_000_000_000),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration_nanos(input), Ok(*want), "input {input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for input in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "5",
            "60",
            "abc",
            "1.5",
            "10 s",
            "1s ",
            "9223372036854775808ns",
            "3000000h",
        ] {
            assert!(parse_go_duration_nanos(input).is_err(), "input {input:?}");
        }
    }

    #[test]
    fn non_negative_variant_rejects_negative() {
        assert!(parse_go_duration("-1s").is_err());
        assert_eq!(parse_go_duration("100ms"), Ok(Duration::from_millis(100)));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }
}
