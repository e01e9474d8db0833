//! Autolock: the cluster's data key kept on a manager's disk only wrapped with an unlock key
//! that a person holds, so that a stolen disk (with the node's identity) yields neither the
//! data key nor, through the mesh, a copy of it.
//!
//! - [`UnlockKey`]: 32 random bytes, shown once to the operator as `SHOALKEY-1-<base32>`
//!   ([`UnlockKey::to_text`], [`UnlockKey::parse`]); never printed by `Debug`, zeroed on drop.
//!   Its [`UnlockKey::id`] (`u` and 16 hex digits) is a fingerprint, safe to show and store.
//! - [`seal_unlock_key`] / [`open_unlock_key`]: the unlock key sealed with the data key, as the
//!   replicated state records it (`shoal_scheduler::autolock`): every manager that holds the
//!   data key can learn the unlock key, and nobody else.
//! - [`wrap`] / [`LockedFile`]: the data key file's locked format, version 2:
//!
//!   ```text
//!   shoal-data-key-v2-locked <unlock key id> <data key id> <nonce, 48 hex> <ciphertext, hex>
//!   ```
//!
//!   The ciphertext is the data key sealed (XChaCha20-Poly1305) with a key derived from the
//!   unlock key (`sha256("shoal/unlock-key/wrap" || unlock key)`: the unlock key is 256 random
//!   bits, so no password stretching is needed), the associated data being the line's first
//!   three words, so that neither id can be edited without the file failing to open.
//!   The plain format, version 1, is `shoal-data-key-v1 <64 hex>` ([`crate::sealed`]).

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use shoal_scheduler::autolock::{SealedUnlockKey, UNLOCK_KEY_ASSOCIATED_DATA, UNLOCK_KEY_BYTES};
use shoal_scheduler::secrets::NONCE_BYTES;
use zeroize::{Zeroize, Zeroizing};

use crate::sealed::{self, DataKey, SealError};

/// The first word of a locked data key file (its format's version).
pub const LOCKED_FILE_HEADER: &str = "shoal-data-key-v2-locked";
/// How an unlock key's text begins (the version of its text form).
pub const UNLOCK_KEY_PREFIX: &str = "SHOALKEY-1-";

/// RFC 4648 base32's alphabet (the key's text is unpadded).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The key that wraps a manager's copy of the data key while autolock is on.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; UNLOCK_KEY_BYTES]);

impl UnlockKey {
    /// A new random unlock key.
    pub fn generate() -> Result<UnlockKey, SealError> {
        let mut bytes = [0u8; UNLOCK_KEY_BYTES];
        getrandom::getrandom(&mut bytes).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(UnlockKey(bytes))
    }

    /// The key from its text (`SHOALKEY-1-...`, as [`Self::to_text`] wrote it). Surrounding
    /// whitespace is ignored, and the base32 part may be in either case. The error never
    /// repeats the text.
    pub fn parse(text: &str) -> Result<UnlockKey, SealError> {
        let text = Zeroizing::new(text.trim().to_ascii_uppercase());
        let bad = || SealError::BadUnlockKey;
        let encoded = text.strip_prefix(UNLOCK_KEY_PREFIX).ok_or_else(bad)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(UNLOCK_KEY_BYTES + 1));
        let (mut buffer, mut bits) = (0u32, 0u32);
        for c in encoded.bytes() {
            let value = BASE32.iter().position(|a| *a == c).ok_or_else(bad)?;
            buffer = (buffer << 5) | value as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        let unused_bits_clear = buffer == 0;
        buffer.zeroize();
        // 32 bytes are 52 base32 digits, the last one carrying 4 unused (zero) bits.
        if encoded.len() != 52 || bytes.len() != UNLOCK_KEY_BYTES || bits != 4 || !unused_bits_clear
        {
            return Err(bad());
        }
        let mut key = [0u8; UNLOCK_KEY_BYTES];
        key.copy_from_slice(&bytes);
        Ok(UnlockKey(key))
    }

    /// The key as the operator keeps it: `SHOALKEY-1-` and 52 base32 digits. Zeroed when
    /// dropped; show it once, never log it.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(UNLOCK_KEY_PREFIX.len() + 52));
        out.push_str(UNLOCK_KEY_PREFIX);
        let (mut buffer, mut bits) = (0u32, 0u32);
        for byte in self.0 {
            buffer = (buffer << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
            }
            buffer &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
        }
        buffer.zeroize();
        out
    }

    /// The key's fingerprint: `u` and 16 hex digits of `sha256("shoal/unlock-key/id" || key)`.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"shoal/unlock-key/id")
            .chain_update(self.0)
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("u{hex}")
    }

    /// The cipher that wraps the data key: its key derived from this one.
    fn wrapping_cipher(&self) -> XChaCha20Poly1305 {
        let derived: Zeroizing<[u8; 32]> = Zeroizing::new(
            Sha256::new()
                .chain_update(b"shoal/unlock-key/wrap")
                .chain_update(self.0)
                .finalize()
                .into(),
        );
        XChaCha20Poly1305::new((&*derived).into())
    }
}

impl Drop for UnlockKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnlockKey({} <redacted>)", self.id())
    }
}

/// Seals `unlock` with the data key, for the replicated state.
pub fn seal_unlock_key(
    data_key: &DataKey,
    unlock: &UnlockKey,
) -> Result<SealedUnlockKey, SealError> {
    Ok(SealedUnlockKey {
        id: unlock.id(),
        sealed: sealed::seal_fresh(data_key, UNLOCK_KEY_ASSOCIATED_DATA, &unlock.0)?,
    })
}

/// Opens the unlock key the state records, with the data key.
pub fn open_unlock_key(
    data_key: &DataKey,
    sealed: &SealedUnlockKey,
) -> Result<UnlockKey, SealError> {
    let bytes = sealed::open(data_key, &sealed.sealed, UNLOCK_KEY_ASSOCIATED_DATA)?;
    let array: [u8; UNLOCK_KEY_BYTES] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Corrupt)?;
    let key = UnlockKey(array);
    if key.id() != sealed.id {
        return Err(SealError::Corrupt);
    }
    Ok(key)
}

/// A data key file in the locked format: what it says before it is opened.
#[derive(Clone, PartialEq, Eq)]
pub struct LockedFile {
    /// The id of the unlock key that wraps it.
    pub unlock_key_id: String,
    /// The id of the data key it holds.
    pub data_key_id: String,
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

impl fmt::Debug for LockedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedFile")
            .field("unlock_key_id", &self.unlock_key_id)
            .field("data_key_id", &self.data_key_id)
            .finish_non_exhaustive()
    }
}

fn associated_data(unlock_key_id: &str, data_key_id: &str) -> String {
    format!("{LOCKED_FILE_HEADER} {unlock_key_id} {data_key_id}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The locked file's text: `data_key` wrapped with `unlock` under a fresh nonce.
pub fn wrap(data_key: &DataKey, unlock: &UnlockKey) -> Result<String, SealError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let (unlock_key_id, data_key_id) = (unlock.id(), data_key.id());
    let aad = associated_data(&unlock_key_id, &data_key_id);
    let ciphertext = unlock
        .wrapping_cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: data_key.expose_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SealError::Corrupt)?;
    Ok(format!("{aad} {} {}\n", hex(&nonce), hex(&ciphertext)))
}

impl LockedFile {
    /// The file's fields from its text, if it is in the locked format (`None` for any other
    /// text; the caller tells the other formats apart). Malformed locked text is an error.
    pub fn parse(text: &str) -> Option<Result<LockedFile, &'static str>> {
        let mut words = text.split_whitespace();
        if words.next() != Some(LOCKED_FILE_HEADER) {
            return None;
        }
        let words: Vec<&str> = words.collect();
        let [unlock_key_id, data_key_id, nonce, ciphertext] = words[..] else {
            return Some(Err(
                "a locked data key file needs four fields after its header",
            ));
        };
        let nonce: Option<[u8; NONCE_BYTES]> = unhex(nonce).and_then(|n| n.try_into().ok());
        let ciphertext = unhex(ciphertext).filter(|c| c.len() == 32 + 16);
        let ids_ok = [unlock_key_id, data_key_id].iter().all(|id| {
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        Some(match (nonce, ciphertext, ids_ok) {
            (Some(nonce), Some(ciphertext), true) => Ok(LockedFile {
                unlock_key_id: unlock_key_id.to_owned(),
                data_key_id: data_key_id.to_owned(),
                nonce,
                ciphertext,
            }),
            _ => Err("a malformed locked data key file"),
        })
    }

    /// The data key, opened with `unlock`. A wrong key is [`SealError::WrongUnlockKey`]; a file
    /// altered since it was written is [`SealError::Corrupt`].
    pub fn open(&self, unlock: &UnlockKey) -> Result<DataKey, SealError> {
        let given = unlock.id();
        if given != self.unlock_key_id {
            return Err(SealError::WrongUnlockKey {
                given,
                wanted: self.unlock_key_id.clone(),
            });
        }
        let aad = associated_data(&self.unlock_key_id, &self.data_key_id);
        let bytes = unlock
            .wrapping_cipher()
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Corrupt)?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Corrupt)?;
        let key = DataKey::from_bytes(array);
        if key.id() != self.data_key_id {
            return Err(SealError::Corrupt);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_key() -> DataKey {
        DataKey::from_bytes([42; 32])
    }

    #[test]
    fn an_unlock_key_reads_back_from_its_text_and_never_prints() {
        let key = UnlockKey::generate().expect("random");
        let text = key.to_text();
        assert!(text.starts_with(UNLOCK_KEY_PREFIX), "{}", text.as_str());
        assert_eq!(text.len(), UNLOCK_KEY_PREFIX.len() + 52);
        assert_eq!(UnlockKey::parse(&text).expect("parses"), key);
        let lower = format!("  {}\n", text.to_lowercase());
        assert_eq!(UnlockKey::parse(&lower).expect("any case, trimmed"), key);
        assert_ne!(UnlockKey::generate().expect("random"), key);
        let fixed = UnlockKey([0xff; UNLOCK_KEY_BYTES]);
        assert_eq!(
            fixed.to_text().as_str(),
            format!("SHOALKEY-1-{}Q", "7".repeat(51))
        );
        let shown = format!("{key:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains(&text[11..]),
            "{shown}"
        );
        assert!(key.id().starts_with('u') && key.id().len() == 17);
    }

    #[test]
    fn malformed_unlock_keys_are_refused() {
        let good = UnlockKey([7; UNLOCK_KEY_BYTES]).to_text();
        let body = &good[UNLOCK_KEY_PREFIX.len()..];
        for bad in [
            String::new(),
            body.to_owned(),                                // no prefix
            format!("SHOALKEY-2-{body}"),                   // another version
            format!("{UNLOCK_KEY_PREFIX}{}", &body[..51]),  // short
            format!("{UNLOCK_KEY_PREFIX}{body}A"),          // long
            format!("{UNLOCK_KEY_PREFIX}{}1", &body[..51]), // not base32
            format!("{}{}", &good[..good.len() - 1], "7"),  // unused bits set
        ] {
            let error = UnlockKey::parse(&bad).expect_err(&bad);
            assert!(matches!(error, SealError::BadUnlockKey), "{bad}: {error}");
        }
    }

    #[test]
    fn the_sealed_unlock_key_opens_with_the_data_key_only() {
        let unlock = UnlockKey::generate().expect("random");
        let sealed = seal_unlock_key(&data_key(), &unlock).expect("seals");
        assert_eq!(sealed.id, unlock.id());
        assert_eq!(sealed.sealed.key_id, data_key().id());
        assert_eq!(
            open_unlock_key(&data_key(), &sealed).expect("opens"),
            unlock
        );
        let other = DataKey::from_bytes([1; 32]);
        assert!(matches!(
            open_unlock_key(&other, &sealed),
            Err(SealError::WrongKey { .. })
        ));
        let mut relabelled = sealed.clone();
        relabelled.id = "u0000000000000000".into();
        assert!(matches!(
            open_unlock_key(&data_key(), &relabelled),
            Err(SealError::Corrupt)
        ));
        // A sealed secret is no unlock key: the associated data differs.
        let secret = sealed::seal_secret(&data_key(), "db", &[3; 32]).expect("seals");
        let forged = SealedUnlockKey {
            id: sealed.id.clone(),
            sealed: secret,
        };
        assert!(matches!(
            open_unlock_key(&data_key(), &forged),
            Err(SealError::Corrupt)
        ));
    }

    #[test]
    fn a_wrapped_data_key_opens_with_its_unlock_key_only() {
        let unlock = UnlockKey::generate().expect("random");
        let text = wrap(&data_key(), &unlock).expect("wraps");
        assert!(text.starts_with(LOCKED_FILE_HEADER));
        assert!(!text.contains(&hex(data_key().expose_bytes())), "{text}");
        assert!(!text.contains(unlock.to_text().as_str()));
        let file = LockedFile::parse(&text)
            .expect("locked")
            .expect("well formed");
        assert_eq!(file.unlock_key_id, unlock.id());
        assert_eq!(file.data_key_id, data_key().id());
        assert_eq!(file.open(&unlock).expect("opens"), data_key());
        assert!(!format!("{file:?}").contains(&hex(&file.ciphertext)));

        let wrong = UnlockKey::generate().expect("random");
        match file.open(&wrong) {
            Err(SealError::WrongUnlockKey { given, wanted }) => {
                assert_eq!((given, wanted), (wrong.id(), unlock.id()));
            }
            other => panic!("a wrong key must be refused: {other:?}"),
        }
        // Two wraps of one key differ (fresh nonces).
        assert_ne!(wrap(&data_key(), &unlock).expect("wraps"), text);
    }

    #[test]
    fn a_tampered_or_malformed_locked_file_does_not_open() {
        let unlock = UnlockKey::generate().expect("random");
        let text = wrap(&data_key(), &unlock).expect("wraps");
        let words: Vec<&str> = text.split_whitespace().collect();
        // A flipped ciphertext digit, and a data key id edited: both fail authentication.
        let mut flipped = words.clone();
        let last = flipped[4].to_owned();
        let swapped = if last.starts_with('0') { "1" } else { "0" };
        let edited_ciphertext = format!("{swapped}{}", &last[1..]);
        flipped[4] = &edited_ciphertext;
        let mut relabelled = words.clone();
        relabelled[2] = "k0000000000000000";
        for edited in [flipped, relabelled] {
            let file = LockedFile::parse(&edited.join(" "))
                .expect("locked")
                .expect("well formed");
            assert!(matches!(file.open(&unlock), Err(SealError::Corrupt)));
        }
        // Malformed: fields missing, bad hex, a short ciphertext.
        for bad in [
            words[..4].join(" "),
            format!("{} {} {} zz {}", words[0], words[1], words[2], words[4]),
            format!("{} {} {} {} abcd", words[0], words[1], words[2], words[3]),
        ] {
            assert!(matches!(LockedFile::parse(&bad), Some(Err(_))), "{bad}");
        }
        // Other formats are not the locked one.
        assert!(LockedFile::parse("shoal-data-key-v1 00").is_none());
        assert!(LockedFile::parse("").is_none());
    }
}
