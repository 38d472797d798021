//! Checking passwords: Argon2 (RustCrypto) on the blocking pool, at most two at once (so
//! sign-in attempts cannot take every core), the same work whether or not the name exists, and
//! a lockout per name after `console.max_failed_sign_ins` failures within `lockout_seconds`.
//! Failures are logged with the name and peer, never the password.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::{ConsoleSettings, OperatorSettings};

/// Names tracked for lockouts at most; beyond, the stale ones are forgotten first.
const MAX_TRACKED_NAMES: usize = 10_000;

/// An Argon2id PHC string of `password` with a fresh random salt and the default parameters
/// (`gatehouse console hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random generator failed".to_owned())?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Failed sign-ins per name, and the bound on password checks running at once.
#[derive(Debug)]
pub struct SignInGuard {
    failures: std::sync::Mutex<HashMap<String, Failures>>,
    max_failures: u32,
    lockout: Duration,
    checks: Semaphore,
    /// A hash of a random password, checked when the name has no hash of its own, so an unknown
    /// name costs what a known one does.
    decoy: OnceCell<String>,
}

impl SignInGuard {
    pub fn new(settings: &ConsoleSettings) -> Self {
        SignInGuard {
            failures: std::sync::Mutex::new(HashMap::new()),
            max_failures: settings.max_failed_sign_ins.max(1),
            lockout: Duration::from_secs(settings.lockout_seconds),
            checks: Semaphore::new(2),
            decoy: OnceCell::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        crate::locking::lock(&self.failures)
    }

    /// Is `name` locked out now?
    pub fn is_locked(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Counts a failed sign-in for `name`; true when it locked the name.
    pub fn failed(&self, name: &str) -> bool {
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= MAX_TRACKED_NAMES {
            let lockout = self.lockout;
            failures.retain(|_, f| {
                now.duration_since(f.since) < lockout || f.locked_until.is_some_and(|u| now < u)
            });
        }
        let entry = failures.entry(name.to_owned()).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(entry.since) >= self.lockout {
            *entry = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= self.max_failures {
            entry.locked_until = Some(now + self.lockout);
            entry.count = 0;
            entry.since = now;
            return true;
        }
        false
    }

    /// Forgets `name`'s failures (it signed in).
    pub fn succeeded(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Whether `password` is `operator`'s; the same Argon2 work when there is no such operator
    /// or it has no password.
    pub async fn verify(&self, operator: Option<&OperatorSettings>, password: String) -> bool {
        let own = operator
            .and_then(|o| o.password_hash.as_ref())
            .map(|h| h.expose().to_owned());
        let has_own = own.is_some();
        let hash = match own {
            Some(hash) => hash,
            None => match self.decoy().await {
                Some(decoy) => decoy,
                None => return false,
            },
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let checked = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.trim())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        checked && has_own
    }

    /// Makes the decoy hash now, so the first sign-in with an unknown name costs no more than
    /// the others.
    pub async fn warm_up(&self) {
        let _ = self.decoy().await;
    }

    async fn decoy(&self) -> Option<String> {
        self.decoy
            .get_or_try_init(|| async {
                let password = super::session::random_token(24).map_err(|_| ())?;
                tokio::task::spawn_blocking(move || hash_password(&password).map_err(|_| ()))
                    .await
                    .map_err(|_| ())?
            })
            .await
            .ok()
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OperatorRole, PasswordHash};

    fn guard(max: u32) -> SignInGuard {
        SignInGuard::new(&ConsoleSettings {
            max_failed_sign_ins: max,
            lockout_seconds: 60,
            ..ConsoleSettings::default()
        })
    }

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let operator = OperatorSettings {
            name: "alice".to_owned(),
            role: OperatorRole::Admin,
            password_hash: Some(PasswordHash::from(hash)),
        };
        let guard = guard(3);
        assert!(guard.verify(Some(&operator), "correct horse".to_owned()).await);
        assert!(!guard.verify(Some(&operator), "wrong".to_owned()).await);
        assert!(!guard.verify(None, "correct horse".to_owned()).await);
    }

    #[test]
    fn a_name_is_locked_after_too_many_failures() {
        let guard = guard(3);
        assert!(!guard.failed("bob"));
        assert!(!guard.failed("bob"));
        assert!(!guard.is_locked("bob"));
        assert!(guard.failed("bob"));
        assert!(guard.is_locked("bob"));
        assert!(!guard.is_locked("alice"));
        guard.succeeded("bob");
        assert!(!guard.is_locked("bob"));
    }
}
