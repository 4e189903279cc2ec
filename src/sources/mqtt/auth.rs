//! Device credentials and what each may publish, plus the per-IP brake on wrong passwords.
//!
//! Passwords are checked against argon2 PHC strings (pure Rust, no C) on the blocking pool,
//! at most two at a time: a verification costs ~20 MiB and tens of milliseconds by design.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::config::MqttUser;

/// Wrong passwords from one IP within [`FAILURE_WINDOW`] before its CONNECTs are refused.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long an IP over the limit is refused.
pub const BAN: Duration = Duration::from_secs(60);
/// IPs remembered at most (oldest expired first): a scan of many addresses cannot grow it.
const MAX_TRACKED: usize = 4096;

/// What a connected client may publish for.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Anonymous (where allowed): any device.
    Any,
    Devices(Arc<[String]>),
}

impl Grant {
    pub fn allows(&self, device_id: &str) -> bool {
        match self {
            Grant::Any => true,
            Grant::Devices(patterns) => patterns.iter().any(|p| glob(p, device_id)),
        }
    }

    /// The device a contract topic publishes for: `sensors/{id}/…` or `devices/{id}/status`.
    /// Other topics name no device; the topic contract rejects them.
    pub fn allows_topic(&self, topic: &[u8]) -> bool {
        let mut parts = topic.split(|b| *b == b'/');
        match (parts.next(), parts.next()) {
            (Some(b"sensors" | b"devices"), Some(id)) => {
                std::str::from_utf8(id).is_ok_and(|id| self.allows(id))
            }
            _ => true,
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials given but wrong, or an unknown user.
    BadCredentials,
    /// None given where anonymous is not allowed.
    NotAuthorized,
    /// Too many wrong passwords from this IP lately.
    RateLimited,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad_credentials",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

#[derive(Default)]
struct IpRecord {
    window_start: Option<Instant>,
    failures: u32,
    banned_until: Option<Instant>,
}

pub struct Auth {
    allow_anonymous: bool,
    users: HashMap<String, (String, Grant)>,
    verifying: Semaphore,
    ips: Mutex<HashMap<IpAddr, IpRecord>>,
}

impl Auth {
    pub fn new(allow_anonymous: bool, users: &[MqttUser]) -> Auth {
        Auth {
            allow_anonymous,
            users: users
                .iter()
                .map(|u| {
                    (
                        u.username.clone(),
                        (
                            u.password_hash.expose().to_string(),
                            if u.devices.iter().any(|d| d == "*") {
                                Grant::Any
                            } else {
                                Grant::Devices(u.devices.clone().into())
                            },
                        ),
                    )
                })
                .collect(),
            verifying: Semaphore::new(2),
            ips: Mutex::new(HashMap::new()),
        }
    }

    fn banned(&self, ip: IpAddr, now: Instant) -> bool {
        let ips = self.ips.lock().expect("auth lock poisoned");
        ips.get(&ip)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| now < until)
    }

    fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut ips = self.ips.lock().expect("auth lock poisoned");
        if ips.len() >= MAX_TRACKED && !ips.contains_key(&ip) {
            ips.retain(|_, r| {
                r.banned_until.is_some_and(|u| now < u)
                    || r.window_start.is_some_and(|s| now - s < FAILURE_WINDOW)
            });
            if ips.len() >= MAX_TRACKED {
                return;
            }
        }
        let r = ips.entry(ip).or_default();
        if r.window_start.is_none_or(|s| now - s >= FAILURE_WINDOW) {
            r.window_start = Some(now);
            r.failures = 0;
        }
        r.failures += 1;
        if r.failures >= MAX_FAILURES {
            r.banned_until = Some(now + BAN);
            tracing::warn!(%ip, failures = r.failures, ban_secs = BAN.as_secs(), "MQTT: too many wrong passwords; refusing this address for a while");
        }
    }

    /// Decides a CONNECT: the grant, or why it is refused.
    pub async fn authenticate(
        self: &Arc<Self>,
        ip: IpAddr,
        login: Option<(String, String)>,
    ) -> Result<Grant, Refusal> {
        if self.banned(ip, Instant::now()) {
            return Err(Refusal::RateLimited);
        }
        let Some((username, password)) = login else {
            return if self.allow_anonymous {
                Ok(Grant::Any)
            } else {
                Err(Refusal::NotAuthorized)
            };
        };
        let Some((hash, grant)) = self.users.get(&username).cloned() else {
            self.record_failure(ip, Instant::now());
            return Err(Refusal::BadCredentials);
        };
        let ok = {
            let _slot = self.verifying.acquire().await.expect("never closed");
            tokio::task::spawn_blocking(move || verify(&hash, &password))
                .await
                .unwrap_or(false)
        };
        if ok {
            Ok(grant)
        } else {
            self.record_failure(ip, Instant::now());
            Err(Refusal::BadCredentials)
        }
    }
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .and_then(|h| Argon2::default().verify_password(password.as_bytes(), &h))
        .is_ok()
}

/// An argon2id PHC string for `password` with a fresh random salt (for `[[mqtt.users]]`).
pub fn hash_password(password: &str) -> std::io::Result<String> {
    let mut salt = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(std::io::Error::other)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("line1-*", "line1-007"));
        assert!(!glob("line1-*", "line2-007"));
        assert!(glob("dev-1", "dev-1"));
        assert!(!glob("dev-1", "dev-10"));
        assert!(glob("*-temp", "a-temp"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c-y-b"));
    }

    #[test]
    fn grants_check_the_topic_device() {
        let g = Grant::Devices(vec!["line1-*".to_string()].into());
        assert!(g.allows_topic(b"sensors/line1-a/temperature"));
        assert!(g.allows_topic(b"devices/line1-a/status"));
        assert!(!g.allows_topic(b"sensors/line2-a/temperature"));
        assert!(!g.allows_topic(b"devices/other/status"));
    }

    #[tokio::test]
    async fn passwords_and_the_per_ip_brake() {
        let hash = hash_password("s3cret").unwrap();
        let user = MqttUser {
            username: "u".into(),
            password_hash: hash.into(),
            devices: vec!["d-*".into()],
        };
        let auth = Arc::new(Auth::new(false, &[user]));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let login = |p: &str| Some(("u".to_string(), p.to_string()));
        assert!(auth.authenticate(ip, login("s3cret")).await.is_ok());
        assert_eq!(
            auth.authenticate(ip, None).await.err(),
            Some(Refusal::NotAuthorized)
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.authenticate(ip, login("wrong")).await.err(),
                Some(Refusal::BadCredentials)
            );
        }
        assert_eq!(
            auth.authenticate(ip, login("s3cret")).await.err(),
            Some(Refusal::RateLimited)
        );
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(auth.authenticate(other, login("s3cret")).await.is_ok());
    }
}
