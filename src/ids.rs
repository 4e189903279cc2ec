//! The id rule: what a `deviceId` or `sensorType` may be, wherever it comes from (an MQTT
//! topic, a serial line, the config, a firmware profile, a dashboard's query). Ids become topic
//! levels, room names and store index keys, so the rule is the same everywhere and lives here,
//! below every user.
//!
//! Besides the MQTT-reserved characters the rule refuses what makes an id lie about itself on
//! a screen or in a log (control and format characters: bidi overrides, zero-width joiners,
//! BOMs, line separators) and the characters that turn an unescaped id into markup (`<`, `>`,
//! quotes, backtick), so a dashboard that forgets to escape is not open to injection.

use std::fmt;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest device id or sensor type accepted (they become index keys).
pub const MAX_ID_BYTES: usize = 128;

/// Why an id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    /// `/` separates topic levels; `+` and `#` are MQTT wildcards.
    Reserved(char),
    /// Control, format (bidi, zero-width), line or paragraph separator characters.
    Invisible,
    /// `<`, `>`, `"`, `'` or a backtick.
    Markup(char),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty | IdError::TooLong => write!(f, "must be 1 to {MAX_ID_BYTES} bytes"),
            IdError::Reserved(c) => write!(f, "must not contain `{c}`"),
            IdError::Invisible => {
                write!(f, "must not contain control, bidi or zero-width characters")
            }
            IdError::Markup(c) => write!(f, "must not contain `{c}`"),
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
    for c in s.chars() {
        if matches!(c, '<' | '>' | '"' | '\'' | '`') {
            return Err(IdError::Markup(c));
        }
        if matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        ) {
            return Err(IdError::Invisible);
        }
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
        assert_eq!(check_id("a\nb"), Err(IdError::Invisible));
        for sneaky in [
            "evil\u{202E}gpj",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "a\u{2028}b",
            "a\u{2066}b",
        ] {
            assert_eq!(check_id(sneaky), Err(IdError::Invisible), "{sneaky:?}");
        }
        for markup in ["<script>", "a\"b", "a'b", "a`b"] {
            assert!(
                matches!(check_id(markup), Err(IdError::Markup(_))),
                "{markup}"
            );
        }
        assert_eq!(
            check_id("a/b").unwrap_err().to_string(),
            "must not contain `/`"
        );
    }
}
