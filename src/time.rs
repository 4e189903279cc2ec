//! Wall-clock helpers. Timestamps travel as RFC 3339 strings with milliseconds and `Z`
//! (the reference schema) and are stored as Unix milliseconds.
//!
//! chrono, because rskafka's records carry chrono timestamps anyway. Parsing accepts exactly
//! what it accepted before (with the `time` crate): any one ASCII byte between date and time, a
//! leap second only as the last second of a UTC month (taken as its last millisecond), and
//! milliseconds truncated towards zero.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2025-06-13T10:00:00.000Z`: always UTC, always three fractional digits.
pub fn format_ms(ms: i64) -> String {
    let dt = DateTime::from_timestamp_millis(ms)
        .filter(|dt| (-9999..=9999).contains(&dt.year()))
        .unwrap_or(DateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.timestamp_subsec_millis()
    )
}

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    // RFC 3339 is ASCII; chrono would also take a Unicode minus sign in the offset.
    if !s.is_ascii() {
        return None;
    }
    // RFC 3339 lets applications choose the separator; chrono knows only `T`, `t` and space.
    let normalized;
    let s = match s.as_bytes().get(10) {
        Some(b'T' | b't' | b' ') | None => s,
        Some(_) => {
            normalized = format!("{}T{}", &s[..10], &s[11..]);
            &normalized
        }
    };
    let dt = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    if dt.year() > 9999 {
        return None;
    }
    if dt.nanosecond() >= 1_000_000_000 {
        // chrono's leap second: only the last second of a month (UTC) can be one.
        let last_day = dt
            .date_naive()
            .succ_opt()
            .is_none_or(|next| next.month() != dt.month());
        let last_second = (dt.hour(), dt.minute(), dt.second()) == (23, 59, 59);
        return (last_day && last_second).then(|| dt.timestamp() * 1000 + 999);
    }
    let nanos = i128::from(dt.timestamp()) * 1_000_000_000 + i128::from(dt.nanosecond());
    i64::try_from(nanos / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_749_808_800_123), "2025-06-13T10:00:00.123Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(253_402_300_800_000), "1970-01-01T00:00:00.000Z");
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

    #[test]
    fn parses_what_the_time_crate_accepted() {
        let p = parse_rfc3339_ms;
        let at = Some(1_749_808_800_000);
        assert_eq!(p("2025-06-13t10:00:00z"), at);
        assert_eq!(p("2025-06-13 10:00:00Z"), at);
        assert_eq!(p("2025-06-13_10:00:00Z"), at);
        assert_eq!(p("2025-06-13T10:00:00-00:00"), at);
        assert_eq!(
            p("2025-06-13T10:00:00.1234567891Z"),
            Some(1_749_808_800_123)
        );
        assert_eq!(p("2016-12-31T23:59:60Z"), Some(1_483_228_799_999));
        assert_eq!(p("2016-12-31T23:59:60.5Z"), Some(1_483_228_799_999));
        assert_eq!(p("2017-01-01T00:59:60+01:00"), Some(1_483_228_799_999));
        assert_eq!(p("2025-06-13T23:59:60Z"), None);
        assert_eq!(p("2025-06-13T10:59:60Z"), None);
        assert_eq!(p("1969-12-31T23:59:59.9995Z"), Some(0));
        assert_eq!(p("0000-01-01T00:00:00+01:00"), Some(-62_167_222_800_000));
        for bad in [
            "2025-06-13é10:00:00Z",
            "2025-06-13T10:00:00\u{2212}02:00",
            "2025-06-13T10:00:00.Z",
            "2025-06-13T10:00:00+0200",
            "2025-06-13T10:00:00+24:00",
            "2025-02-29T10:00:00Z",
            "2025-06-13T10:00:00Z ",
            "2025-06-13T10:00Z",
            "9999-12-31T23:59:59-01:00",
            "2025-06-13",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
