//! Secrets the store must keep (Connect shared secrets, OAuth tokens), sealed at rest with
//! AES-256-GCM under `store.encryption_key`, so a copy of the database (a backup, a replica, a
//! stolen SQLite file) does not hand over the credentials.
//!
//! A sealed value is `sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag), with a fresh random nonce
//! per write. The associated data names the column and the row (`connect_installations.
//! shared_secret:{client_key}`), so a sealed value copied onto another row does not open.
//! Without a key, values are stored as they are (`check-config` warns).
//!
//! With a key, a value in clear is an error, never taken as the credential: otherwise anyone who
//! can write to the database could plant one (a forged Connect installation with a secret of
//! their choosing) past the seal. Values written before the key was set are sealed in place by
//! `gatehouse store seal` (see `sealed_columns.rs`), and the roles refuse to start while
//! any are left.
//!
//! **Rotating the key**: the new key becomes `store.encryption_key` and the old one is listed in
//! `store.retired_encryption_keys`. Every value is sealed with the new key; one that does not open
//! with it is tried with each retired key (the format names no key: GCM's tag tells a wrong key
//! apart, so a value opens with the key that sealed it or with none), until `gatehouse store
//! seal` has resealed it under the new key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;
use crate::config::{EncryptionKey, Secret};

const PREFIX: &str = "sealed:v1:";

/// Seals values under the current key; opens them under it or, while they wait to be resealed,
/// under a retired one.
pub struct Sealer {
    key: LessSafeKey,
    retired: Vec<LessSafeKey>,
    random: SystemRandom,
}

/// Which key a sealed value opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedWith {
    /// `store.encryption_key`.
    Current,
    /// One of `store.retired_encryption_keys`: `gatehouse store seal` reseals it.
    Retired,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealer(AES-256-GCM, key redacted, {} retired key(s) redacted)",
            self.retired.len()
        )
    }
}

impl Sealer {
    /// A sealer for `key`, also opening what the `retired` keys sealed.
    pub fn new(key: &EncryptionKey, retired: &[EncryptionKey]) -> Sealer {
        Sealer {
            key: aead_key(key),
            retired: retired.iter().map(aead_key).collect(),
            random: SystemRandom::new(),
        }
    }

    pub fn seal(&self, value: &str, context: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::Corrupt("no randomness for a nonce".to_owned()))?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Corrupt("sealing failed".to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens a sealed value bound to `context`; a value in clear is refused
    /// ([`StoreError::Unsealed`]).
    pub fn open(&self, stored: &str, context: &str) -> Result<String, StoreError> {
        self.open_with(stored, context).map(|(plain, _)| plain)
    }

    /// Like [`Sealer::open`], also saying which key opened it.
    pub fn open_with(&self, stored: &str, context: &str) -> Result<(String, OpenedWith), StoreError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Err(StoreError::Unsealed {
                context: context.to_owned(),
            });
        };
        let unreadable = || {
            let keys = if self.retired.is_empty() {
                "store.encryption_key (sealed under a key since replaced? list that one in \
                 store.retired_encryption_keys)"
            } else {
                "store.encryption_key or any of store.retired_encryption_keys"
            };
            StoreError::Corrupt(format!("{context}: sealed value does not open with {keys}"))
        };
        let bytes = STANDARD.decode(encoded).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let keys = std::iter::once((&self.key, OpenedWith::Current))
            .chain(self.retired.iter().map(|key| (key, OpenedWith::Retired)));
        for (key, which) in keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
            let mut attempt = sealed.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut attempt) {
                let plain = String::from_utf8(plain.to_vec()).map_err(|_| unreadable())?;
                return Ok((plain, which));
            }
        }
        Err(unreadable())
    }
}

/// Where a stored credential stands against the configured keys (its `Debug` shows a secret's
/// reference, never the credential).
#[derive(Debug)]
pub enum Standing {
    /// Not sealed: refused while a key is set.
    InClear,
    /// Sealed with `store.encryption_key`.
    Current,
    /// Sealed with a retired key, holding this credential: to be resealed.
    Retired(Secret),
    /// Sealed with no configured key (or bound to another row): it opens nowhere.
    Unopenable,
}

impl Sealer {
    /// How `stored`, bound to `context`, stands (what `gatehouse store seal` and start-up count).
    pub fn standing(&self, stored: &str, context: &str) -> Standing {
        if !is_sealed(stored) {
            return Standing::InClear;
        }
        match self.open_with(stored, context) {
            Ok((_, OpenedWith::Current)) => Standing::Current,
            Ok((plain, OpenedWith::Retired)) => Standing::Retired(Secret::new(plain)),
            Err(_) => Standing::Unopenable,
        }
    }
}

/// `key` for AES-256-GCM (32 bytes: what AES-256 takes, so this cannot fail).
fn aead_key(key: &EncryptionKey) -> LessSafeKey {
    match UnboundKey::new(&AES_256_GCM, key.bytes()) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => unreachable!("AES-256-GCM takes any 32-byte key"),
    }
}

/// Is `stored` a sealed value (as opposed to one in clear)? Says nothing of whether it opens.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Opens a stored value when there is no key: clear values pass, sealed ones are an error.
pub fn open_without_key(stored: &str, context: &str) -> Result<String, StoreError> {
    if is_sealed(stored) {
        return Err(StoreError::Corrupt(format!(
            "{context} is sealed, but store.encryption_key is not configured"
        )));
    }
    Ok(stored.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn key(bytes: &[u8]) -> Result<EncryptionKey, String> {
        EncryptionKey::parse(&Secret::new(STANDARD.encode(bytes)))
    }

    fn sealer() -> Sealer {
        Sealer::new(&key(&[7u8; 32]).unwrap(), &[])
    }

    #[test]
    fn round_trip_bound_to_its_row() {
        let sealer = sealer();
        let sealed = sealer.seal("shared-secret", "t.c:row-1").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("shared-secret"));
        assert_ne!(
            sealed,
            sealer.seal("shared-secret", "t.c:row-1").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed, "t.c:row-1").unwrap(), "shared-secret");
        assert!(
            sealer.open(&sealed, "t.c:row-2").is_err(),
            "copied onto another row"
        );
        let other = Sealer::new(&key(&[8u8; 32]).unwrap(), &[]);
        let error = other.open(&sealed, "t.c:row-1").unwrap_err().to_string();
        assert!(
            error.contains("t.c:row-1") && error.contains("store.retired_encryption_keys"),
            "another key: {error}"
        );
        assert!(open_without_key(&sealed, "t.c:row-1").is_err());
        assert_eq!(open_without_key("clear", "t.c:row-1").unwrap(), "clear");
    }

    #[test]
    fn a_value_in_clear_is_refused_with_a_key() {
        let sealer = sealer();
        for clear in ["planted-secret", "", "sealed:v2:abc", "SEALED:V1:abc"] {
            let error = sealer.open(clear, "t.c:row-1").unwrap_err();
            assert!(matches!(error, StoreError::Unsealed { .. }), "{clear}: {error:?}");
            let message = error.to_string();
            assert!(
                message.contains("t.c:row-1") && message.contains("gatehouse store seal"),
                "{message}"
            );
            assert!(!is_sealed(clear));
        }
        assert!(is_sealed(&sealer.seal("x", "t.c:row-1").unwrap()));
    }

    #[test]
    fn a_rotated_key_opens_what_the_retired_one_sealed_and_seals_with_the_new_one() {
        let (old, new, unrelated) = ([7u8; 32], [8u8; 32], [9u8; 32]);
        let under_old = sealer().seal("shared-secret", "t.c:row-1").unwrap();
        let rotated = Sealer::new(
            &key(&new).unwrap(),
            &[key(&unrelated).unwrap(), key(&old).unwrap()],
        );
        assert_eq!(
            rotated.open_with(&under_old, "t.c:row-1").unwrap(),
            ("shared-secret".to_owned(), OpenedWith::Retired)
        );
        assert!(
            rotated.open(&under_old, "t.c:row-2").is_err(),
            "still bound to its row"
        );
        let resealed = rotated.seal("shared-secret", "t.c:row-1").unwrap();
        assert_eq!(
            rotated.open_with(&resealed, "t.c:row-1").unwrap().1,
            OpenedWith::Current
        );
        // New values are the new key's alone: the old key cannot open them.
        assert!(sealer().open(&resealed, "t.c:row-1").is_err());
        // A key nobody listed opens nothing, and the error says which keys were tried.
        let unlisted = Sealer::new(&key(&unrelated).unwrap(), &[])
            .seal("x", "t.c:row-1")
            .unwrap();
        let only_new = Sealer::new(&key(&new).unwrap(), &[key(&old).unwrap()]);
        let error = only_new.open(&unlisted, "t.c:row-1").unwrap_err().to_string();
        assert!(
            error.contains("store.encryption_key or any of store.retired_encryption_keys"),
            "{error}"
        );
        assert_eq!(
            format!("{only_new:?}"),
            "Sealer(AES-256-GCM, key redacted, 1 retired key(s) redacted)"
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(EncryptionKey::parse(&Secret::new("not base64!")).is_err());
        assert!(key(&[1u8; 16]).unwrap_err().contains("32 bytes"));
        assert_eq!(
            format!("{:?}", key(&[9u8; 32]).unwrap()),
            "EncryptionKey(redacted)"
        );
    }
}
