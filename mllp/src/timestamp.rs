//! Times as HL7 writes them (DTM, for MSH-7 of generated messages) and as operators read them,
//! from a `SystemTime` the caller read: this crate reads no clock. No calendar library.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYYMMDDHHMMSS.mmm+0000` (HL7 DTM, UTC) for `now`: the MSH-7 of generated ACKs.
pub fn hl7_timestamp(now: SystemTime) -> Vec<u8> {
    let mut out = Vec::new();
    write_hl7_timestamp(now, &mut out);
    out
}

/// [`hl7_timestamp`] written over `out`, reusing its buffer.
pub fn write_hl7_timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a time in ms since the Unix epoch (operator output).
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm:
/// shift to a March-based era of 400 years, then read year, month and day arithmetically).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * month_index + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    })
    .unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_millis(1_763_817_005_123);
        assert_eq!(hl7_timestamp(t), b"20251122131005.123+0000");
        assert_eq!(format_unix_ms(1_763_817_005_123), "2025-11-22 13:10:05 UTC");
    }

    #[test]
    fn a_reused_buffer_holds_only_the_latest_timestamp() {
        let mut out = b"left over from an earlier, longer value".to_vec();
        write_hl7_timestamp(
            UNIX_EPOCH + Duration::from_millis(1_763_817_005_123),
            &mut out,
        );
        assert_eq!(out, b"20251122131005.123+0000");
        write_hl7_timestamp(UNIX_EPOCH, &mut out);
        assert_eq!(out, b"19700101000000.000+0000");
    }
}
