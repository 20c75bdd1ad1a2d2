//! Durations, sizes and bytes as operators write them in flags and config files: `500ms`,
//! `10s`, `2min`, `1h`; `1048576`, `512KiB`, `16MiB`; `0x0B`. The duration and size parsers each
//! have a formatter that writes what they read back. And instants as logs and audit trails
//! write them: RFC 3339 in UTC.

use std::time::Duration;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: {reason} (units: ms, s, min, h; e.g. 500ms, 10s, 2min)")]
pub struct DurationError {
    text: String,
    reason: String,
}

/// Parses `500ms`, `10s`, `2min` (or `2m`), `1h`, or a bare number of seconds; decimals are
/// allowed (`1.5s`), a space before the unit too.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let error = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(error("it does not start with a number".to_owned()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| error(format!("{number:?} is not a number")))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "min" | "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(error(format!("unknown unit {other:?}"))),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| error(e.to_string()))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit:
/// `10min`, `1h`, `1500ms`; sub-millisecond durations in Rust's debug form (`1.5µs`).
pub fn format_duration(duration: Duration) -> String {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{duration:?}");
    }
    let ms = duration.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}min", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Why a string is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a size: {reason} (write bytes, e.g. 1048576, or 512KiB, 16MiB)")]
pub struct SizeError {
    text: String,
    reason: String,
}

/// Parses a size: a number of bytes (`1048576`, `1048576B`) or a whole number of `KiB`,
/// `MiB` or `GiB`. Decimal units (`KB`, `MB`) are refused rather than guessed.
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let error = |reason: &str| SizeError {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "k" | "K" | "kB" | "KB" | "M" | "MB" | "G" | "GB" => {
            return Err(error("use KiB, MiB or GiB (powers of 1024)"));
        }
        _ => return Err(error("unknown unit (use KiB, MiB or GiB)")),
    };
    if number.is_empty() {
        return Err(error("it does not start with a whole number"));
    }
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| error("too large"))
}

/// Formats a byte count in the largest exact binary unit (`16MiB`, `1000` bytes as `1000B`).
pub fn format_size(bytes: u64) -> String {
    match bytes {
        0 => "0B".to_owned(),
        _ if bytes.is_multiple_of(1 << 30) => format!("{}GiB", bytes >> 30),
        _ if bytes.is_multiple_of(1 << 20) => format!("{}MiB", bytes >> 20),
        _ if bytes.is_multiple_of(1 << 10) => format!("{}KiB", bytes >> 10),
        _ => format!("{bytes}B"),
    }
}

/// Why a string is not one byte in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not one byte in hex (e.g. 0x0B or 1C)")]
pub struct HexByteError {
    text: String,
}

/// Parses one byte written in hex, `0x` optional and either case: `0x0B`, `1c`, `0X7f`.
pub fn parse_hex_byte(text: &str) -> Result<u8, HexByteError> {
    let trimmed = text.trim();
    let digits = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let error = || HexByteError {
        text: text.to_owned(),
    };
    if !(1..=2).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error());
    }
    u8::from_str_radix(digits, 16).map_err(|_| error())
}

/// `unix_ms` (milliseconds since the Unix epoch) as RFC 3339 in UTC with milliseconds:
/// `2026-12-08T23:15:06.123Z`.
pub fn format_rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        unix_ms % 1000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (the days-to-civil algorithm: eras of
/// 400 years, March-based years so that the leap day comes last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_back_what_they_write() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("10", Duration::from_secs(10)),
            ("2min", Duration::from_secs(120)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            (" 3 s ", Duration::from_secs(3)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "s", "10x", "-1s", "1..2s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(90),
            Duration::from_secs(600),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["16MB", "1.5MiB", "MiB", "-1", "99999999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(3 << 30), "3GiB");
        for bytes in [1024_u64, 1000, 5 << 20] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text).map(|n| n as u64), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn hex_bytes_read_with_or_without_0x() {
        for (text, byte) in [("0x0B", 0x0B), ("1c", 0x1C), ("0X7f", 0x7F), (" 2 ", 0x02)] {
            assert_eq!(parse_hex_byte(text), Ok(byte), "{text}");
        }
        for bad in ["", "0x", "0x100", "+1", "|", "0b1", "VT"] {
            let error = parse_hex_byte(bad).unwrap_err();
            assert!(
                error.to_string().contains("is not one byte in hex"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn instants_in_rfc3339() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_796_771_706_123),
            "2026-12-08T23:15:06.123Z"
        );
        // A leap day, and the day after a century that is not a leap year.
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
    }
}
