//! The id rule: what a `deviceId` or `sensorType` may be, wherever it comes from (an MQTT
//! topic, a serial line, the config, a firmware profile, a dashboard's query). Ids become topic
//! levels, room names and store index keys, so the rule is the same everywhere and lives here,
//! below every user.

use std::fmt;

/// Longest device id or sensor type accepted (they become index keys).
pub const MAX_ID_BYTES: usize = 128;

/// Why an id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    /// `/` separates topic levels; `+` and `#` are MQTT wildcards.
    Reserved(char),
    Control,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty | IdError::TooLong => write!(f, "must be 1 to {MAX_ID_BYTES} bytes"),
            IdError::Reserved(c) => write!(f, "must not contain `{c}`"),
            IdError::Control => write!(f, "must not contain control characters"),
        }
    }
}

/// Checks an id against the rule.
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(IdError::Reserved(c));
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::Control);
    }
    Ok(())
}

/// An id usable as a topic level, a room name and an index key.
pub fn valid_id(s: &str) -> bool {
    check_id(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert!(valid_id("sim-device-001"));
        assert!(valid_id("Halle 3 · Öfen"));
        assert!(valid_id(&"x".repeat(MAX_ID_BYTES)));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(
            check_id(&"x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong)
        );
        assert_eq!(check_id("a/b"), Err(IdError::Reserved('/')));
        assert_eq!(check_id("a+"), Err(IdError::Reserved('+')));
        assert_eq!(check_id("#"), Err(IdError::Reserved('#')));
        assert_eq!(check_id("a\nb"), Err(IdError::Control));
        assert_eq!(
            check_id("a/b").unwrap_err().to_string(),
            "must not contain `/`"
        );
    }
}
