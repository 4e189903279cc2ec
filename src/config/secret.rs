//! A password or key from the configuration: it never shows in `Debug` or `Display` output
//! (logs, panics, error chains); the code that needs the value asks for it with
//! [`Secret::expose`].
//!
//! Every secret key can also come from a file (`<key>_file`, e.g. `auth.jwt_secret_file`,
//! read at load, trailing newline trimmed) or from a systemd credential named like the key
//! (`$CREDENTIALS_DIRECTORY/auth.jwt_secret`, see `LoadCredential=` in the unit). One secret
//! from two places is a config error naming both: no silent precedence.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Origin};

/// Every secret key; `[]` stands for each element of an array of tables.
const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "sinks.redis.password",
    "sinks.kafka.password",
    "site_mqtt.password",
    "mqtt.users[].password_hash",
];

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

/// A TOML error message quotes the offending line: on a secret key's line only the position is
/// kept (an unterminated string or a number would otherwise print the secret).
pub(super) fn redact_toml_error(message: String) -> String {
    let shows_secret = message.lines().any(|line| {
        line.split_once('|').is_some_and(|(_, text)| {
            text.split(['{', ','])
                .any(|part| SECRET_KEYS.iter().any(|key| assigns(part, key)))
        })
    });
    if !shows_secret {
        return message;
    }
    let position = message.lines().next().unwrap_or("TOML parse error");
    format!("{position}: on a secret's line (not shown): is the value a quoted string?")
}

/// serde's message for a secret key of the wrong type would quote the value.
pub(super) fn redact_type_error(key: &str, message: String) -> String {
    let leaf = |k: &str| k.rsplit('.').next().map(str::to_string);
    if SECRET_KEYS.iter().any(|k| leaf(k) == leaf(key)) {
        return "must be a string (the value is not shown)".into();
    }
    message
}

/// `part` starts with an assignment to the last segment of `key` (`password = ...`).
fn assigns(part: &str, key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    part.trim_start()
        .strip_prefix(leaf)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// Where secrets are read from besides the TOML value itself.
pub(super) struct SecretSources<'a> {
    /// systemd's `$CREDENTIALS_DIRECTORY`, if set.
    pub credentials: Option<&'a Path>,
}

impl SecretSources<'_> {
    /// Replaces every `<key>_file` and systemd credential with the secret it holds (its origin
    /// becomes that file), so the areas' schemas see only `<key>`. Returns the secret keys
    /// written inline in the config file, for the permission warning.
    pub(super) fn resolve(
        &self,
        table: &mut toml::Table,
        origins: &mut BTreeMap<String, Origin>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut inline = Vec::new();
        for key in expand(table) {
            let (parents, leaf) = key.rsplit_once('.').expect("secret keys are dotted");
            let Some(parent) = table_at(table, parents) else {
                continue;
            };
            let value_set = parent.get(leaf).is_some_and(is_set);
            if value_set && matches!(origins.get(&key), Some(Origin::File { .. })) {
                inline.push(key.clone());
            }
            let file_key = format!("{key}_file");
            // The key an unreadable file is reported under: `<key>_file`, or `<key>` itself
            // for a credential.
            let (from, named_by) = match parent.remove(&format!("{leaf}_file")) {
                Some(path) => (
                    Some(self.file_source(&key, &file_key, path, value_set, origins)?),
                    &file_key,
                ),
                None => (self.credential(&key, value_set, origins)?, &key),
            };
            if let Some(path) = from {
                let secret =
                    read_secret(&path).map_err(|message| invalid(named_by, origins, message))?;
                parent.insert(leaf.to_string(), toml::Value::String(secret));
                origins.insert(key, Origin::File { path, line: None });
            }
        }
        Ok(inline)
    }

    /// The path named by `<key>_file`: a string, relative to the config file that names it,
    /// and the only source of the secret.
    fn file_source(
        &self,
        key: &str,
        file_key: &str,
        path: toml::Value,
        value_set: bool,
        origins: &BTreeMap<String, Origin>,
    ) -> Result<PathBuf, ConfigError> {
        let Some(path) = path.as_str().filter(|p| !p.is_empty()).map(PathBuf::from) else {
            return Err(invalid(file_key, origins, "must be a file path".into()));
        };
        if value_set {
            let origin = origins.get(key).cloned().unwrap_or(Origin::Default);
            return Err(invalid(
                file_key,
                origins,
                format!("`{key}` is set too (from {origin}): set only one of them"),
            ));
        }
        Ok(match origins.get(file_key) {
            Some(Origin::File { path: config, .. }) if path.is_relative() => {
                config.parent().unwrap_or(Path::new("")).join(path)
            }
            _ => path,
        })
    }

    /// `$CREDENTIALS_DIRECTORY/<key>` when systemd passed one; never next to a value.
    fn credential(
        &self,
        key: &str,
        value_set: bool,
        origins: &BTreeMap<String, Origin>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.credentials.map(|dir| dir.join(key)) else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        if value_set {
            return Err(invalid(
                key,
                origins,
                format!(
                    "the systemd credential {} holds it too: set only one of them",
                    path.display()
                ),
            ));
        }
        Ok(Some(path))
    }
}

/// A secret value counts as set unless it is absent or the empty string (= unset).
fn is_set(value: &toml::Value) -> bool {
    value.as_str() != Some("")
}

fn invalid(key: &str, origins: &BTreeMap<String, Origin>, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        origin: origins.get(key).cloned().unwrap_or(Origin::Default),
        message,
    }
}

/// The file's text without its trailing newline; an empty file is an error, not "unset".
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_string())
}

/// [`SECRET_KEYS`] with `[]` expanded to each element present in the table.
fn expand(table: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    for key in SECRET_KEYS {
        match key.split_once("[]") {
            None => keys.push((*key).to_string()),
            Some((array, rest)) => {
                let len = table_at_ref(table, array.rsplit_once('.').map_or("", |(p, _)| p))
                    .and_then(|t| t.get(array.rsplit('.').next().unwrap_or(array)))
                    .and_then(toml::Value::as_array)
                    .map_or(0, Vec::len);
                keys.extend((0..len).map(|i| format!("{array}[{i}]{rest}")));
            }
        }
    }
    keys
}

/// One step of a dotted key: a table (made if missing: an empty table deserializes to the
/// defaults), or `name[i]` for an element of an array of tables.
fn step<'t>(table: &'t mut toml::Table, part: &str) -> Option<&'t mut toml::Table> {
    match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
        Some((name, i)) => table
            .get_mut(name)?
            .as_array_mut()?
            .get_mut(i.parse::<usize>().ok()?)?
            .as_table_mut(),
        None => table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut(),
    }
}

/// The table at a dotted path (`mqtt.users[0]`); `None` where a step is not a table.
fn table_at<'t>(table: &'t mut toml::Table, path: &str) -> Option<&'t mut toml::Table> {
    path.split('.').try_fold(table, step)
}

fn table_at_ref<'t>(table: &'t toml::Table, path: &str) -> Option<&'t toml::Table> {
    if path.is_empty() {
        return Some(table);
    }
    path.split('.')
        .try_fold(table, |t, part| t.get(part)?.as_table())
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
