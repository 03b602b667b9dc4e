//! Helpers shared by the real-stack tests.

pub mod pcscd;
