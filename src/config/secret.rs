//! A password or key from the configuration: it never shows in `Debug` or `Display` output
//! (logs, panics, error chains); the code that needs the value asks for it with
//! [`Secret::expose`].

use std::fmt;

use serde::Deserialize;

/// Deserializes from a TOML string (or an environment variable); empty means unset.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one call that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What is shown instead of the value.
    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.shown(), f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.to_string(), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "\"<unset>\"");
        assert_eq!(s.expose(), "hunter2");
        let parsed: Secret = toml::Value::String("pw".into()).try_into().unwrap();
        assert_eq!(parsed.expose(), "pw");
    }
}
