//! SNAP signatures: the asymmetric B2B token signature (RSASSA-PKCS1-v1_5 SHA-256) and the
//! symmetric transaction signature (HMAC-SHA512), byte for byte as docs/protocol.md §3 gives them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use sha2::{Digest, Sha256, Sha512};

/// Why a key could not be loaded. Always a configuration problem: fatal at startup.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not PEM with the expected label.
    #[error("not a PEM file with a {expected} block")]
    NotPem {
        /// The PEM labels that would have been accepted.
        expected: &'static str,
    },
    /// The PEM body is not valid base64.
    #[error("PEM body is not valid base64")]
    Base64,
    /// The DER inside is not an RSA key ring accepts.
    #[error("not a usable RSA key: {0}")]
    Rejected(String),
}

/// `X-TIMESTAMP`: ISO 8601 with the local offset, second precision
/// (`2026-11-22T09:15:02+07:00`).
pub fn timestamp(now: &jiff::Zoned) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Returns the DER bytes of the first PEM block whose label is one of `labels`.
pub fn pem_block(text: &str, labels: &[&str]) -> Option<(String, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if !labels.contains(&label) {
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        for l in lines.by_ref() {
            if l == end {
                return B64
                    .decode(body.as_bytes())
                    .ok()
                    .map(|der| (label.to_string(), der));
            }
            body.push_str(l);
        }
        return None;
    }
    None
}

/// The partner's RSA private key, used to sign B2B access-token requests.
pub struct RsaSigner {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigner(<private key>)")
    }
}

impl RsaSigner {
    /// Loads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<RsaSigner, KeyError> {
        let (label, der) =
            pem_block(pem, &["PRIVATE KEY", "RSA PRIVATE KEY"]).ok_or(KeyError::NotPem {
                expected: "PRIVATE KEY or RSA PRIVATE KEY",
            })?;
        let key = if label == "PRIVATE KEY" {
            RsaKeyPair::from_pkcs8(&der)
        } else {
            RsaKeyPair::from_der(&der)
        }
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(RsaSigner {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// `X-SIGNATURE` of the access-token request: base64(RSASSA-PKCS1-v1_5-SHA256(
    /// `client_id + "|" + timestamp`)).
    pub fn sign_b2b(&self, client_id: &str, timestamp: &str) -> String {
        let msg = format!("{client_id}|{timestamp}");
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        // PKCS#1 v1.5 signing only fails for a buffer of the wrong size, which the line above
        // rules out; an empty signature would be rejected by the aggregator, never panic here.
        if self
            .key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                msg.as_bytes(),
                &mut sig,
            )
            .is_err()
        {
            return String::new();
        }
        B64.encode(sig)
    }

    /// The public half as a PKCS#1 `RSAPublicKey` DER, for the simulator.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public().as_ref().to_vec()
    }
}

/// Loads an RSA public key for verification: `PUBLIC KEY` (SubjectPublicKeyInfo),
/// `RSA PUBLIC KEY` (PKCS#1), or a private key PEM (its public half). Returns PKCS#1 DER.
pub fn rsa_public_key_from_pem(pem: &str) -> Result<Vec<u8>, KeyError> {
    if let Some((label, der)) = pem_block(pem, &["PUBLIC KEY", "RSA PUBLIC KEY"]) {
        if label == "RSA PUBLIC KEY" {
            return Ok(der);
        }
        return spki_rsa_key(&der)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| KeyError::Rejected("SubjectPublicKeyInfo is not RSA".into()));
    }
    RsaSigner::from_pem(pem)
        .map(|s| s.public_key_der())
        .map_err(|_| KeyError::NotPem {
            expected: "PUBLIC KEY, RSA PUBLIC KEY or PRIVATE KEY",
        })
}

/// Reads one DER header at `at`: (tag, content start, content end).
fn der_item(der: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *der.get(at)?;
    let first = *der.get(at + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, at + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(at + 2 + i)? as usize;
        }
        (len, at + 2 + n)
    };
    let end = start.checked_add(len)?;
    (end <= der.len()).then_some((tag, start, end))
}

/// SubjectPublicKeyInfo → the `RSAPublicKey` inside its BIT STRING.
fn spki_rsa_key(der: &[u8]) -> Option<&[u8]> {
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (t, s, _) = der_item(der, 0)?;
    (t == 0x30).then_some(())?;
    let (t, alg_s, alg_e) = der_item(der, s)?;
    (t == 0x30).then_some(())?;
    let (t, oid_s, oid_e) = der_item(der, alg_s)?;
    (t == 0x06 && &der[oid_s..oid_e] == RSA_OID).then_some(())?;
    let (t, bs, be) = der_item(der, alg_e)?;
    (t == 0x03 && be > bs && der[bs] == 0).then_some(())?;
    Some(&der[bs + 1..be])
}

/// Verifies a B2B `X-SIGNATURE` against a PKCS#1 `RSAPublicKey` DER.
pub fn verify_b2b(public_key_der: &[u8], client_id: &str, timestamp: &str, sig_b64: &str) -> bool {
    let Ok(sig) = B64.decode(sig_b64.as_bytes()) else {
        return false;
    };
    let msg = format!("{client_id}|{timestamp}");
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_der)
        .verify(msg.as_bytes(), &sig)
        .is_ok()
}

/// Lower-case hex SHA-256 of the exact body bytes.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `METHOD:PATH:TOKEN:lowercase(hex(sha256(body))):TIMESTAMP`.
pub fn string_to_sign(method: &str, path: &str, token: &str, body: &[u8], ts: &str) -> String {
    format!("{method}:{path}:{token}:{}:{ts}", body_digest(body))
}

/// base64(HMAC-SHA512(key = client secret as UTF-8, message)).
pub fn hmac_sha512_b64(secret: &str, message: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha512>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(message.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// The transaction `X-SIGNATURE` over the exact bytes that go on the wire.
pub fn transaction_signature(
    secret: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
    ts: &str,
) -> String {
    hmac_sha512_b64(secret, &string_to_sign(method, path, token, body, ts))
}

/// Constant-time comparison of two signatures as text.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_KEY: &str = include_str!("../../../../tests/fixtures/snap-doc-key.pem");

    #[test]
    fn b2b_signature_matches_published_vector() {
        let signer = RsaSigner::from_pem(DOC_KEY).expect("documentation key loads");
        let sig = signer.sign_b2b("G1234325-SNAP", "2023-07-31T07:10:00+07:00");
        assert_eq!(
            sig,
            "iv5YorKVVFOFS59l0HChDvPe+HeoE/jY5CfVgCg5i16nj5/DVnKg49ilkv8PyeU7y38apHhgO+cUrvkfUs5BhDD69yLn7xp8hzN9RcR0UDy5+nCrQ3GGCVSzZJvlEXN+TB0j4Q6pMsjrq4+YRoyDa4mTlsjJTU9aGjLRFBYgY4MyMQ5x11JyLnoFwbS8TJ5e/q4mUozrp49VyHe7OQSFnJNwvMSFrDyAIxoOK0IZQIlY29PaDIFcWoR+RJAY42H2FryjJcPpNfeercbkj9jsBLV3wmEKiNoN6lgFFLk5QicDnAAQzL45s92EYeCqDNuTTJOydaJbUqEo1d/ZPVNBtQ=="
        );
        let public = signer.public_key_der();
        assert!(verify_b2b(
            &public,
            "G1234325-SNAP",
            "2023-07-31T07:10:00+07:00",
            &sig
        ));
        assert!(!verify_b2b(
            &public,
            "G1234325-SNAP",
            "2023-07-31T07:10:01+07:00",
            &sig
        ));
        assert!(!verify_b2b(
            &public,
            "G1234325-SNAP",
            "2023-07-31T07:10:00+07:00",
            "%%%"
        ));
    }

    #[test]
    fn hmac_signature_matches_published_vector() {
        let sts = "POST:/v1.0/debit/payment-host-to-host:gp9HjjEj813Y9JGoqwOeOPWbnt4CupvIJbU1Mmu4a11MNDZ7Sg5u9a:56fa5f4999ad8014de49d7898c1d1d53472569db8999de3c1b752a0dd181e98c:2020-01-01T00:00:00+07:00";
        assert_eq!(
            hmac_sha512_b64("fdppqbF5wq7vVegyvsV1CROMv646nJ7A", sts),
            "FSlidRHe4ow9qppNifGVQNcdv67lBjgCiP0BHylh+IKXo4fs2rHaGsFNUY0N8t0rPlZs4iAHAOCDklnCccwuJw=="
        );
    }

    #[test]
    fn body_digest_helpers() {
        assert_eq!(
            body_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            body_digest(br#"{"grantType":"client_credentials"}"#),
            "2902d47762fbc481fac6e6ca7b0081289f620b5a427b4c37a32ff0d52fe1acce"
        );
        assert_eq!(
            string_to_sign("POST", "/p", "tok", b"", "T"),
            "POST:/p:tok:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855:T"
        );
    }

    #[test]
    fn timestamp_has_local_offset_and_seconds() {
        let z: jiff::Zoned = "2026-11-22T09:15:02.789[Asia/Jakarta]"
            .parse()
            .expect("zoned");
        assert_eq!(timestamp(&z), "2026-11-22T09:15:02+07:00");
    }

    #[test]
    fn public_key_pem_forms_are_accepted() {
        let signer = RsaSigner::from_pem(DOC_KEY).expect("key");
        let der = signer.public_key_der();
        assert_eq!(rsa_public_key_from_pem(DOC_KEY).expect("from private"), der);
        let pkcs1 = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            B64.encode(&der)
        );
        assert_eq!(rsa_public_key_from_pem(&pkcs1).expect("pkcs1"), der);
        assert!(rsa_public_key_from_pem("garbage").is_err());
        assert!(RsaSigner::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )
        .is_err());
    }
}
