//! BI SNAP as pure code: response codes and their classes ([`codes`]) and the signatures
//! ([`sign`]: the B2B token's RSA signature, the transactions' HMAC-SHA512). The HTTP client
//! and the wire types live in the daemon.

pub mod codes;
pub mod sign;
