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

/// Password checks running at once (each takes a core for a moment).
const CHECKS_AT_ONCE: usize = 2;

/// Sign-ins being checked or waiting for a check, at most; more are refused at once ([`Busy`]).
const CHECKS_WAITING: usize = 16;

/// Too many sign-ins are waiting for a password check: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

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
    /// Checks of this name running now: each may still fail, so they count against the name's
    /// remaining tries (concurrent guesses cannot get past the lockout).
    in_flight: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            count: 0,
            in_flight: 0,
            since: now,
            locked_until: None,
        }
    }
}

/// Failed sign-ins per name, and the bound on password checks running at once.
#[derive(Debug)]
pub struct SignInGuard {
    failures: std::sync::Mutex<HashMap<String, Failures>>,
    max_failures: u32,
    lockout: Duration,
    checks: Semaphore,
    /// Room for checks, running or waiting for one of `checks`: past it a sign-in is refused at
    /// once, so a flood of sign-ins cannot hold every request slot the console's other pages need.
    queued: Semaphore,
    /// A hash of a random password, checked when the name has no hash of its own, so an unknown
    /// name costs what a known one does.
    decoy: OnceCell<String>,
    /// The first configured operator's hash, whose algorithm and cost the decoy copies (a decoy
    /// cheaper than the real hashes would tell which names exist).
    decoy_like: Option<String>,
}

/// A password check under way for a name, counted against its tries until it ends:
/// [`Attempt::failed`], [`Attempt::succeeded`], or dropped (the request went away; its outcome
/// was never shown to anyone).
#[derive(Debug)]
pub struct Attempt<'a> {
    guard: &'a SignInGuard,
    name: String,
    ended: bool,
}

/// How a password check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Failed,
    Succeeded,
    /// Its request went away: the try is given back.
    Abandoned,
}

impl Attempt<'_> {
    /// The password was wrong; true when this locked the name.
    pub fn failed(mut self) -> bool {
        self.ended = true;
        self.guard.end(&self.name, Ended::Failed)
    }

    /// The password was right: the name's failures are forgotten.
    pub fn succeeded(mut self) {
        self.ended = true;
        self.guard.end(&self.name, Ended::Succeeded);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.guard.end(&self.name, Ended::Abandoned);
        }
    }
}

impl SignInGuard {
    pub fn new(settings: &ConsoleSettings) -> Self {
        SignInGuard {
            failures: std::sync::Mutex::new(HashMap::new()),
            max_failures: settings.max_failed_sign_ins.max(1),
            lockout: Duration::from_secs(settings.lockout_seconds),
            checks: Semaphore::new(CHECKS_AT_ONCE),
            queued: Semaphore::new(CHECKS_WAITING),
            decoy: OnceCell::new(),
            decoy_like: settings
                .operators
                .iter()
                .find_map(|o| o.password_hash.as_ref())
                .map(|h| h.expose().trim().to_owned()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        crate::locking::lock(&self.failures)
    }

    /// Starts a password check for `name`; `None` while the name is locked out, or while the
    /// checks already running for it could use up its remaining tries.
    pub fn begin(&self, name: &str) -> Option<Attempt<'_>> {
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= MAX_TRACKED_NAMES {
            let lockout = self.lockout;
            failures.retain(|_, f| {
                f.in_flight > 0
                    || now.duration_since(f.since) < lockout
                    || f.locked_until.is_some_and(|u| now < u)
            });
        }
        let entry = failures.entry(name.to_owned()).or_insert(Failures::new(now));
        if entry.locked_until.is_some_and(|until| now < until) {
            return None;
        }
        if entry.in_flight == 0 && now.duration_since(entry.since) >= self.lockout {
            *entry = Failures::new(now);
        }
        if entry.count + entry.in_flight >= self.max_failures {
            return None;
        }
        entry.in_flight += 1;
        Some(Attempt {
            guard: self,
            name: name.to_owned(),
            ended: false,
        })
    }

    /// Ends a check of `name`; true when a failure locked the name.
    fn end(&self, name: &str, ended: Ended) -> bool {
        let now = Instant::now();
        let mut failures = self.lock();
        if ended == Ended::Succeeded {
            failures.remove(name);
            return false;
        }
        let entry = failures.entry(name.to_owned()).or_insert(Failures::new(now));
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if ended == Ended::Abandoned {
            return false;
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

    /// Whether `password` is `operator`'s; the same Argon2 work when there is no such operator
    /// or it has no password. [`Busy`] when too many sign-ins wait already.
    pub async fn verify(&self, operator: Option<&OperatorSettings>, password: String) -> Result<bool, Busy> {
        let Ok(_waiting) = self.queued.try_acquire() else {
            return Err(Busy);
        };
        let own = operator
            .and_then(|o| o.password_hash.as_ref())
            .map(|h| h.expose().to_owned());
        let has_own = own.is_some();
        let hash = match own {
            Some(hash) => hash,
            None => match self.decoy().await {
                Some(decoy) => decoy,
                None => return Ok(false),
            },
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return Ok(false);
        };
        let checked = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.trim())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        Ok(checked && has_own)
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
                let like = self.decoy_like.clone();
                tokio::task::spawn_blocking(move || hash_like(like.as_deref(), &password).map_err(|_| ()))
                    .await
                    .map_err(|_| ())?
            })
            .await
            .ok()
            .cloned()
    }
}

/// A hash of `password` made with `like`'s algorithm, version and cost (the defaults when
/// there is none, or it cannot be read).
fn hash_like(like: Option<&str>, password: &str) -> Result<String, String> {
    use argon2::password_hash::CustomizedPasswordHasher;
    use argon2::password_hash::phc::PasswordHash;

    let Some(like) = like.and_then(|text| PasswordHash::new(text).ok()) else {
        return hash_password(password);
    };
    let Ok(params) = argon2::Params::try_from(&like) else {
        return hash_password(password);
    };
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random generator failed".to_owned())?;
    Argon2::default()
        .hash_password_customized(
            password.as_bytes(),
            &salt,
            Some(like.algorithm.as_str()),
            like.version,
            params,
        )
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
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
        assert_eq!(
            guard.verify(Some(&operator), "correct horse".to_owned()).await,
            Ok(true)
        );
        assert_eq!(guard.verify(Some(&operator), "wrong".to_owned()).await, Ok(false));
        assert_eq!(guard.verify(None, "correct horse".to_owned()).await, Ok(false));
        // Past the waiting room, a check is refused at once.
        let held: Vec<_> = (0..CHECKS_WAITING)
            .map(|_| guard.queued.try_acquire().unwrap())
            .collect();
        assert_eq!(
            guard.verify(Some(&operator), "correct horse".to_owned()).await,
            Err(Busy)
        );
        drop(held);
        assert_eq!(
            guard.verify(Some(&operator), "correct horse".to_owned()).await,
            Ok(true)
        );
    }

    #[test]
    fn a_name_is_locked_after_too_many_failures() {
        let guard = guard(3);
        assert!(!guard.begin("bob").unwrap().failed());
        assert!(!guard.begin("bob").unwrap().failed());
        assert!(guard.begin("bob").unwrap().failed());
        assert!(guard.begin("bob").is_none(), "locked");
        assert!(guard.begin("alice").is_some());
        // A right password forgets the failures.
        let guard = self::guard(3);
        assert!(!guard.begin("bob").unwrap().failed());
        guard.begin("bob").unwrap().succeeded();
        assert!(!guard.begin("bob").unwrap().failed());
        assert!(!guard.begin("bob").unwrap().failed());
    }

    /// Guesses sent at once cannot get past the lockout: checks under way count against the
    /// name's tries; one whose request went away gives its try back.
    #[test]
    fn concurrent_guesses_share_the_tries() {
        let guard = guard(3);
        let first = guard.begin("bob").unwrap();
        let second = guard.begin("bob").unwrap();
        let third = guard.begin("bob").unwrap();
        assert!(guard.begin("bob").is_none(), "a fourth guess while three run");
        drop(third);
        let third = guard.begin("bob").expect("a try given back");
        assert!(!first.failed());
        assert!(!second.failed());
        assert!(third.failed(), "the third failure locks");
        assert!(guard.begin("bob").is_none());
    }

    /// The decoy costs what the configured hashes cost: same algorithm, version and parameters.
    #[test]
    fn the_decoy_copies_the_configured_cost() {
        use argon2::password_hash::phc::PasswordHash as Phc;
        let configured = "$argon2id$v=19$m=8192,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$0LWTqdOnLNG9yK/3pmhsy6nWyUL5vLUubZ6tZ8oTT3M";
        let decoy = hash_like(Some(configured), "x").unwrap();
        let (configured, decoy) = (Phc::new(configured).unwrap(), Phc::new(&decoy).unwrap());
        assert_eq!(decoy.algorithm, configured.algorithm);
        assert_eq!(decoy.version, configured.version);
        assert_eq!(decoy.params, configured.params);
        assert_ne!(decoy.salt, configured.salt);
        // Nothing to copy: the defaults.
        let default = hash_like(None, "x").unwrap();
        assert!(
            default.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{default}"
        );
    }
}
