//! Wall-clock helpers. Timestamps travel as RFC 3339 strings with milliseconds and `Z`
//! (the reference schema) and are stored as Unix milliseconds.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2025-06-13T10:00:00.000Z`: always UTC, always three fractional digits.
pub fn format_ms(ms: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let utc = dt.to_offset(UtcOffset::UTC);
    i64::try_from(utc.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_749_808_800_123), "2025-06-13T10:00:00.123Z");
    }

    #[test]
    fn parses_offsets_and_round_trips() {
        assert_eq!(
            parse_rfc3339_ms("2025-06-13T10:00:00Z"),
            Some(1_749_808_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-06-13T12:00:00.5+02:00"),
            Some(1_749_808_800_500)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        let ms = 1_749_808_800_123;
        assert_eq!(parse_rfc3339_ms(&format_ms(ms)), Some(ms));
    }
}
