//! Typed scalar values of the configuration file: durations, byte sizes, money and
//! numbers that may arrive as strings (after `${VAR}` interpolation every
//! interpolated scalar is a string, so numeric fields accept `"2"` as well as `2`).

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// Micro-credits per credit: money is integer micro-credits everywhere.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// A YAML number, or a string (an interpolated value).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    N(f64),
    S(String),
}

/// A number given either as a YAML number or as a string holding one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::N(n) => Ok(Num(n)),
            NumOrText::S(s) => s
                .trim()
                .parse::<f64>()
                .map(Num)
                .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}"))),
        }
    }
}

impl Num {
    /// The value as a non-negative integer, or a message saying why not.
    pub fn as_u64(self) -> Result<u64, String> {
        if self.0 < 0.0 || self.0.fract() != 0.0 || self.0 > 9.0e15 {
            return Err(format!("expected a non-negative integer, got {}", self.0));
        }
        Ok(self.0 as u64)
    }
}

/// A duration written as `10s`, `500ms`, `5m`, `1h 30m` (humantime syntax), or a
/// bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parsed = match NumOrText::deserialize(d)? {
            NumOrText::N(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
            NumOrText::N(n) => Err(format!("invalid duration {n}")),
            NumOrText::S(s) => parse_duration(&s),
        };
        parsed.map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parses `10s`, `250ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A byte size written as a number or with a `KiB`/`MiB`/`GiB` (or `KB`/`MB`/`GB`,
/// decimal) suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => parse_size(&s),
        };
        parsed.map(Size).map_err(serde::de::Error::custom)
    }
}

/// Parses `1048576`, `32MiB`, `64 KiB`, `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// An amount of credits written in decimal (`0.15`, `"12.5"`), stored exactly as
/// integer micro-credits. More than 6 decimal places is an error, not a rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Credits(pub i64);

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Decimal(text) = Decimal::deserialize(d)?;
        parse_credits(&text).map(Credits).map_err(serde::de::Error::custom)
    }
}

/// Parses a decimal credit amount into micro-credits, exactly.
pub fn parse_credits(s: &str) -> Result<i64, String> {
    parse_fixed(s, 6)
}

/// A decimal written as a number or a string (`10`, `7.3`, `"72.00"`), kept
/// as text so that it can be read exactly with the precision its use needs
/// (a price in cents, fen or yen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(pub String);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            I(i64),
            F(f64),
            S(String),
        }
        Ok(Decimal(match Raw::deserialize(d)? {
            Raw::I(i) => i.to_string(),
            // `{}` on f64 prints the shortest string that round-trips, so
            // `0.15` comes back as "0.15" and parses exactly.
            Raw::F(f) => format!("{f}"),
            Raw::S(s) => s,
        }))
    }
}

/// Parses a decimal into an integer count of `10^-places` units, exactly:
/// `parse_fixed("7.3", 2)` is 730. More decimal places than `places` is an
/// error, not a rounding.
pub fn parse_fixed(s: &str, places: usize) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let ok = (!int.is_empty() || !frac.is_empty())
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit());
    if !ok {
        return Err(format!("invalid amount {s:?}"));
    }
    if frac.len() > places {
        return Err(format!("amount {s:?} has more than {places} decimal places"));
    }
    let int_v: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| format!("amount {s:?} is too large"))? };
    let frac_v: i64 = if places == 0 { 0 } else { format!("{frac:0<places$}").parse().unwrap_or(0) };
    let v = int_v
        .checked_mul(10i64.pow(places as u32))
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(|| format!("amount {s:?} is too large"))?;
    Ok(if neg { -v } else { v })
}

impl fmt::Display for Credits {
    /// Prints micro-credits as a decimal credit amount without trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_credits(self.0))
    }
}

/// Formats micro-credits as a decimal amount: `1500000` → `1.5`, `-25` → `-0.000025`.
pub fn format_credits(micros: i64) -> String {
    use std::fmt::Write;
    let abs = micros.unsigned_abs();
    let (int, frac) = (abs / MICROS_PER_CREDIT as u64, abs % MICROS_PER_CREDIT as u64);
    // One string, no intermediate ones: every access-log line formats a cost.
    let mut s = String::with_capacity(24);
    if micros < 0 {
        s.push('-');
    }
    let _ = write!(s, "{int}");
    if frac != 0 {
        let _ = write!(s, ".{frac:06}");
        s.truncate(s.trim_end_matches('0').len());
    }
    s
}

/// Digits after the decimal point in a currency's minor unit, as Stripe counts
/// them: 0 for yen or won, 3 for the dinars, 2 for the rest.
pub fn currency_exponent(code: &str) -> u32 {
    const ZERO: &[&str] = &[
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    const THREE: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];
    if ZERO.contains(&code) {
        0
    } else if THREE.contains(&code) {
        3
    } else {
        2
    }
}

/// A price in minor units as text in the major unit: `7200` cny → `72.00`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let exp = currency_exponent(currency);
    if exp == 0 {
        return minor.to_string();
    }
    let div = 10i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    let a = minor.unsigned_abs();
    format!("{sign}{}.{:0width$}", a / div as u64, a % div as u64, width = exp as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_minor_units() {
        assert_eq!(parse_fixed("7.3", 2), Ok(730));
        assert_eq!(parse_fixed("10", 2), Ok(1000));
        assert_eq!(parse_fixed("1500", 0), Ok(1500));
        assert!(parse_fixed("0.001", 2).is_err());
        assert_eq!(currency_exponent("jpy"), 0);
        assert_eq!(currency_exponent("usd"), 2);
        assert_eq!(format_money(7200, "cny"), "72.00");
        assert_eq!(format_money(5, "usd"), "0.05");
        assert_eq!(format_money(1500, "jpy"), "1500");
        assert_eq!(format_money(1234, "kwd"), "1.234");
    }

    #[test]
    fn credits_parse_exactly() {
        assert_eq!(parse_credits("0.15"), Ok(150_000));
        assert_eq!(parse_credits("12"), Ok(12_000_000));
        assert_eq!(parse_credits(".5"), Ok(500_000));
        assert_eq!(parse_credits("-0.000001"), Ok(-1));
        assert!(parse_credits("0.0000001").is_err());
        assert!(parse_credits("abc").is_err());
        assert!(parse_credits("").is_err());
        let c: Credits = serde_yaml::from_str("0.075").unwrap();
        assert_eq!(c.0, 75_000);
        let c: Credits = serde_yaml::from_str("3").unwrap();
        assert_eq!(c.0, 3_000_000);
    }

    #[test]
    fn credits_format() {
        assert_eq!(format_credits(1_500_000), "1.5");
        assert_eq!(format_credits(-25), "-0.000025");
        assert_eq!(format_credits(0), "0");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn numbers_accept_strings() {
        let n: Num = serde_yaml::from_str("\"4\"").unwrap();
        assert_eq!(n.as_u64(), Ok(4));
        let n: Num = serde_yaml::from_str("2.5").unwrap();
        assert!(n.as_u64().is_err());
    }
}
