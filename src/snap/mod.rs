//! BI SNAP client mechanics: signatures, headers, the token cache, wire types and the
//! classification of responses into what tapgate does next.
//!
//! - [`sign`]: the B2B (RSA) and transaction (HMAC-SHA512) signatures;
//! - [`codes`]: `responseCode` parsing and per-service classification (pure);
//! - [`wire`]: request and response bodies, read leniently;
//! - [`client`]: [`SnapClient`], signed calls over pooled HTTPS with the token cache.
//!
//! Which fields the aggregator wants in those bodies is not decided here but in
//! [`crate::aggregator`].

pub mod client;
pub use tapgate_core::snap::{codes, sign};
pub mod wire;

pub use client::{Answer, DeviceContext, RawOutcome, SnapClient, SnapError};
