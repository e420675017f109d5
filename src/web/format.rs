//! How the website shows numbers and times.

use crate::config::units::format_credits;

/// Credits with at least two decimals (`12.50`, `0.000123`, `3.00`).
pub fn credits(micros: i64) -> String {
    let s = format_credits(micros);
    match s.split_once('.') {
        None => format!("{s}.00"),
        Some((i, f)) if f.len() < 2 => format!("{i}.{f:0<2}"),
        Some(_) => s,
    }
}

/// An integer with thousands separators (`12,345`).
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD HH:MM` in the billing timezone.
pub fn time(ms: i64, utc_offset_secs: i32) -> String {
    chrono::DateTime::from_timestamp_millis(ms + utc_offset_secs as i64 * 1000)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` in the billing timezone.
pub fn date(ms: i64, utc_offset_secs: i32) -> String {
    chrono::DateTime::from_timestamp_millis(ms + utc_offset_secs as i64 * 1000)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Milliseconds as `850 ms` or `12.4 s`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(credits(12_500_000), "12.50");
        assert_eq!(credits(3_000_000), "3.00");
        assert_eq!(credits(123), "0.000123");
        assert_eq!(credits(-300_000), "-0.30");
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(time(1_700_000_000_000, 0), "2023-11-14 22:13");
        assert_eq!(time(1_700_000_000_000, 8 * 3600), "2023-11-15 06:13");
        assert_eq!(date(1_700_000_000_000, 8 * 3600), "2023-11-15");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_400), "12.4 s");
    }
}
