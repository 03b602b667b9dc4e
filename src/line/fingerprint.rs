//! The passenger-key fingerprint: what the line database keeps to tell whether a gate hashes
//! PANs with the line's key, without ever holding the key.

/// A fingerprint of a passenger key: HMAC-SHA256 of a fixed label under the key, in hex. It
/// tells keys apart and reveals nothing about the key (HMAC is a pseudo-random function), and
/// it is unrelated to any passenger key value (the label is not a PAN).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFingerprint(String);

/// The label hashed under the key.
const LABEL: &[u8] = b"tapgate passenger-key fingerprint v1";

/// Hex digits in the short form.
const SHORT: usize = 16;

impl KeyFingerprint {
    /// The fingerprint of a passenger key's bytes.
    pub fn of_key(key: &[u8]) -> KeyFingerprint {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        KeyFingerprint(hex::encode(ring::hmac::sign(&k, LABEL).as_ref()))
    }

    /// A fingerprint as stored (64 hex digits).
    pub fn from_hex(hex: &str) -> KeyFingerprint {
        KeyFingerprint(hex.to_owned())
    }

    /// The full form, as stored in the line database.
    pub fn as_hex(&self) -> &str {
        &self.0
    }

    /// The short form for messages and logs: `fp:` and the first 16 hex digits.
    pub fn short(&self) -> String {
        format!("fp:{}", self.0.get(..SHORT).unwrap_or(&self.0))
    }
}

impl std::fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

impl std::fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_tells_keys_apart_and_does_not_contain_the_key() {
        let a = [7u8; 32];
        let b = [8u8; 32];
        assert_eq!(KeyFingerprint::of_key(&a), KeyFingerprint::of_key(&a));
        assert_ne!(KeyFingerprint::of_key(&a), KeyFingerprint::of_key(&b));
        let fp = KeyFingerprint::of_key(&a);
        assert_eq!(fp.as_hex().len(), 64);
        assert!(!fp.as_hex().contains(&hex::encode(a)));
        assert_eq!(fp.short().len(), 3 + 16);
        assert!(fp.as_hex().starts_with(&fp.short()[3..]));
    }
}
