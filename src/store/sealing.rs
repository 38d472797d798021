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

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;
use crate::config::EncryptionKey;

const PREFIX: &str = "sealed:v1:";

/// Seals and opens values under one key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(AES-256-GCM, key redacted)")
    }
}

impl Sealer {
    /// A sealer for `key` (32 bytes: what AES-256 takes, so this cannot fail).
    pub fn new(key: &EncryptionKey) -> Sealer {
        let key = match UnboundKey::new(&AES_256_GCM, key.bytes()) {
            Ok(key) => key,
            Err(_) => unreachable!("AES-256-GCM takes any 32-byte key"),
        };
        Sealer {
            key: LessSafeKey::new(key),
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
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Err(StoreError::Unsealed {
                context: context.to_owned(),
            });
        };
        let unreadable = || {
            StoreError::Corrupt(format!(
                "{context}: sealed value does not open with store.encryption_key"
            ))
        };
        let bytes = STANDARD.decode(encoded).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| unreadable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| unreadable())
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
        Sealer::new(&key(&[7u8; 32]).unwrap())
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
        let other = Sealer::new(&key(&[8u8; 32]).unwrap());
        assert!(other.open(&sealed, "t.c:row-1").is_err(), "another key");
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
    fn keys_are_checked() {
        assert!(EncryptionKey::parse(&Secret::new("not base64!")).is_err());
        assert!(key(&[1u8; 16]).unwrap_err().contains("32 bytes"));
        assert_eq!(
            format!("{:?}", key(&[9u8; 32]).unwrap()),
            "EncryptionKey(redacted)"
        );
    }
}
